"""The fold-in consumer (``recsvc feedback consume``): reads the feedback streams with the
consumer group ``foldin``, folds events into customers' vectors with ``recsvc.feedback.foldin``
and writes them to the live hash. I/O: imports feedback, store and core; never grpc.
"""
