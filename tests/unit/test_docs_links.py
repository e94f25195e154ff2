"""Every link of the documentation resolves in a clone: nothing points outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
OUTSIDE = re.compile(r"\.\./shared|/work/|\.\./\.\./")


def markdown_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True,
                            text=True, check=False).stdout.split()
    files = [ROOT / name for name in listed] or list(ROOT.glob("*.md")) + list(
        ROOT.glob("docs/*.md"))
    return [f for f in files if f.exists()]


def test_relative_links_resolve_inside_the_repository() -> None:
    broken = []
    for path in markdown_files():
        for target in LINK.findall(path.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            resolved = (path.parent / target).resolve()
            if not resolved.exists() or ROOT not in (resolved, *resolved.parents):
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_no_document_refers_to_files_outside_the_repository() -> None:
    offending = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                 for path in markdown_files()
                 for n, line in enumerate(path.read_text().splitlines(), start=1)
                 if OUTSIDE.search(line)]
    assert not offending, offending
