"""`--before REF`: Recommend of an earlier commit beside today's, in the same rounds.

The commit is checked out in a temporary git worktree and run from there with this checkout's
virtualenv (``PYTHONPATH`` puts its packages first): its own `recsvc train` publishes the same
bench data under a key prefix of its own, its own `recsvc serve` answers. So "within 10% of
before" compares the two codes on one machine, one Redis and one load generator.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.servers.plan import ROOT, Target

PREFIX = "before"  # + the commit: each earlier commit publishes under a prefix of its own


def known(ref: str) -> bool:
    """Whether this clone has ``ref`` (a shallow clone may not)."""
    return subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                          cwd=ROOT, capture_output=True).returncode == 0


@contextmanager
def checkout(ref: str) -> Iterator[tuple[Path, str]]:
    """A detached worktree of ``ref`` and its short commit id; removed afterwards."""
    commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="recsvc-before-") as tmp:
        tree = Path(tmp, "tree")
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            yield tree, commit
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                           capture_output=True)


def target(tree: Path, commit: str, url: str, data: Path, env: dict[str, str]) -> Target:
    """Train ``data`` with the tree's own code; the Target serving it."""
    own = dict(env, PYTHONPATH=str(tree), RECSVC_KEY_PREFIX=f"{PREFIX}_{commit}",
               RECSVC_REDIS_URL=url)
    own.pop("RECSVC_SERVER_MODEL", None)
    print(f"-- training with {commit} (before)", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "recsvc", "train", "--customers", str(data / "customers.csv"),
         "--offers", str(data / "offers.csv"), "--interactions", str(data / "interactions.csv"),
         "--force"], env=own, cwd=tree, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"training with {commit} failed: {result.stderr[-2000:]}")
    return Target(f"recommend_before_{commit}", ["recsvc", "serve"], own)
