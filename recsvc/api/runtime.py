"""What both server models start with: the loop thread the grpc.aio stack runs on, and the
control group the settings describe."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from grpc_health.v1 import health_pb2

from recsvc.api.handlers import SERVICE_NAME
from recsvc.core.config import Settings
from recsvc.core.errors import SettingError
from recsvc.experiments.holdout import Holdout


def holdout_of(settings: Settings) -> Holdout:
    """The control group the settings describe (validated at start: one clear line)."""
    try:
        return Holdout.parse(settings.holdout_share, settings.holdout_segments,
                             settings.holdout_salt, settings.holdout_baseline)
    except ValueError as exc:
        raise SettingError(f"RECSVC_HOLDOUT_*: {exc}") from exc


class LoopThread:
    """An event loop running in a daemon thread; blocking code submits coroutines to it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Any, timeout: float | None = None) -> Any:
        """Run ``coroutine`` on the loop and wait for its result from this thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


def grpc_options(settings: Settings, reuse_port: bool) -> list[tuple[str, int]]:
    """The channel options of every recsvc server, either model."""
    return [("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 1 if reuse_port else 0)]


def chosen_model(setting: str) -> str:
    """The server model to run: ``setting``, or for "auto" sync when this process may run on
    one CPU only (a pinned worker, a cpuset of one) and aio when it may spread over several."""
    if setting != "auto":
        return setting
    return "sync" if len(os.sched_getaffinity(0)) == 1 else "aio"


def decision_log_share(settings: Settings) -> float:
    """The share of customers whose answers are logged (0 when the decision log is off)."""
    return settings.decision_log_share if settings.decision_log else 0.0


def health_statuses(model_loaded: bool, redis_ok: bool, model_in_redis: bool
                    ) -> list[tuple[str, int]]:
    """What the health service answers, per service name. "" answers "can this instance
    answer?": yes once a model is in memory, even while Redis is away or the model vanished
    from it (it then serves popularity). The service name also needs Redis, holding the model."""
    serving, not_serving = (health_pb2.HealthCheckResponse.SERVING,
                            health_pb2.HealthCheckResponse.NOT_SERVING)
    return [("", serving if model_loaded else not_serving),
            (SERVICE_NAME, serving if model_loaded and redis_ok and model_in_redis
             else not_serving)]
