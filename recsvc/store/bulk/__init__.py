"""The campaign's bulk reads and writes (one connection per master, pipelined blocks).
"""
