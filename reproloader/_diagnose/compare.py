"""Bitwise comparison of batches: tensors, numpy arrays and nested collections."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["difference"]


def _arrays_equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return False


def difference(a: Any, b: Any, where: str) -> str | None:
    # The first difference between two batches, or None if they are equal bit for bit.
    if isinstance(a, (torch.Tensor, np.ndarray)) or isinstance(b, (torch.Tensor, np.ndarray)):
        return None if _arrays_equal(a, b) else f"{where}: {a!r} != {b!r}"
    pairs: list[tuple[Any, Any, str]] = []
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if a.keys() != b.keys():
            return f"{where}: keys {sorted(a)} != {sorted(b)}"
        pairs = [(a[key], b[key], f"{where}[{key!r}]") for key in a]
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: length {len(a)} != {len(b)}"
        pairs = [(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True))]
    elif type(a) is not type(b) or a != b:
        return f"{where}: {a!r} != {b!r}"
    return next((d for x, y, w in pairs if (d := difference(x, y, w))), None)
