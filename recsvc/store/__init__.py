"""The Redis side, a subpackage per concern: ``transport`` (the connections: event-loop
pipeline, per-thread sockets, the cluster's slot map), ``reads`` (the serving reads and the
watcher's loads), ``feedback`` (event script, streams, fold-in writes), ``control`` (budgets,
live offers, experiments, the version registry), ``bulk`` (the campaign). Imports the core,
decisioning's pure specs and redis; never grpc, never serving or api.
"""
