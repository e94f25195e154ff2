"""The benchmark suite behind `make bench` (see docs/PERFORMANCE.md)."""
