"""The connections to Redis: the pipelined event-loop connection (aio), the per-thread blocking
sockets (sync), and on a Redis Cluster the slot map and one connection per master.
Imports nothing of recsvc but the core.
"""
