"""Decisioning benches: what a decision and each rule kind cost, and the campaign path.
"""
