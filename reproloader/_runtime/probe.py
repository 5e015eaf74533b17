"""Telling, while the run goes, that an iterable dataset's own state will not resume it exactly.

An iterable dataset (or its iterator) with its own ``state_dict`` is resumed through that
state (``iterable_resume="state"``, the default), and a resume is only as exact as the
state: Hugging Face's buffer-shuffled iterable datasets leave the buffer out, a
generator kept on the side is not in it, and so on. The audit finds such states, but
a user who never runs it would believe the resume exact. So the loader checks, once:

- **Known losses** (:func:`known_loss`), wherever the state is taken and with any
  number of workers: a Hugging Face ``IterableDataset`` that shuffles with a buffer
  (its documentation says the buffer is not in the state).
- **The next item** (:class:`ResumeCheck`), in the main process (``num_workers=0``):
  the first time a mid-pass state holds the dataset's own state, a deep copy of the
  dataset is restored from it, as a resumed loader would be, and its next item is
  kept; when the run pulls its own next item, the two are compared. Both are drawn
  under the same unit's reseeding, and the process's RNGs are put back around the
  copy, so the run draws what it would have drawn. It costs one ``deepcopy`` of the
  dataset, one restore and one item, once per loader; a dataset that cannot be
  copied is not checked.

Either warns once per loader, naming the dataset's type and ``iterable_resume="replay"``.
"""

from __future__ import annotations

import random
import warnings
from typing import Any, Final

import numpy as np
import torch

from reproloader import context as _context
from reproloader._diagnose.compare import difference

__all__ = ["END", "ResumeCheck", "known_loss", "warn_lossy"]

END: Final = object()
"""What a copy gives where its stream ran out."""


def _buffer_shuffled(dataset: object) -> bool:
    # A Hugging Face IterableDataset's pipeline of examples iterables, walked from the
    # outermost (a map's) to the source, looking for the shuffle buffer's.
    if getattr(dataset, "_shuffling", None) is not None:  # how datasets < 4 marked it
        return True
    stack = [getattr(dataset, "_ex_iterable", None)]
    for _ in range(64):  # pipelines are a few steps long; never walk without end
        if not stack:
            break
        node = stack.pop()
        if node is None:
            continue
        if type(node).__name__ == "BufferShuffledExamplesIterable":
            return True
        stack.append(getattr(node, "ex_iterable", None))
        stack.extend(getattr(node, "ex_iterables", None) or ())
    return False


def known_loss(dataset: object) -> str | None:
    """Why ``dataset``'s own state is known not to hold its whole position, or None."""
    module = type(dataset).__module__.split(".")[0]
    if module == "datasets" and _buffer_shuffled(dataset):
        return (
            "it shuffles with a buffer (.shuffle(buffer_size=...)) and Hugging Face "
            "documents that an IterableDataset's state_dict() leaves the buffer out"
        )
    return None


def warn_lossy(dataset: object, why: str, stacklevel: int) -> None:
    """The warning: the dataset's type, why its state is lossy, and the fix."""
    kind = type(dataset).__qualname__
    warnings.warn(
        f"a mid-pass state of this loader resumes the iterable dataset {kind} through "
        f"its own state_dict(), which does not hold its whole position: {why}. A run "
        "resumed from such a state gives other samples than this one. For an exact "
        "resume set ReproConfig(iterable_resume='replay') (each worker replays its pass "
        f"up to its position), or make {kind}.state_dict() hold the whole position.",
        UserWarning,
        stacklevel=stacklevel,
    )


class ResumeCheck:
    """Once per loader: whether a resume through the dataset's own state gives the next item.

    :meth:`expect` is given the next item a copy restored from the state gives;
    :meth:`compare` the one the run then gives.
    """

    __slots__ = ("done", "expected")

    def __init__(self) -> None:
        self.done = False  # checked (or known lossy and warned): never again
        self.expected: Any = None

    def copy_next(self, restore: Any) -> None:
        """Run ``restore()`` (a copy's next item) with the process's RNGs put back after."""
        self.done = True
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        active = _context._current()
        try:
            self.expected = (restore(),)
        except Exception:  # noqa: BLE001 - a copy that cannot be made or restored: not checked
            self.expected = None
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])
            _context._activate(active)

    def compare(self, item: Any, dataset: object) -> None:
        """The run's next item: warn if the copy's differs."""
        expected, self.expected = self.expected, None
        if expected is None:
            return
        if expected[0] is END or item is END:
            found = None if expected[0] is item else "one of them ran out"
        else:
            try:
                found = difference(expected[0], item, "item")
            except Exception:  # noqa: BLE001 - items that cannot be compared: not checked
                found = None
        if found is not None:
            warn_lossy(
                dataset,
                "a copy of the dataset restored from the first state taken continued "
                f"with another item than this run ({found[:200]})",
                stacklevel=4,
            )
