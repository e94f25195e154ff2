"""Feedback, the pure parts: validating events, their confidences, the exact one-customer ALS
fold-in and the record serving prefers (``record_for``). numpy and the core only: serving, the
store, the api and the fold-in consumer (``recsvc.foldin``) all import it.
"""
