"""The training config's engine choice and [spark] section, and the README's Spark config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recsvc.core.errors import DataError
from training.config import TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_spark_config_loads_with_every_key_known(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```toml\n# train-spark.toml\n(.*?)```", readme, flags=re.S)
    assert block is not None
    path = tmp_path / "train-spark.toml"
    path.write_text(block.group(1))
    config = load_config(str(path))
    assert config.engine == "spark"
    assert config.spark.conf == {"spark.executor.memory": "8g"}


@pytest.mark.parametrize(("changes", "named"), [
    ({"engine": "dask"}, "engine must be"),
    ({"engine": "spark", "algorithm": "bpr"}, "MLlib has no BPR"),
])
def test_a_bad_engine_choice_is_named(changes: dict[str, str], named: str) -> None:
    with pytest.raises(DataError, match=named):
        TrainConfig(**changes)  # type: ignore[arg-type]
