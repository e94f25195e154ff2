"""Training configuration: defaults here, overridden by a TOML ``--config`` file.

Every key, with its default (see also docs/DESIGN.md)::

    seed = 42
    algorithm = "als"              # "als" or "bpr"
    engine = "implicit"            # "implicit" (in process) or "spark" (MLlib ALS; als only)
    half_life_days = 0.0           # recency decay of event confidence; 0 = off
    duplicates = "max"             # repeated (customer, offer, event) rows: "max" or "sum"
    weight_cap = 100.0             # |weight| above this (or non-finite) is a bad row
    negative_impressions = "auto"  # impression-only pairs as "not liked": "auto" (validation
    negative_impression_weight = -1.0  # decides), true or false
    [events]                       # default confidence per event; the `weight` column overrides
    impression = 0.0
    click = 1.0
    accept = 4.0
    redeem = 6.0
    decline = -2.0
    [tuning]
    factors = [16, 48]
    regularization = [0.05]
    alpha = [2.0, 10.0]            # confidence scaling
    iterations = [15]              # ALS sweeps
    bpr_epochs = [100]             # BPR epochs
    learning_rate = 0.05           # BPR only
    blend_weights = [0.0, 0.25, 0.5, 0.75, 1.0]  # 0 = popularity, 1 = the model alone
    [evaluation]
    holdout = 1                    # latest accepts held out per customer
    min_history = 3                # distinct accepted/redeemed offers needed to be held out
    min_evaluated = 20             # fewer evaluable customers: the segment serves popularity
    max_customers = 20000          # evaluation sample per segment
    max_tuning_customers = 100000  # validation fits use a customer sample of this size
    [exposure]                     # learning from logged exposure (training/exposure.py)
    model = "auto"                 # "auto": validation chooses between implicit's models and
                                   # the exposure model; "implicit" or "exposure" alone
    factors = [4, 8]               # exposure model: factors, ridge, offer-bias ridge, sweeps
    regularization = [10.0, 30.0]
    bias_regularization = 20.0
    iterations = 8
    select_on = "debiased"         # tuning maximises de-biased ("debiased") or naive ndcg@10
    max_weight = 20.0              # inverse-propensity weights are clipped here
    competitors = true             # also measure implicit ALS with implicit's default settings
    competitor_customers = 20000   # ... fit on the test customers and a sample of this many
    calibration_share = 0.1        # shown cells held out of validation fits: p_accept's map
    [checks]                       # the data, before anything is fit (docs/DESIGN.md, 4)
    max_bad_row_share = 0.01       # a file with a larger share of bad rows fails the run
    max_interaction_drop = 0.5     # refuse if interactions fall by more than this share ...
    max_event_mix_shift = 0.2      # ... or an event's share of them moves by more than this ...
    min_segment_interactions = 50  # ... or a personalized segment has fewer (vs the active
    min_interactions = 100         # version); a first deploy needs this many interactions
    [decisioning]                  # objective, levers, contact policy, suppression: see
    objective = "relevance"        # recsvc/decisioning/policy.py for every key (kept in the
                                   # version's meta; serving applies it)
    [publish]
    quality_tolerance = 0.1        # refuse if the lift over popularity (served ndcg@10 / baseline
                                   # ndcg@10, each on its own data) drops by more (unless --force)
    batch_size = 1000              # customers per HSET command
    lock_ttl_seconds = 60.0
    [spark]                        # engine = "spark" only (training/engines/spark.py)
    master = ""                    # "" = spark-submit's --master, else local[*]; or a URL
    blocks = 0                     # ALS user and item blocks; 0 = Spark's default parallelism
    conf = {}                      # more Spark settings, e.g. {"spark.driver.memory" = "8g"}
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from recsvc.core.errors import DataError
from recsvc.decisioning.policy import Policy

EVENTS = ("impression", "click", "accept", "redeem", "decline")


@dataclass(frozen=True)
class Tuning:
    factors: tuple[int, ...] = (16, 48)
    regularization: tuple[float, ...] = (0.05,)
    alpha: tuple[float, ...] = (2.0, 10.0)
    iterations: tuple[int, ...] = (15,)  # ALS sweeps
    bpr_epochs: tuple[int, ...] = (100,)  # BPR epochs (used instead of iterations)
    learning_rate: float = 0.05
    blend_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Evaluation:
    holdout: int = 1
    min_history: int = 3
    min_evaluated: int = 20
    max_customers: int = 20_000
    max_tuning_customers: int = 100_000  # validation fits use a sample of this many customers


@dataclass(frozen=True)
class Exposure:
    model: str = "auto"
    factors: tuple[int, ...] = (4, 8)
    regularization: tuple[float, ...] = (10.0, 30.0)
    bias_regularization: float = 20.0
    iterations: int = 8
    select_on: str = "debiased"
    max_weight: float = 20.0
    competitors: bool = True
    competitor_customers: int = 20_000
    calibration_share: float = 0.1

    def problems(self) -> list[str]:
        found = []
        if self.model not in ("auto", "implicit", "exposure"):
            found.append(f"[exposure] model must be auto, implicit or exposure, not {self.model!r}")
        if self.select_on not in ("debiased", "naive"):
            found.append(f"[exposure] select_on must be debiased or naive, not {self.select_on!r}")
        if not self.factors or min(self.factors) < 1 or not self.regularization \
                or min(self.regularization) <= 0 or self.bias_regularization <= 0:
            found.append("[exposure] needs factors >= 1 and regularization > 0")
        if self.iterations < 1 or self.max_weight < 1 or self.competitor_customers < 1:
            found.append("[exposure] needs iterations >= 1, max_weight >= 1, "
                         "competitor_customers >= 1")
        if not 0 <= self.calibration_share < 0.5:
            found.append("[exposure] calibration_share must lie in [0, 0.5)")
        return found


@dataclass(frozen=True)
class Checks:
    """Data checks: bad rows, and the new data's profile against the active version's."""

    max_bad_row_share: float = 0.01
    max_interaction_drop: float = 0.5
    max_event_mix_shift: float = 0.2
    min_segment_interactions: int = 50
    min_interactions: int = 100


@dataclass(frozen=True)
class Publish:
    quality_tolerance: float = 0.1
    batch_size: int = 1000
    lock_ttl_seconds: float = 60.0


@dataclass(frozen=True)
class Spark:
    master: str = ""
    blocks: int = 0
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 42
    algorithm: str = "als"
    engine: str = "implicit"
    half_life_days: float = 0.0
    duplicates: str = "max"
    weight_cap: float = 100.0
    negative_impressions: str = "auto"
    negative_impression_weight: float = -1.0
    events: dict[str, float] = field(default_factory=lambda: {
        "impression": 0.0, "click": 1.0, "accept": 4.0, "redeem": 6.0, "decline": -2.0})
    tuning: Tuning = field(default_factory=Tuning)
    evaluation: Evaluation = field(default_factory=Evaluation)
    checks: Checks = field(default_factory=Checks)
    publish: Publish = field(default_factory=Publish)
    decisioning: dict[str, Any] = field(default_factory=dict)  # validated by Policy.from_dict
    spark: Spark = field(default_factory=Spark)
    exposure: Exposure = field(default_factory=Exposure)

    def __post_init__(self) -> None:
        problems = self.exposure.problems()
        try:
            Policy.from_dict(self.decisioning)
        except ValueError as exc:
            problems.append(str(exc))
        if self.algorithm not in ("als", "bpr"):
            problems.append(f"algorithm must be 'als' or 'bpr', not {self.algorithm!r}")
        if self.engine not in ("implicit", "spark"):
            problems.append(f"engine must be 'implicit' or 'spark', not {self.engine!r}")
        elif self.engine == "spark" and self.algorithm != "als":
            problems.append("engine = \"spark\" trains algorithm = \"als\" only (MLlib has no BPR)")
        if self.spark.blocks < 0:
            problems.append("[spark] blocks must be >= 0")
        if self.duplicates not in ("max", "sum"):
            problems.append(f"duplicates must be 'max' or 'sum', not {self.duplicates!r}")
        if self.negative_impressions not in ("auto", "true", "false"):
            problems.append("negative_impressions must be \"auto\", true or false")
        if self.half_life_days < 0:
            problems.append("half_life_days must be >= 0")
        if not self.weight_cap > 0:
            problems.append("weight_cap must be > 0")
        unknown = set(self.events) - set(EVENTS)
        if unknown:
            problems.append(f"[events]: unknown event(s) {sorted(unknown)}; known: {EVENTS}")
        for name, weight in self.events.items():
            if abs(weight) > self.weight_cap:
                problems.append(f"[events] {name} = {weight} is beyond weight_cap")
        if not self.tuning.factors or min(self.tuning.factors) < 1:
            problems.append("[tuning] factors must list positive integers")
        if any(not 0 <= w <= 1 for w in self.tuning.blend_weights):
            problems.append("[tuning] blend_weights must lie in [0, 1]")
        if self.evaluation.holdout < 1 or self.evaluation.min_history <= self.evaluation.holdout:
            problems.append("[evaluation] needs holdout >= 1 and min_history > holdout")
        checks = self.checks
        for name in ("max_bad_row_share", "max_interaction_drop", "max_event_mix_shift"):
            if not 0 <= getattr(checks, name) <= 1:
                problems.append(f"[checks] {name} must lie in [0, 1]")
        if checks.min_segment_interactions < 0 or checks.min_interactions < 0:
            problems.append("[checks] minimums must be >= 0")
        if self.publish.quality_tolerance < 0:
            problems.append("[publish] quality_tolerance must be >= 0")
        if problems:
            raise DataError("bad training config: " + "; ".join(problems))

    @property
    def positive_cells_only(self) -> bool:
        """BPR reads every stored cell as a positive, so it is given positive cells only."""
        return self.algorithm == "bpr"

    def event_weight(self, event: str) -> float:
        return float(self.events.get(event, 0.0))

    def as_dict(self) -> dict[str, Any]:
        def plain(obj: Any) -> Any:
            if hasattr(obj, "__dataclass_fields__"):
                return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}
            if isinstance(obj, tuple):
                return list(obj)
            return obj
        return dict(plain(self))


def load_config(path: str | None, seed: int | None = None) -> TrainConfig:
    config = TrainConfig()
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise DataError(f"cannot read config {path}: {exc}") from exc
        config = _apply(config, raw, path)
    return replace(config, seed=seed) if seed is not None else config


def _apply(config: TrainConfig, raw: dict[str, Any], path: str) -> TrainConfig:
    sections = {"tuning": Tuning, "evaluation": Evaluation, "checks": Checks,
                "publish": Publish, "spark": Spark, "exposure": Exposure}
    top: dict[str, Any] = {}
    for key, value in raw.items():
        if key in sections:
            current = getattr(config, key)
            known = {f.name for f in fields(current)}
            bad = set(value) - known
            if bad:
                raise DataError(f"{path}: [{key}] has unknown key(s) {sorted(bad)}")
            converted = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            top[key] = replace(current, **converted)
        elif key == "events":
            top[key] = {**config.events, **{k: float(v) for k, v in value.items()}}
        elif key == "decisioning":
            top[key] = dict(value)
        elif key == "negative_impressions":
            top[key] = str(value).lower()
        elif key in {f.name for f in fields(config)}:
            top[key] = value
        else:
            raise DataError(f"{path}: unknown key {key!r}")
    try:
        return replace(config, **top)
    except TypeError as exc:
        raise DataError(f"{path}: {exc}") from exc
