"""Keeping the caller's RNG states out of the loader's way in the main process.

With ``num_workers=0`` the dataset runs in the training process, between the
training loop's own draws. :class:`Isolation` saves the caller's global RNG states
when the loader starts work and puts them back when it stops, so iterating a
ReproLoader never changes them. With ``swap=True`` it also keeps the loader's own
states between windows, for streams that continue from one batch to the next
(worker scope, user samplers).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from reproloader import context as _context
from reproloader._runtime.rngs import GlobalRngs

__all__ = ["Isolation"]


class Isolation:
    """A re-entrant window in which the loader owns the process-wide RNGs.

    Args:
        rngs: the RNGs to save and restore.
        swap: keep the loader's states from one window to the next.
        clears_context: end the unit context on leaving, so ``get_context()``
            raises again in the training loop.
    """

    __slots__ = ("_caller", "_depth", "clears_context", "mine", "rngs", "swap")

    def __init__(self, rngs: GlobalRngs, *, swap: bool, clears_context: bool) -> None:
        self.rngs = rngs
        self.swap = swap
        self.clears_context = clears_context
        self.mine: Any = None
        self._caller: Any = None
        self._depth = 0

    def __enter__(self) -> None:
        self._depth += 1
        if self._depth == 1:
            self._caller = self.rngs.save()
            if self.swap and self.mine is not None:
                self.rngs.restore(self.mine)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth:
            return
        if self.swap:
            self.mine = self.rngs.save()
        self.rngs.restore(self._caller)
        self._caller = None
        if self.clears_context:
            _context._deactivate()
