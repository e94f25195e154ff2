"""A flaky TCP proxy: forwards to Redis, delaying some chunks and resetting some connections."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from dataclasses import dataclass, field


@dataclass
class FlakyProxy:
    upstream_port: int
    delay_probability: float = 0.05  # a chunk waits up to max_delay before it is forwarded
    max_delay: float = 0.08
    reset_probability: float = 0.002  # a chunk closes both sides of its connection instead
    seed: int = 3
    port: int = 0
    resets: int = 0
    delays: int = 0
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _thread: threading.Thread | None = None

    def start(self) -> FlakyProxy:
        ready = threading.Event()
        rng = random.Random(self.seed)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       other: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    roll = rng.random()
                    if roll < self.reset_probability:
                        self.resets += 1
                        writer.transport.abort()
                        other.transport.abort()
                        return
                    if roll < self.reset_probability + self.delay_probability:
                        self.delays += 1
                        await asyncio.sleep(rng.uniform(0, self.max_delay))
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                client_w.close()
                return
            await asyncio.gather(pipe(client_r, up_w, client_w), pipe(up_r, client_w, up_w))

        async def serve() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:
                with contextlib.suppress(asyncio.CancelledError):  # stop() cancels every task
                    await server.serve_forever()

        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(serve(),),
                                        daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        for task in asyncio.all_tasks(self._loop):
            self._loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout=5)
