"""The reliability suite behind `make chaos`: faults injected into a real server under load.

``load`` drives calls and counts outcomes, ``proxy`` is a flaky TCP proxy in front of Redis,
``scenarios`` holds one function per fault, ``__main__`` runs them and writes
docs/RELIABILITY.md. Imports recsvc, training (to start Redis) and bench.common.procs.
"""
