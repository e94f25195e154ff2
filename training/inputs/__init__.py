"""What a training run reads: the files (tables), what counts as a bad row or an invalid value
(data), the data profile and its checks between runs (profile), the logged feedback merged in
(events), and the customer attributes offer rules need (attributes). Imports the core, the store
and decisioning's rule checks; never serving, api or cli.
"""
