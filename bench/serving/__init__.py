"""Serving benches: the aio echo yardstick, the Python load generator, the HTTP face, where a call's
CPU goes (py-spy), the GIL hand-off, and RecordFeedback / fold-in rates.
"""
