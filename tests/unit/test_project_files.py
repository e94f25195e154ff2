"""The habits of a project others can join: the license text matches what pyproject declares,
and the contributor files exist."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_license_text_matches_the_license_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License")
    assert "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_contributor_files_exist_and_precommit_runs_the_lint_checks() -> None:
    for name in ("CHANGELOG.md", "CONTRIBUTING.md", "SECURITY.md"):
        assert (ROOT / name).read_text().strip(), name
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    entries = " ".join(h["entry"] for repo in hooks["repos"] for h in repo["hooks"])
    for tool in ("ruff", "mypy", "lint-imports"):
        assert tool in entries
