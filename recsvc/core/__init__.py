"""The pure core: Redis key names and codecs, settings, the error tree, typed model metadata,
one model version in memory, and ranking. numpy and the standard library only: no I/O, no grpc,
no redis. Every other room of recsvc (and the training job) may import it; it imports none.
"""
