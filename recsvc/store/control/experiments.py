"""The experiment record in Redis: start, read, stop and promote (``recsvc experiments``).

``{p}:experiments`` is one hash (``recsvc.experiments.challenger.Experiment.fields``). Starting
and promoting are Lua scripts, so two operators cannot start two experiments, and a promotion
moves the active pointer to the challenger and ends the experiment in one step: the watchers'
poll (a MULTI) sees both or neither, so no replica ever serves from a mixed lineup.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import redis

from recsvc.core import schema
from recsvc.core.errors import RecsvcError
from recsvc.experiments.challenger import SHADOW, SPLIT, Experiment
from recsvc.store.control.live import text_of
from recsvc.store.control.registry import Registry


class ExperimentError(RecsvcError):
    """A refused experiment command: the message is the one line the operator reads."""


# KEYS: experiments, active. ARGV: challenger, then the record's field/value pairs.
# Returns {1} started, {0, running challenger} one runs already, {-1} no active version,
# {-2} the challenger is the active version.
_START = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('HGET', KEYS[1], 'challenger') or ''}
end
local active = redis.call('GET', KEYS[2])
if not active then return {-1} end
if active == ARGV[1] then return {-2} end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return {1}
"""

# KEYS: experiments, active, previous, versions. ARGV: the challenger checked by the caller.
# Returns {1, old active} promoted, {0} no experiment, {-1} another challenger runs now,
# {-2} the challenger's manifest is no longer complete.
_PROMOTE = """
local challenger = redis.call('HGET', KEYS[1], 'challenger')
if not challenger then return {0} end
if challenger ~= ARGV[1] then return {-1} end
local manifest = redis.call('HGET', KEYS[4], challenger)
if not manifest or cjson.decode(manifest)['state'] ~= 'complete' then return {-2} end
local active = redis.call('GET', KEYS[2]) or ''
redis.call('SET', KEYS[2], challenger)
if active ~= '' then redis.call('SET', KEYS[3], active) end
redis.call('DEL', KEYS[1])
return {1, active}
"""


class Experiments:
    def __init__(self, client: redis.Redis, keys: schema.Keys) -> None:
        self.client = client
        self.keys = keys
        self.registry = Registry(client, keys)
        self._start = client.register_script(_START)
        self._promote = client.register_script(_PROMOTE)

    def status(self) -> Experiment | None:
        raw: dict[Any, Any] = self.client.hgetall(self.keys.experiments)
        try:
            return Experiment.from_fields({text_of(k): text_of(v) for k, v in raw.items()})
        except ValueError as exc:
            raise ExperimentError(f"the experiment record is malformed: {exc}") from None

    def start(self, challenger: str, share: float, shadow: bool, salt: str = "",
              now: float | None = None) -> Experiment:
        """Start serving (or shadowing) ``challenger`` for ``share`` of customers, once the
        version passes the same check as ``models activate``."""
        try:
            experiment = Experiment(challenger, SHADOW if shadow else SPLIT, share,
                                    salt or f"exp-{secrets.token_hex(4)}",
                                    time.time() if now is None else now)
        except ValueError as exc:
            raise ExperimentError(str(exc)) from None
        if self.registry.manifest(challenger) is None:
            raise ExperimentError(f"challenger: unknown model version {challenger!r} "
                                  "(see `recsvc models list`)")
        try:
            self.registry.check(challenger)
        except RecsvcError as exc:
            raise ExperimentError(f"challenger: {exc}") from None
        args = [challenger, *(x for pair in experiment.fields().items() for x in pair)]
        status, *rest = self._start(keys=[self.keys.experiments, self.keys.active], args=args)
        if status == 0:
            raise ExperimentError(f"an experiment is already running (challenger "
                                  f"{text_of(rest[0])}): stop or promote it first")
        if status == -1:
            raise ExperimentError("no active version: publish one with `recsvc train` first")
        if status == -2:
            raise ExperimentError(f"challenger: {challenger} is already the active version")
        return experiment

    def stop(self) -> Experiment:
        """End the running experiment; the champion answers everyone again."""
        experiment = self.status()
        if experiment is None or not self.client.delete(self.keys.experiments):
            raise ExperimentError("no experiment is running")
        return experiment

    def promote(self) -> tuple[Experiment, str]:
        """Make the challenger the active version and end the experiment (one script); the
        old active version becomes the previous one (``models rollback`` returns to it)."""
        experiment = self.status()
        if experiment is None:
            raise ExperimentError("no experiment is running: nothing to promote")
        try:
            self.registry.check(experiment.challenger)
        except RecsvcError as exc:
            raise ExperimentError(f"not promoting: {exc}") from None
        status, *rest = self._promote(
            keys=[self.keys.experiments, self.keys.active, self.keys.previous,
                  self.keys.versions], args=[experiment.challenger])
        if status == 0:
            raise ExperimentError("no experiment is running: nothing to promote")
        if status == -1:
            raise ExperimentError("the experiment changed while promoting: run status again")
        if status == -2:
            raise ExperimentError(f"not promoting: version {experiment.challenger} is no "
                                  "longer a complete published version")
        return experiment, text_of(rest[0])
