"""The hot path's cluster connections on a real 3-master Redis Cluster (both models): each call
on its slot's master, a batch over every master in order, a call over several slots refused
before it is sent, MOVED (a stale map) and ASK (a slot migrating) followed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from recsvc.store.transport.cluster_blocking import ClusterThreadPipelines
from recsvc.store.transport.cluster_pipeline import ClusterPipelines
from recsvc.store.transport.redis_pipeline import ErrorReply
from recsvc.store.transport.slots import SLOTS, CrossSlotError, SlotMap
from training import localredis

pytestmark = pytest.mark.integration


@pytest.fixture
def nodes(redis_cluster: localredis.LocalCluster) -> Iterator[dict[int, redis.Redis]]:
    """A plain client per master, by port."""
    clients = {}
    for node in redis_cluster.nodes:
        client = redis.Redis(port=node.port, socket_timeout=5)
        if client.execute_command("ROLE")[0] == b"master":
            clients[node.port] = client
    yield clients
    for client in clients.values():
        client.close()


def owner(nodes: dict[int, redis.Redis], key: str) -> int:
    slot = key_slot(key.encode())
    for port, client in nodes.items():
        if any(a <= slot <= b for a, b in _ranges(client)):
            return port
    raise AssertionError(f"no master serves slot {slot}")


def _ranges(client: redis.Redis) -> list[tuple[int, int]]:
    me = client.execute_command("CLUSTER", "MYID")
    me = me.decode() if isinstance(me, bytes) else me
    out = []
    for entry in client.execute_command("CLUSTER", "SLOTS"):
        node_id = entry[2][2]
        node_id = node_id.decode() if isinstance(node_id, bytes) else node_id
        if node_id == me:
            out.append((int(entry[0]), int(entry[1])))
    return out


def fill(nodes: dict[int, redis.Redis], prefix: str, count: int = 64) -> list[str]:
    """``count`` hashes on tags 0..count-1 (spread over every master), written on their owner."""
    keys = [f"{prefix}:h:{{{i}}}" for i in range(count)]
    for key in keys:
        nodes[owner(nodes, key)].hset(key, mapping={"f": key, "g": "2"})
    assert len({owner(nodes, k) for k in keys}) == len(nodes) == 3
    return keys


def stale(pipelines: ClusterPipelines | ClusterThreadPipelines, port: int) -> None:
    """Make the known map say one master serves every slot (what a resharding leaves)."""
    assert pipelines.router.map is not None
    pipelines.router.map = SlotMap(tuple([("127.0.0.1", port)] * SLOTS),
                                   pipelines.router.map.nodes)


def test_aio_calls_go_to_their_masters_batches_come_back_in_order_and_moved_is_followed(
        redis_cluster: localredis.LocalCluster, nodes: dict[int, redis.Redis],
        prefix: str) -> None:
    keys = fill(nodes, prefix)

    async def scenario() -> None:
        pipelines = ClusterPipelines(redis_cluster.url, 0.0, 0.25)
        writes = pipelines.sharing()
        replies = await asyncio.gather(*(pipelines.execute("HGET", k, "f", timeout=2)
                                         for k in keys))
        assert replies == [k.encode() for k in keys]
        groups: list[list[tuple[bytes | str, ...]]] = [
            [("HGET", k, "f"), ("HGET", k, "g"), ("HGETALL", k)] for k in reversed(keys)]
        got = await pipelines.execute_groups(groups, timeout=2)
        assert [g[0] for g in got] == [k.encode() for k in reversed(keys)]
        assert all(g[1] == b"2" and len(g[2]) == 4 for g in got)
        with pytest.raises(CrossSlotError):
            await pipelines.execute_many([("HGET", keys[0], "f"), ("HGET", keys[1], "f")],
                                         timeout=2)
        # A stale map: every call to the other masters is MOVED, followed at once, and the
        # map read again (here without a pause).
        stale(pipelines, redis_cluster.nodes[0].port)
        replies = await asyncio.gather(*(pipelines.execute("HGET", k, "f", timeout=2)
                                         for k in keys))
        assert replies == [k.encode() for k in keys]
        stale(pipelines, redis_cluster.nodes[0].port)
        got = await pipelines.execute_groups(groups, timeout=2)
        assert [g[0] for g in got] == [k.encode() for k in reversed(keys)]
        await asyncio.sleep(0.2)
        assert pipelines.router.map is not None and len(pipelines.router.map.masters) == 3
        # execute_all: one command per slot, error replies in their place (the feedback
        # executor's shape: one script call per shard).
        mixed: list[tuple[bytes | str, ...]] = [("HGET", k, "f") for k in keys]
        mixed[5] = ("LLEN", keys[5])  # WRONGTYPE
        stale(pipelines, redis_cluster.nodes[0].port)
        got_all = await pipelines.execute_all(mixed, timeout=2)
        assert isinstance(got_all[5], ErrorReply) and "WRONGTYPE" in str(got_all[5])
        assert got_all[:5] + got_all[6:] == [k.encode() for i, k in enumerate(keys) if i != 5]
        # Writes after the answer reach the key's master (the shared map).
        for k in keys:
            writes.send_nowait("HSET", k, "w", "1", timeout=2)
        await writes.execute("HGET", keys[-1], "w", timeout=2)  # after the writes, in order
        await asyncio.sleep(0.05)
        assert writes.dropped == 0
        await pipelines.close()
        await writes.close()

    asyncio.run(scenario())
    assert all(nodes[owner(nodes, k)].hget(k, "w") == b"1" for k in keys)


def test_thread_calls_go_to_their_masters_batches_come_back_in_order_and_moved_is_followed(
        redis_cluster: localredis.LocalCluster, nodes: dict[int, redis.Redis],
        prefix: str) -> None:
    keys = fill(nodes, prefix)
    pipelines = ClusterThreadPipelines(redis_cluster.url, 0.0, 0.25)
    try:
        assert [pipelines.execute_many([("HGET", k, "f")], 2)[0] for k in keys] == \
            [k.encode() for k in keys]
        groups: list[list[tuple[bytes | str, ...]]] = [
            [("HGET", k, "f"), ("HGET", k, "g")] for k in reversed(keys)]
        assert [g[0] for g in pipelines.execute_groups(groups, 2)] == \
            [k.encode() for k in reversed(keys)]
        with pytest.raises(CrossSlotError):
            pipelines.execute_many([("HGET", keys[0], "f"), ("HGET", keys[1], "f")], 2)
        stale(pipelines, redis_cluster.nodes[0].port)
        assert [pipelines.execute_many([("HGET", k, "f")], 2)[0] for k in keys] == \
            [k.encode() for k in keys]
        stale(pipelines, redis_cluster.nodes[0].port)
        assert [g[1] for g in pipelines.execute_groups(groups, 2)] == [b"2"] * len(keys)
        # Writes after the answer: their replies are owed on each master's connection.
        for k in keys:
            pipelines.send_nowait(("HSET", k, "w", "1"), 2)
        assert [pipelines.execute_many([("HGET", k, "w")], 2)[0] for k in keys] == \
            [b"1"] * len(keys)
        assert pipelines.dropped == 0
    finally:
        pipelines.close()


@pytest.mark.parametrize("model", ["aio", "sync"])
def test_a_slot_migrating_answers_ask_and_the_call_follows_it(
        redis_cluster: localredis.LocalCluster, nodes: dict[int, redis.Redis], prefix: str,
        model: str) -> None:
    key = f"{prefix}:migrating"
    source_port = owner(nodes, key)
    target_port = next(p for p in nodes if p != source_port)
    source, target = nodes[source_port], nodes[target_port]
    slot = key_slot(key.encode())
    source.hset(key, "f", "moved")
    ids = {p: _text(c.execute_command("CLUSTER", "MYID")) for p, c in nodes.items()}
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source_port])
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target_port])
    try:
        source.execute_command("MIGRATE", "127.0.0.1", target_port, key, 0, 5000)
        with pytest.raises(redis.exceptions.AskError):  # what the source answers now
            source.hget(key, "f")
        if model == "aio":
            async def scenario() -> Any:
                pipelines = ClusterPipelines(redis_cluster.url, 0.0, 0.25)
                try:
                    return await pipelines.execute_many([("HGET", key, "f"), ("HLEN", key)],
                                                        timeout=2)
                finally:
                    await pipelines.close()
            replies = asyncio.run(scenario())
        else:
            threaded = ClusterThreadPipelines(redis_cluster.url, 0.0, 0.25)
            try:
                replies = threaded.execute_many([("HGET", key, "f"), ("HLEN", key)], 2)
            finally:
                threaded.close()
        assert replies == [b"moved", 1]
    finally:
        pipe = target.pipeline(transaction=False)
        pipe.execute_command("ASKING")
        pipe.execute_command("DEL", key)
        pipe.execute()
        for client in (source, target):
            client.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
