"""The file to hand to ``spark-submit``: ``recsvc train`` as a Spark application.

    spark-submit --master spark://HOST:7077 --driver-memory 16g \\
        "$(python -c 'import training.spark_submit as m; print(m.__file__)')" \\
        train --customers ... --offers ... --interactions ... --config spark.toml

The driver (this process) reads, validates, evaluates and publishes exactly like ``recsvc train``;
the executors run MLlib's ALS. The config must say ``engine = "spark"`` and leave
``[spark] master`` empty so spark-submit's ``--master`` counts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from recsvc.core.config import Settings
from recsvc.core.errors import RecsvcError
from training.commands import add_train
from training.config import load_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spark-submit ... training/engines/submit.py")
    add_train(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        config = load_config(args.config)
    except RecsvcError as exc:
        print(f"recsvc train: {exc}", file=sys.stderr)
        return 1
    if config.engine != "spark":
        print(f"recsvc train: under spark-submit the config must set engine = \"spark\" "
              f"({args.config or 'no --config'} has engine = {config.engine!r})", file=sys.stderr)
        return 1
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from training import job

    return job.main(args, settings)


if __name__ == "__main__":
    sys.exit(main())
