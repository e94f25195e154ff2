"""h2load (Debian's nghttp2-client): find it, install it, run it pinned, read what it prints.

    python -m bench.servers.h2load --install [--local]

Installs with ``apt-get install nghttp2-client`` when root and apt work; otherwise (or with
``--local``) downloads the .deb and the libraries it needs that this system lacks with
``apt-get download`` (no root needed) and unpacks them with ``dpkg-deb -x`` into ``.tools/``
(ignored by git), with a wrapper ``.tools/bin/h2load`` that sets LD_LIBRARY_PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
LOCAL = TOOLS / "bin" / "h2load"
PACKAGE = "nghttp2-client"
GRPC_HEADERS = ["-H", "content-type: application/grpc", "-H", "te: trailers"]


def find() -> str | None:
    """h2load on PATH, else the one unpacked into .tools/ by ``install``."""
    found = shutil.which("h2load")
    if found:
        return found
    return str(LOCAL) if os.access(LOCAL, os.X_OK) else None


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC message: flag byte 0, 4-byte big-endian length, the bytes."""
    return b"\0" + len(message).to_bytes(4, "big") + message


# --- installing -----------------------------------------------------------------------------

def _installed_version(package: str) -> str | None:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}|${Version}", package],
                            capture_output=True, text=True, check=False)
    status, _, version = result.stdout.partition("|")
    return version if result.returncode == 0 and status.endswith(" installed") else None


def missing_dependencies(depends: str) -> list[str]:
    """The packages of a Depends field this system lacks (first of alternatives), an exact
    ``(= v)`` pin with another version installed counting as missing (as package=v)."""
    wanted = []
    for clause in depends.split(","):
        first = clause.split("|")[0].strip()
        match = re.fullmatch(r"([\w.+-]+)(?::\w+)?\s*(?:\((\S+)\s+([^)]+)\))?", first)
        if not match:
            raise ValueError(f"cannot read dependency {first!r} in {depends!r}")
        name, op, version = match.groups()
        have = _installed_version(name)
        if have is None:
            wanted.append(f"{name}={version}" if op == "=" else name)
        elif op == "=" and have != version:
            wanted.append(f"{name}={version}")
    return wanted


def _unpack(spec: str, into: Path, work: Path) -> Path:
    subprocess.run(["apt-get", "download", "-q", spec], cwd=work, check=True,
                   capture_output=True)
    name = spec.split("=")[0]
    deb = next(p for p in sorted(work.glob(f"{name}_*.deb")))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return deb


def install_local() -> Path:
    """nghttp2-client and its missing libraries unpacked into .tools/, without root."""
    root = TOOLS / "root"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        deb = _unpack(PACKAGE, root, work)
        depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        for spec in missing_dependencies(depends):
            print(f"-- unpacking {spec} (needed by h2load)", flush=True)
            _unpack(spec, root, work)
    libs = sorted({str(p.parent) for p in root.rglob("*.so*")})
    LOCAL.parent.mkdir(parents=True, exist_ok=True)
    path = ":".join(libs)
    LOCAL.write_text("#!/bin/sh\n# Written by python -m bench.servers.h2load --install\n"
                     f'LD_LIBRARY_PATH="{path}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" '
                     f'exec "{root}/usr/bin/h2load" "$@"\n')
    LOCAL.chmod(0o755)
    unresolved = _unresolved_libraries(root / "usr" / "bin" / "h2load", path)
    if unresolved:
        raise SystemExit(f"h2load unpacked into {root} but these libraries are missing: "
                         f"{', '.join(unresolved)}")
    return LOCAL


def _unresolved_libraries(binary: Path, library_path: str) -> list[str]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False,
                         env=dict(os.environ, LD_LIBRARY_PATH=library_path)).stdout
    return [line.split()[0] for line in out.splitlines() if "not found" in line]


