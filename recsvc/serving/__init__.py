"""The use cases of serving: a question becomes a ranked answer (recommender), the in-memory
model version (holder) and the watcher that keeps it current. Imports the core; reaches Redis
only through the Protocols of ``serving.ports``, which ``store`` implements: no grpc, no redis.
"""
