"""Settings from RECSVC_* variables and the training TOML: clear errors, documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsvc.config import Settings
from recsvc.errors import DataError, RecsvcError
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
