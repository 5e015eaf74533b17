"""The one batch comparer: tensors, numpy arrays and nested collections.

Two views of one comparison: :func:`difference` names the first place two batches
differ bit for bit (assertions, resume checks); :func:`numbers`, :func:`vector` and
:func:`differ` flatten batches to float vectors and mark every position that differs
(the audit, which reports how much of a pipeline changed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["Mask", "Vector", "differ", "difference", "numbers", "vector"]

Vector = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


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


def numbers(batch: Any) -> npt.NDArray[np.float64]:
    """Every number in a batch (tensors, arrays, nested collections), flattened, in order."""
    parts: list[npt.NDArray[np.float64]] = []

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_complex():
                value = torch.view_as_real(value)
            parts.append(value.detach().cpu().to(torch.float64).reshape(-1).numpy())
        elif isinstance(value, np.ndarray):
            if np.issubdtype(value.dtype, np.number) or value.dtype == bool:
                parts.append(np.asarray(value, dtype=np.float64).reshape(-1))
        elif isinstance(value, (bool, int, float, np.number)):
            parts.append(np.array([float(value)]))
        elif isinstance(value, dict):
            for key in sorted(value, key=repr):
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(batch)
    return np.concatenate(parts) if parts else np.zeros(0)


def vector(batches: list[Any]) -> Vector:
    return np.concatenate([numbers(b) for b in batches]) if batches else np.zeros(0)


def differ(a: Vector, b: Vector) -> Mask | None:
    # Positions whose values differ (NaN equals NaN), or None if the shapes differ.
    if a.shape != b.shape:
        return None
    same: Mask = (a == b) | (np.isnan(a) & np.isnan(b))
    return ~same
