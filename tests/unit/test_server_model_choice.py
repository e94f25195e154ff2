"""RECSVC_SERVER_MODEL=auto: sync on one CPU, aio when the process may spread over several."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from recsvc.api.runtime import chosen_model


def _auto_under(cpus: str) -> str:
    out = subprocess.run(["taskset", "-c", cpus, sys.executable, "-c",
                          "from recsvc.api.runtime import chosen_model; "
                          "print(chosen_model('auto'))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_auto_is_sync_on_one_cpu() -> None:
    assert _auto_under("0") == "sync"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_auto_is_aio_when_the_threads_may_spread() -> None:
    assert _auto_under("0,1") == "aio"


def test_an_explicit_model_is_kept() -> None:
    assert chosen_model("aio") == "aio" and chosen_model("sync") == "sync"
