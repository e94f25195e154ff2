"""The serving reads: a customer's record and live state in one round trip, the version and
live-state loads of the watcher, on a single Redis or a cluster. Imports transport and control.
"""
