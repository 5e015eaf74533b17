"""Small shims around what torch and torchdata releases do differently."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

__all__ = ["quiet_torchdata"]


@contextlib.contextmanager
def quiet_torchdata() -> Iterator[None]:
    """Construct torchdata loaders without torchdata's own deprecation warning.

    torchdata 0.11 calls ``torch.set_vital``, which torch 2.13 deprecates: a warning
    about torchdata's internals that users can do nothing about.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
        yield
