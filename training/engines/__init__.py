"""Training engines other than the in-process implicit one (training/fit.py dispatches here).

spark: per-segment ALS on Spark MLlib, same matrix in, same ``Factors`` out. May import
training.fit / training.config, numpy, pyarrow and pyspark; never recsvc.store, redis or serving.
"""
