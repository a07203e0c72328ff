"""pylvs.engines"""
