"""pylvs: Linux Virtual Server (IPVS) rebuilt in Python."""

__version__ = "0.1.0"
