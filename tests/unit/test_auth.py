"""Token files: hashed tokens, scopes, line-numbered errors; the check's two refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsvc.api.auth import Authenticator, hash_token, new_token_line, parse_tokens
from recsvc.cli.main import main
from recsvc.core.errors import AuthenticationError, PermissionDeniedError, RecsvcError


def test_a_new_token_line_admits_exactly_that_token(tmp_path: Path) -> None:
    token, line = new_token_line(["feedback", "recommend"], "crm")
    path = tmp_path / "tokens"
    path.write_text(line + "\n")
    auth = Authenticator(str(path))
    assert auth.check(f"Bearer {token}", "RecordFeedback").name == "crm"
    assert auth.check(f"Bearer {token}", "Recommend").scopes == {"feedback", "recommend"}
    with pytest.raises(PermissionDeniedError, match="'admin' scope"):
        auth.check(f"Bearer {token}", "SomeAdminMethod")  # not in the table: admin only
    with pytest.raises(AuthenticationError, match="invalid token"):
        auth.check(f"Bearer {token}x", "Recommend")
    with pytest.raises(AuthenticationError, match="missing bearer token"):
        auth.check(token, "Recommend")
    assert token not in path.read_text()


def test_malformed_lines_are_named_by_file_and_line() -> None:
    good = hash_token("t")
    with pytest.raises(RecsvcError, match=r"tokens, line 3: unknown scope"):
        parse_tokens(f"# comment\n{good} recommend\n{good} recommend,delete\n", "tokens")
    with pytest.raises(RecsvcError, match=r"line 1: the first field must be a sha256"):
        parse_tokens("plain-token recommend\n", "tokens")
    with pytest.raises(RecsvcError, match=r"line 1: expected"):
        parse_tokens(f"{good}\n", "tokens")
    with pytest.raises(RecsvcError, match="scopes: choose from"):
        new_token_line(["root"])


def test_recsvc_token_prints_a_token_and_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--scopes", "admin", "--name", "ops"]) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[0].rsplit(" ", 1)[1]
    digest, scopes, name = out[1].split(": ", 1)[1].split()
    assert digest == hash_token(token) and scopes == "admin" and name == "ops"
