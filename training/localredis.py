"""A throwaway ``redis-server`` on a free port, for tests, ``make demo`` and ``make bench``.

Never touches the Redis on 6379: it starts its own process with no persistence and the
``noeviction`` policy a model store wants, and stops it afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

INSTALL_HINT = "redis-server not found: install it with `apt-get install redis-server`"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRedis:
    process: subprocess.Popen[bytes]
    port: int
    workdir: str
    persist: bool = False
    appendfsync: str = "always"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections stay open, nothing answers)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def restart(self) -> None:
        """Start again on the same port and folder after ``kill`` (with ``persist``, the
        append-only file brings the data back)."""
        self.process = _launch(self.port, self.workdir, self.persist, "0", self.appendfsync)
        _wait_ready(self.process, self.port)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start(port: int | None = None, maxmemory: str = "0", persist: bool = False,
          appendfsync: str = "always") -> LocalRedis:
    """A fresh redis-server; ``persist`` turns on an append-only file, fsynced ``appendfsync``
    ("always", or "everysec": what a process crash cannot lose, at a fraction of the cost)."""
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="recsvc-redis-")
    process = _launch(port, workdir, persist, maxmemory, appendfsync)
    _wait_ready(process, port)
    return LocalRedis(process, port, workdir, persist, appendfsync)


def _launch(port: int, workdir: str, persist: bool, maxmemory: str,
            appendfsync: str = "always") -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(INSTALL_HINT)
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes" if persist else "no", "--appendfsync", appendfsync,
         "--dir", workdir, "--maxmemory", maxmemory, "--maxmemory-policy", "noeviction",
         "--lazyfree-lazy-user-del", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ready(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")


def answers(url: str) -> bool:
    """True when a Redis at ``url`` answers PING within a second."""
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except (redis.RedisError, ValueError):
        return False


if __name__ == "__main__":  # `python -m training.localredis`: start one and print its URL
    server = start()
    print(server.url, os.getpid(), flush=True)
    try:
        signal.pause()
    finally:
        server.stop()
