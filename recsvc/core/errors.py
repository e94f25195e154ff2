"""The recsvc error tree. No grpc import here: `recsvc.api.guard` maps these to statuses.

    RecsvcError
    ├── InvalidRequestError       bad client input            -> INVALID_ARGUMENT
    ├── ModelNotPublishedError    no active model version     -> FAILED_PRECONDITION
    ├── DeadlineExceededError     no time left for the work   -> DEADLINE_EXCEEDED
    ├── OverloadedError           concurrency cap reached     -> RESOURCE_EXHAUSTED
    ├── AuthenticationError       missing or unknown token    -> UNAUTHENTICATED
    ├── PermissionDeniedError     token without the scope     -> PERMISSION_DENIED
    ├── SettingError              a setting outside what is allowed (exit 2)
    ├── ListenError               serve cannot listen on host:port (exit 4)
    ├── StoreError                Redis failed or timed out   -> UNAVAILABLE
    │   └── CorruptRecordError    a stored value cannot be decoded
    ├── PublishError              a training run could not publish (never half-published)
    │   ├── LockHeldError         another training run holds the lock
    │   └── QualityGateError      the new version is worse than the active one
    └── DataError                 training input that cannot be used at all
"""

from __future__ import annotations


class RecsvcError(Exception):
    """Base of every error recsvc raises on purpose."""


class InvalidRequestError(RecsvcError):
    """A request field is malformed; the message names the field."""


class ModelNotPublishedError(RecsvcError):
    """No model version is active yet: run `recsvc train` first."""


class DeadlineExceededError(RecsvcError):
    """The caller's deadline (or the server default) left no time for the work."""


class OverloadedError(RecsvcError):
    """The server is at its cap of concurrent requests."""


class AuthenticationError(RecsvcError):
    """The call carries no token, or one the server does not know."""


class PermissionDeniedError(RecsvcError):
    """The caller's token lacks the scope the method needs."""


class SettingError(RecsvcError):
    """A setting or argument outside what is allowed; the message names it and what is."""


class ListenError(RecsvcError):
    """The server cannot listen on its host and port (in use, or not an address of this host)."""


class StoreError(RecsvcError):
    """Redis did not answer, answered an error, or timed out."""


class CorruptRecordError(StoreError):
    """A value read from Redis does not decode as the schema says."""


class PublishError(RecsvcError):
    """Publishing a model version failed; the active version is untouched."""


class LockHeldError(PublishError):
    """Another training run holds the publish lock."""


class QualityGateError(PublishError):
    """The new version scores worse than the active one beyond the tolerance."""


class DataError(RecsvcError):
    """Training input that cannot be used (missing file or column, strict-mode bad rows, ...)."""
