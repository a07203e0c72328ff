"""The sans-IO IPVS core: no sockets, no threads, no clocks.

Callers pass time (`now`, seconds as float) and random sources in; the core returns decisions.
"""