def install(local: bool = False) -> str:
    """h2load's path, installing it first when it is missing."""
    found = None if local else find()
    if found:
        return found
    if not local and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"-- h2load missing: apt-get install {PACKAGE}", flush=True)
        done = subprocess.run(["apt-get", "install", "-y", "-qq", PACKAGE],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:  # stale lists: update once and retry
            subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
            done = subprocess.run(["apt-get", "install", "-y", "-qq", PACKAGE],
                                  capture_output=True, text=True, check=False)
        found = find()
        if found:
            return found
        print(f"-- apt-get install failed ({done.stderr.strip()[-300:]}); unpacking instead",
              flush=True)
    print(f"-- unpacking {PACKAGE} into {TOOLS.relative_to(ROOT)}/", flush=True)
    return str(install_local())


# --- running and reading --------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def milliseconds(text: str) -> float:
    """h2load's durations ('254us', '1.81ms', '2.01s') in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"not an h2load duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(out: str) -> dict[str, Any]:
    """requests/s, the request counts and the request-time statistics of h2load's summary."""
    def need(pattern: str) -> re.Match[str]:
        match = re.search(pattern, out)
        if not match:
            raise ValueError(f"h2load output lacks {pattern!r}:\n{out[-1500:]}")
        return match

    rate = need(r"finished in [\d.]+m?s, ([\d.]+) req/s")
    counts = need(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout")
    traffic = need(r"traffic: .*?, [\d.]+\w* \((\d+)\) data")
    times = need(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)")
    lo, hi, mean, sd = (milliseconds(t) for t in times.groups())
    total, done, ok, failed, errored, timeout = (int(x) for x in counts.groups())
    return {"requests_per_second": float(rate.group(1)), "requests": total, "done": done,
            "succeeded": ok, "failed": failed, "errored": errored, "timeout": timeout,
            "min_ms": round(lo, 3), "max_ms": round(hi, 3), "mean_ms": round(mean, 3),
            "sd_ms": round(sd, 3), "data_bytes": int(traffic.group(1))}


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1) of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, -(-q * len(sorted_values) // 1))  # ceil(q * n), at least 1
    return sorted_values[int(rank) - 1]


def log_latencies(text: str) -> list[float]:
    """Milliseconds of each successful request of an h2load --log-file (start µs, status,
    duration µs per line; status -1 for a failed stream)."""
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) < 3:
            raise ValueError(f"h2load log line {number}: expected 3 tab-separated columns, "
                             f"got {line!r}")
        if fields[1] == "200":
            values.append(int(fields[2]) / 1000)
    return sorted(values)


def run(binary: str, url: str, frame: Path, connections: int, streams: int, seconds: float,
        cpus: str, log: Path | None = None) -> dict[str, Any]:
    """One timed h2load run on ``cpus``: its summary plus its own CPU seconds (and the p50/p99
    of its per-request log when ``log`` is given)."""
    args = ["taskset", "-c", cpus, binary, "-D", f"{seconds:g}", "-c", str(connections),
            "-m", str(streams), "-t", "1", *GRPC_HEADERS, "-d", str(frame), url]
    if log is not None:
        args[4:4] = ["--log-file", str(log)]
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # the rusage of this child alone
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if process.returncode != 0:
        raise RuntimeError(f"h2load exited {process.returncode}: {' '.join(args)}\n"
                           f"{text[-1500:]}")
    result = parse(text)
    result["client_cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
    if log is not None:
        latencies = log_latencies(log.read_text())
        if latencies:
            result["p50_ms"] = round(percentile(latencies, 0.50), 3)
            result["p99_ms"] = round(percentile(latencies, 0.99), 3)
            result["logged"] = len(latencies)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers.h2load")
    parser.add_argument("--install", action="store_true", help="install h2load if missing")
    parser.add_argument("--local", action="store_true",
                        help="unpack into .tools/ even when root (no system change)")
    args = parser.parse_args()
    path = install(args.local) if args.install or args.local else find()
    if path is None:
        print("h2load missing: make h2load-bin", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
