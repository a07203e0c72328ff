"""pylvs.daemon"""
