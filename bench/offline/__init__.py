"""Offline benches: the exposure world, the capacity points (Redis, cluster, fits), the report
over a large decision log, and the version check's cost.
"""
