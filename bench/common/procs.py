"""Process helpers for benchmarks: start servers, wait for them, read their CPU and memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

TICKS = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the workers of `recsvc serve --workers N`)."""
    found = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in children:
        found.extend(tree(int(child)))
    return found


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of every thread of ``pid``'s tree so far: a
    thread that blocks (a socket read, a lock, waiting for the GIL) switches voluntarily."""
    voluntary = involuntary = 0
    for p in tree(pid):
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                lines = (task / "status").read_text().splitlines()
            except OSError:
                continue  # a thread that ended: its switches are gone with it
            for line in lines:
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
    return voluntary, involuntary


def rss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


@contextmanager
def server(args: list[str], env: dict[str, str], port: int, ready_timeout: float = 60,
           cpus: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m *args`` until it answers on ``port``; with ``cpus`` (e.g. "0") the process
    and every thread it ever starts run on those CPUs only (``taskset`` before exec)."""
    pin = ["taskset", "-c", cpus] if cpus is not None else []
    process = subprocess.Popen([*pin, sys.executable, "-m", *args], env=env)
    try:
        deadline = time.monotonic() + ready_timeout
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            ready = grpc.channel_ready_future(channel)
            while True:  # a server that dies at start fails now, not after the timeout
                try:
                    ready.result(timeout=0.5)
                    break
                except grpc.FutureTimeoutError:
                    if process.poll() is not None:
                        raise RuntimeError(f"{' '.join(args)} exited {process.returncode} "
                                           "before answering") from None
                    if time.monotonic() > deadline:
                        raise
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpus_allowed(pid: int) -> set[str]:
    """The distinct CPU lists every thread of ``pid`` and its descendants may run on."""
    found = set()
    for p in tree(pid):
        for status in Path(f"/proc/{p}/task").glob("*/status"):
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("Cpus_allowed_list:"):
                        found.add(line.split(":", 1)[1].strip())
            except OSError:
                continue
    return found


def run_json(args: list[str], env: dict[str, str]) -> dict[str, object]:
    import json

    result = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr[-2000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))
