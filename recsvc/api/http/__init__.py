"""The HTTP/JSON face of the same service: Connect-style unary POSTs transcoded from the proto
with ``json_format``, health, the OpenAPI document and the agent panel's static files. Part of
the api room: it may import what api imports (serving, store, core, ops, recsvc.v1) and aiohttp.
"""
