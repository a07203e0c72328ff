"""pylvs.lab"""
