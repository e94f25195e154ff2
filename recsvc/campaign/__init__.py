"""`recsvc campaign`: every customer of a file decided at once, budgets allocated by value.

Imports serving's decision core, decisioning's pure batch front and allocation, and the store's
bulk reads and writes; pyarrow (the `report` extra) only in ``inputs`` and ``output``, lazily.
"""
