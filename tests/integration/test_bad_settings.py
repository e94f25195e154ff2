"""Every bad setting is one clear line naming it and what is allowed, with a distinct exit code.

Each case runs the real CLI in a subprocess, as an operator would (exit codes: recsvc/cli/main.py).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.integration.helpers import cli

pytestmark = pytest.mark.integration

EXIT_USAGE, EXIT_CANNOT_LISTEN = 2, 4
NO_REDIS = "redis://127.0.0.1:1/0"


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(("args", "env", "names", "allowed"), [
    (["serve", "--port", "99999"], {}, "--port / RECSVC_PORT", "0 to 65535"),
    (["serve", "--workers", "0"], {}, "--workers / RECSVC_WORKERS", "1 to 256"),
    (["serve", "--workers", "-3"], {}, "--workers / RECSVC_WORKERS", "1 to 256"),
    (["serve"], {"RECSVC_REDIS_URL": "http://user:secret@x:6379"}, "RECSVC_REDIS_URL",
     "redis://, rediss://"),
    (["serve"], {"RECSVC_REDIS_TIMEOUT_MS": "-5"}, "RECSVC_REDIS_TIMEOUT_MS", "1 or more"),
    (["serve"], {"RECSVC_DEFAULT_DEADLINE_MS": "-1"}, "RECSVC_DEFAULT_DEADLINE_MS",
     "1 or more"),
    (["serve"], {"RECSVC_LOG_LEVEL": "loud"}, "RECSVC_LOG_LEVEL", "DEBUG, INFO"),
    (["--log-level", "chatty", "serve"], {}, "--log-level", "DEBUG, INFO"),
    (["serve"], {"RECSVC_PORT": "abc"}, "RECSVC_PORT", "not a valid int"),
    (["recommend", "C1", "--timeout", "-1"], {}, "--timeout", "seconds > 0"),
    (["health", "--timeout", "0"], {}, "--timeout", "seconds > 0"),
    (["datagen", "--out", "OUT", "--offers", "1", "--segments", "3"], {}, "--offers",
     "at least 10 per segment"),
    (["datagen", "--out", "OUT", "--segments", "0"], {}, "--segments", "1 to 1000"),
    (["datagen", "--out", "FILE"], {}, "--out", "is an existing file"),
    (["feedback", "consume", "--metrics-port", "99999"], {},
     "--metrics-port / RECSVC_FOLDIN_METRICS_PORT", "0 to 65535"),
    (["feedback", "consume"], {"RECSVC_FOLDIN_METRICS_PORT": "-1"},
     "--metrics-port / RECSVC_FOLDIN_METRICS_PORT", "0 to 65535"),
])
def test_a_bad_setting_is_one_line_naming_it_and_what_is_allowed_exit_2(
        tmp_path: Path, args: list[str], env: dict[str, str], names: str, allowed: str) -> None:
    (tmp_path / "FILE").write_text("precious\n")
    args = [str(tmp_path / a) if a in ("OUT", "FILE") else a for a in args]
    result = cli(args, env.pop("RECSVC_REDIS_URL", NO_REDIS), "bad", env)
    assert result.returncode == EXIT_USAGE, result.stderr
    line = one_line(result.stderr)
    assert names in line and allowed in line, line
    assert "secret" not in line  # a Redis URL is never echoed: it may hold a password
    assert (tmp_path / "FILE").read_text() == "precious\n"
    assert not (tmp_path / "OUT").exists()


def test_a_port_in_use_is_one_line_and_exit_4(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for extra in ([], ["--workers", "2"]):
            result = cli(["serve", "--host", "127.0.0.1", "--port", str(port), *extra],
                         NO_REDIS, "bad")
            assert result.returncode == EXIT_CANNOT_LISTEN, result.stderr
            line = one_line(result.stderr)
            assert f"--port / RECSVC_PORT: cannot listen on 127.0.0.1:{port}" in line
            assert "Address already in use" in line


def test_a_fold_in_metrics_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(["feedback", "consume", "--metrics-port", str(port)], NO_REDIS, "bad",
                     {"RECSVC_HOST": "127.0.0.1"})
    assert result.returncode == 1, result.stderr
    line = one_line(result.stderr)
    assert f"cannot serve metrics on 127.0.0.1:{port} (--metrics-port / " \
        "RECSVC_FOLDIN_METRICS_PORT)" in line and "Address already in use" in line
