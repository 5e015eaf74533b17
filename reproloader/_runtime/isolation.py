"""Keeping the caller's RNG states out of the loader's way in the main process.

With ``num_workers=0`` the dataset runs in the training process, between the
training loop's own draws. :class:`Isolation` saves the caller's global RNG states
when the loader starts work and puts them back when it stops, so iterating a
ReproLoader never changes them. With ``swap=True`` it also keeps the loader's own
states between windows, for streams that continue from one batch to the next
(worker scope, user samplers).

The RNGs are process-wide, so a window is too: every window in the process holds
one re-entrant lock from ``__enter__`` to ``__exit__``. Two threads, each iterating
its own loader, then take turns batch by batch, and each gets the batches it would
get alone. (Code in another thread that draws from a global RNG without a loader
window, a training step say, still draws from whatever state is live: the lock
cannot reach it.)
"""

from __future__ import annotations

import os
import threading
from types import TracebackType
from typing import Any

from reproloader import context as _context
from reproloader._runtime.rngs import GlobalRngs

__all__ = ["WINDOW_LOCK", "Isolation"]

WINDOW_LOCK = threading.RLock()
"""Held by the thread inside an isolation window; re-entrant for nested windows."""


def _new_lock_in_child() -> None:
    # A process forked (a DataLoader worker, say) while another thread was inside a
    # window inherits the lock held by a thread it does not have: start it free.
    global WINDOW_LOCK  # noqa: PLW0603
    WINDOW_LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


class Isolation:
    """A re-entrant window in which the loader owns the process-wide RNGs.

    Args:
        rngs: the RNGs to save and restore.
        swap: keep the loader's states from one window to the next.
        clears_context: on leaving, put back the unit context that was active on
            entering (none in a training loop, so ``get_context()`` raises there again;
            the outer loader's, when a dataset iterates another loader).
        swaps_attributes: with ``swap``, also keep the states of the RNG objects the
            producing unit reseeded on the dataset: streams that continue across units
            (worker scope) must not see another loader's draws on a dataset object that
            two loaders share.
    """

    __slots__ = (
        "_caller",
        "_context",
        "_depth",
        "_held",
        "clears_context",
        "mine",
        "rngs",
        "swap",
        "swaps_attributes",
    )

    def __init__(
        self,
        rngs: GlobalRngs,
        *,
        swap: bool,
        clears_context: bool,
        swaps_attributes: bool = False,
    ) -> None:
        self.rngs = rngs
        self.swap = swap
        self.clears_context = clears_context
        self.swaps_attributes = swaps_attributes
        self._held: Any = None
        self.mine: Any = None
        self._caller: Any = None
        self._context: Any = None
        self._depth = 0

    def __enter__(self) -> None:
        WINDOW_LOCK.acquire()
        self._depth += 1
        if self._depth > 1:
            return
        try:
            self._context = _context._current()
            self._caller = self.rngs.save()
            if self.swap and self.mine is not None:
                self.rngs.restore(self.mine)
            if self._held is not None:
                producer, held = self._held
                producer.release_attributes(held)
        except BaseException:
            self._depth -= 1
            WINDOW_LOCK.release()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._depth -= 1
            if self._depth:
                return
            if self.swap:
                self.mine = self.rngs.save()
            if self.swaps_attributes:
                producer = _context._current()
                hold = getattr(producer, "hold_attributes", None)
                self._held = (producer, hold()) if callable(hold) else None
            self.rngs.restore(self._caller)
            self._caller = None
            if self.clears_context:
                _context._activate(self._context)
            self._context = None
        finally:
            WINDOW_LOCK.release()
