"""The edge that speaks gRPC: the servicer (proto <-> domain only), the guard (errors ->
statuses, concurrency cap) and the server wiring (health, reflection, workers). The only room
besides ``cli`` that imports grpc or the generated ``recsvc.v1``; may import every lower room.
"""
