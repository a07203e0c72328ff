"""pylvs.cli"""
