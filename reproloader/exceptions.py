"""Exceptions raised by reproloader.

Every exception also inherits from the builtin it is closest to, so existing
``except ValueError`` / ``except RuntimeError`` blocks keep working::

    ReproError
    ├── BatchUnavailableError (ValueError) a batch asked for that cannot be made exactly here
    ├── ContextError (RuntimeError)      get_context() called outside a ReproLoader unit
    ├── CheckpointError (ValueError)     an empty, truncated, damaged or foreign checkpoint file
    ├── ConfigError (ValueError)         a setting that cannot work together with another
    └── StateError (ValueError)          a state_dict that cannot be resumed here
        ├── StateFieldError              a field of the wrong type, range, or out of step
        ├── StateMismatchError           saved and current loader differ (lists every field)
        └── StateVersionError            unknown or newer state format
"""

from __future__ import annotations

__all__ = [
    "BatchUnavailableError",
    "CheckpointError",
    "ConfigError",
    "ContextError",
    "ReproError",
    "StateError",
    "StateFieldError",
    "StateMismatchError",
    "StateVersionError",
]


class ReproError(Exception):
    """Base class of every error reproloader raises on purpose."""


class BatchUnavailableError(ReproError, ValueError):
    """A batch asked for on demand (``ReproLoader.batch_at``) that cannot be made exactly.

    The message says why (an iterable dataset, worker scope, a dataset with its own
    state, a user's sampler without ``replay=True``) and one way to get it.

    .. versionadded:: 0.1
    """


class ContextError(ReproError, RuntimeError):
    """``get_context()`` was called where no ReproLoader unit is being produced."""


class CheckpointError(ReproError, ValueError):
    """A file ``load_checkpoint`` refuses: empty, truncated, damaged, or not a checkpoint.

    The message names the path, what is wrong and one fix.
    """


class ConfigError(ReproError, ValueError):
    """A combination of loader arguments and config fields that cannot work."""


class StateError(ReproError, ValueError):
    """A ``state_dict`` that this loader cannot resume from."""


class StateFieldError(StateError):
    """A field of a state that no loader could have written: damaged or edited.

    Attributes:
        path: where the field is, e.g. ``workers.workers[1].map.stream.globals.numpy.pos``.
        expected: what it must be.
        got: what it is.
    """

    def __init__(self, path: str, expected: str, got: object) -> None:
        shown = repr(got)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            f"cannot resume: state field {path} must be {expected}, got {shown}; the state "
            "is damaged or was edited: resume from a state_dict() saved unchanged"
        )
        self.path = path
        self.expected = expected
        self.got = got


class StateMismatchError(StateError):
    """The saved state was taken from a loader that differs from this one.

    Attributes:
        mismatches: ``{field: (saved, current)}`` for every field that differs.
    """

    def __init__(self, message: str, mismatches: dict[str, tuple[object, object]]) -> None:
        super().__init__(message)
        self.mismatches = mismatches


class StateVersionError(StateError):
    """The state's format version is unknown to this release of reproloader."""
