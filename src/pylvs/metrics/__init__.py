"""Prometheus metrics: node_exporter's ipvs names and labels, plus pylvs_* figures (see docs/observability.md)."""
