"""What a dataset can ask about the unit it is producing: ``get_context()``.

Inside a ReproLoader, in whichever process produces a batch (a worker, or the main
process with ``num_workers=0``), ``get_context()`` returns a frozen
:class:`WorkerContext`. Its ``rng`` is the unit's own ``numpy.random.Generator``: the
recommended way for a dataset to draw random numbers, because it is a pure function
of (seed, epoch, rank, unit) and needs no global state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from reproloader.exceptions import ContextError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["RngScope", "WorkerContext", "get_context"]

RngScope = Literal["batch", "sample", "worker"]


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """The unit being produced, as seen from inside a dataset, sampler or collate_fn.

    Attributes:
        rng: the unit's Generator. The same object for every unit of a process,
            reseeded in place, so a reference cached in ``__init__`` or a transform
            keeps working.
        seed: the loader's root seed.
        epoch: the loader's epoch.
        rank: this process's rank under ``torch.distributed`` (0 without it).
        world_size: the number of ranks (1 without ``torch.distributed``).
        worker_id: the DataLoader worker producing the unit; 0 in the main process.
        num_workers: the loader's ``num_workers``; 0 means the main process loads.
        scope: the loader's ``rng_scope``: what one stream of ``rng`` covers.
        batch_index: the batch's position in the epoch (for iterable datasets, in
            this worker's stream); None in ``worker_init_fn``.
        sample_index: in sample scope, the dataset index being produced (for
            iterable datasets, the position in this worker's stream); else None.
    """

    rng: np.random.Generator
    seed: int
    epoch: int
    rank: int
    world_size: int
    worker_id: int
    num_workers: int
    scope: RngScope
    batch_index: int | None
    sample_index: int | None


class _Source(Protocol):
    def context(self) -> WorkerContext: ...


# The unit being produced in this process. One at a time: in the main process every
# producing window holds the process-wide lock of ``_runtime.isolation``, which puts
# back the previous value on leaving; a worker process produces for one loader.
_active: _Source | None = None


def _activate(source: _Source | None) -> None:
    global _active  # noqa: PLW0603 - see above
    _active = source


def _current() -> _Source | None:
    return _active


def _deactivate() -> None:
    global _active  # noqa: PLW0603
    _active = None


def get_context() -> WorkerContext:
    """The context of the unit being produced in this process.

    Raises:
        ContextError: when called outside a ReproLoader's dataset, sampler,
            ``collate_fn`` or ``worker_init_fn``, for example from the training loop.

    Example:
        >>> from reproloader import get_context
        >>> class Noisy(torch.utils.data.Dataset):
        ...     def __getitem__(self, i):
        ...         return i + get_context().rng.normal()
    """
    source = _active
    if source is None:
        raise ContextError(
            "get_context() was called outside a ReproLoader: it only works while a "
            "ReproLoader produces data (in the dataset's __getitem__/__getitems__/"
            "__iter__, collate_fn or worker_init_fn). Iterate a ReproLoader over this "
            "dataset, or pass the Generator you need explicitly."
        )
    return source.context()
