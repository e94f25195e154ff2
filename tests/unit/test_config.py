"""Settings from RECSVC_* variables and the training TOML: clear errors, documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsvc.core.config import Settings, ignored_variables, problems
from recsvc.core.errors import DataError, RecsvcError
from training.config import load_config


def test_settings_read_recsvc_variables_and_flags_win() -> None:
    env = {"RECSVC_PORT": "6000", "RECSVC_REFLECTION": "off", "RECSVC_REDIS_URL": "redis://x/1"}
    settings = Settings.from_env(env, port=7000)
    assert settings.port == 7000 and settings.reflection is False
    assert settings.redis_url == "redis://x/1"
    assert Settings.from_env({}).port == 50051


def test_a_malformed_variable_names_itself() -> None:
    with pytest.raises(RecsvcError, match="RECSVC_PORT='abc' is not a valid int"):
        Settings.from_env({"RECSVC_PORT": "abc"})


def test_variables_that_are_not_settings_are_named_retired_ones_with_what_replaced_them() -> None:
    env = {"RECSVC_PORT": "1", "RECSVC_THREADS": "8", "RECSVC_REDIS_ULR": "x", "_RECSVC_CPU": "0"}
    messages = ignored_variables(env)
    assert len(messages) == 2
    assert messages[0].startswith("RECSVC_REDIS_ULR is ignored: not a recsvc setting")
    assert messages[1].startswith("RECSVC_THREADS is ignored") and "RECSVC_WORKERS" in messages[1]


def test_toml_overrides_defaults_and_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('algorithm = "bpr"\nhalf_life_days = 30\n[events]\nclick = 2\n'
                    "[tuning]\nfactors = [8, 12]\n")
    config = load_config(str(path))
    assert config.algorithm == "bpr" and config.half_life_days == 30
    assert config.events["click"] == 2.0 and config.events["accept"] == 4.0
    assert config.tuning.factors == (8, 12)
    path.write_text("[tuning]\nfactorz = [8]\n")
    with pytest.raises(DataError, match=r"\[tuning\] has unknown key"):
        load_config(str(path))
    path.write_text('algorithm = "svd"\n')
    with pytest.raises(DataError, match="algorithm must be 'als' or 'bpr'"):
        load_config(str(path))


def test_every_bad_value_is_named_with_what_is_allowed_and_defaults_pass() -> None:
    assert problems(Settings()) == []
    lines = problems(Settings(port=99999, workers=0, redis_url="http://u:pw@h", log_level="x",
                              grace_seconds=-1.0, batch_chunk=0))
    assert lines == [
        "--redis-url / RECSVC_REDIS_URL: 'http://...' is not allowed (allowed: a URL starting "
        "redis://, rediss:// (TLS) or unix:// (e.g. redis://localhost:6379/0))",
        "--port / RECSVC_PORT: 99999 is not allowed (allowed: 0 to 65535)",
        "--workers / RECSVC_WORKERS: 0 is not allowed (allowed: 1 to 256)",
        "RECSVC_GRACE_SECONDS: -1.0 is not allowed (allowed: 0 or more)",
        "RECSVC_BATCH_CHUNK: 0 is not allowed (allowed: 1 or more)",
        "--log-level / RECSVC_LOG_LEVEL: 'x' is not allowed (allowed: one of DEBUG, INFO, "
        "WARNING, ERROR, CRITICAL)",
    ]
    assert problems(Settings(redis_url="unix:///run/redis.sock", port=0, log_level="debug")) == []
    assert problems(Settings(port=0, workers=2)) == [
        "--port / RECSVC_PORT: 0 (any free port) is not allowed with --workers / RECSVC_WORKERS "
        "2 (allowed: 1 to 65535, one port the workers share)"]
