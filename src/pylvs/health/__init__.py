"""pylvs.health"""
