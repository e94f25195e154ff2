"""The Redis side: the pipelined connection of the hot path, reading published versions and
customer records, the version registry (pointer flip, lock). Imports the core and redis; never
grpc, never serving or api.
"""
