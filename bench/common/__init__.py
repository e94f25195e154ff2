"""What the benches share: process start/CPU accounting and the main tables of PERFORMANCE.md.
"""
