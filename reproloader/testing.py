"""Test helpers for code that uses ReproLoader: is my pipeline resumable?"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import torch

from reproloader._diagnose.compare import difference

__all__ = ["assert_batches_equal", "assert_resume_matches"]


class _Resumable(Protocol):
    def __iter__(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None: ...


def assert_batches_equal(expected: Sequence[Any], actual: Sequence[Any]) -> None:
    """Bitwise equality of two lists of batches (tensors, arrays, nested collections).

    Raises:
        AssertionError: naming the first batch and element that differ.
    """
    if len(expected) != len(actual):
        raise AssertionError(f"expected {len(expected)} batches, got {len(actual)}")
    for i, (a, b) in enumerate(zip(expected, actual, strict=True)):
        found = difference(a, b, f"batch {i}")
        if found:
            raise AssertionError(found)


def _through_torch_save(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # type: ignore[no-any-return]


def assert_resume_matches(
    make_loader: Callable[[], _Resumable],
    *,
    stop_at: int | Iterable[int],
    epochs: int = 2,
    make_resumed: Callable[[], _Resumable] | None = None,
    between_epochs: bool = False,
    through_torch_save: bool = True,
) -> None:
    """Stopping after ``k`` batches and resuming in a fresh loader gives the same stream.

    For each ``k`` in ``stop_at`` the helper runs ``epochs`` epochs with a loader
    from ``make_loader``, takes ``state_dict()`` right after batch ``k`` (counted from
    the start of the run; 0 means before the first batch), loads it into a new loader
    and finishes the run the way a training loop would. The batches before the stop
    plus those after it must equal, bit for bit, those of an uninterrupted run.

    Args:
        make_loader: returns a new loader, built the same way every time.
        stop_at: batch counts to stop after.
        epochs: how many epochs the run has.
        make_resumed: builds the loader that resumes (default ``make_loader``), to
            check resuming into, say, another ``num_workers``.
        between_epochs: take the state after the epoch's loop has ended (the
            iterator raised StopIteration) when ``k`` ends an epoch.
        through_torch_save: pass the state through ``torch.save`` and
            ``torch.load(weights_only=True)``, as a checkpoint would.

    Raises:
        AssertionError: naming the stop point and the first difference.

    Example:
        >>> assert_resume_matches(lambda: ReproLoader(ds, batch_size=4, seed=0), stop_at=[0, 3, 7])
    """
    uninterrupted = make_loader()
    reference = [batch for _ in range(epochs) for batch in uninterrupted]
    del uninterrupted
    stops = [stop_at] if isinstance(stop_at, int) else list(stop_at)
    for k in stops:
        if not 0 <= k <= len(reference):
            raise ValueError(f"stop_at={k} is outside the run's {len(reference)} batches")
        loader = make_loader()
        seen: list[Any] = []
        state, epoch = (loader.state_dict(), 0) if k == 0 else (None, 0)
        while state is None:
            for batch in loader:
                seen.append(batch)
                if len(seen) == k and not between_epochs:
                    state = loader.state_dict()
                    break
            else:
                epoch += 1
                if len(seen) == k:
                    state = loader.state_dict()
                continue
            break
        del loader
        if through_torch_save:
            state = _through_torch_save(state)
        resumed = (make_resumed or make_loader)()
        resumed.load_state_dict(state)
        rest = [batch for _ in range(epoch, epochs) for batch in resumed]
        try:
            assert_batches_equal(reference, seen + rest)
        except AssertionError as error:
            raise AssertionError(f"resuming after {k} batches: {error}") from None
