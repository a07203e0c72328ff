"""The dashboard: one page served by pylvsd --web (see docs/observability.md)."""
