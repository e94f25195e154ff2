"""Experiments and the retention scorecard: arm assignment (salted hash, pure), the statistics of
uplift and off-policy evaluation (pure, known-answer tested), and later the decision log, the
report and the simulator. The pure modules import only the core; nothing here imports grpc.
"""
