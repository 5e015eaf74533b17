"""RNG states as plain data: ints, floats, lists, dicts and tensors only.

Resume states must load with ``torch.load(f, weights_only=True)`` and survive JSON,
so numpy arrays and tuples become lists here, and come back as the types each RNG's
setter expects. Only worker scope and iterable datasets ever need these: in batch
and sample scope a unit's RNG state is a function of its position.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "dump_rng",
    "load_rng",
    "loads",
    "python_from_plain",
    "python_to_plain",
    "to_plain",
]


def to_plain(value: Any) -> Any:
    """Arrays, tuples and numpy scalars as lists and Python numbers, recursively."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def _bit_generator_state(plain: Mapping[str, Any], template: Mapping[str, Any]) -> dict[str, Any]:
    # Lists back to arrays wherever the live state has arrays, with their dtype.
    out: dict[str, Any] = {}
    for key, value in plain.items():
        like = template.get(key)
        if isinstance(like, np.ndarray):
            out[key] = np.asarray(value, dtype=like.dtype)
        elif isinstance(like, dict):
            out[key] = _bit_generator_state(value, like)
        else:
            out[key] = value
    return out


def python_to_plain(state: tuple[Any, ...]) -> list[Any]:
    """A python ``random`` state (``getstate()``'s tuple) as plain data."""
    version, internal, gauss = state
    return [version, list(internal), gauss]


def python_from_plain(plain: list[Any]) -> tuple[Any, ...]:
    """The ``getstate()`` tuple that :func:`python_to_plain` made ``plain`` from."""
    version, internal, gauss = plain
    return version, tuple(internal), gauss


def dump_rng(rng: object) -> Any:
    """The state of one RNG object as plain data."""
    if isinstance(rng, np.random.Generator):
        return to_plain(rng.bit_generator.state)
    if isinstance(rng, np.random.RandomState):
        return to_plain(rng.get_state(legacy=False))
    if isinstance(rng, random.Random):
        return python_to_plain(rng.getstate())
    if isinstance(rng, torch.Generator):
        return rng.get_state()
    raise TypeError(f"not an RNG reproloader knows: {type(rng).__name__}")


def load_rng(rng: object, state: Any) -> None:
    """Put a :func:`dump_rng` state back, in place."""
    if isinstance(rng, np.random.Generator):
        bit_generator = rng.bit_generator
        bit_generator.state = _bit_generator_state(state, bit_generator.state)
    elif isinstance(rng, np.random.RandomState):
        template = rng.get_state(legacy=False)
        rng.set_state(_bit_generator_state(state, template))
    elif isinstance(rng, random.Random):
        rng.setstate(python_from_plain(state))
    elif isinstance(rng, torch.Generator):
        rng.set_state(state)
    else:
        raise TypeError(f"not an RNG reproloader knows: {type(rng).__name__}")


_PYTHON_RANDOM_WORDS = 625  # MT19937's 624 words and its position, as getstate() gives them


def _words(value: object, n: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == n
        and all(type(w) is int and 0 <= w < 2**32 for w in value)
    )


def _gauss(value: object) -> bool:
    return value is None or type(value) is float


def _scratch_for(kind: str, value: Any) -> object | None:
    # An RNG of the kind ``value`` is a state of, to load it into; None if none fits.
    if kind == "random" or (kind == "object" and isinstance(value, list)):
        ok = (
            isinstance(value, list)
            and len(value) == 3
            and value[0] == 3
            and _words(value[1], _PYTHON_RANDOM_WORDS)
            and value[1][-1] <= 624
            and _gauss(value[2])
        )
        return random.Random() if ok else None
    if kind == "torch" or (kind == "object" and isinstance(value, torch.Tensor)):
        ok = isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1
        return torch.Generator() if ok else None
    if kind in ("generator", "object") and isinstance(value, Mapping):
        name = value.get("bit_generator")
        bit_generator = getattr(np.random, name, None) if isinstance(name, str) else None
        if not (
            isinstance(bit_generator, type) and issubclass(bit_generator, np.random.BitGenerator)
        ):
            return None
        return np.random.Generator(bit_generator())
    return None


def _non_negative_ints(value: Any, bound: int) -> bool:
    if isinstance(value, list):
        return all(_non_negative_ints(v, bound) for v in value)
    if isinstance(value, Mapping):
        return all(_non_negative_ints(v, bound) for v in value.values())
    return type(value) is int and 0 <= value < bound


def _bit_generator_fields(value: Mapping[str, Any]) -> bool:
    # The fields numpy's setters take without checking their range.
    name = value.get("bit_generator")
    state = value.get("state")
    bound = 2**32 if name == "MT19937" else 2**128
    buffer, pos = value.get("buffer", []), value.get("buffer_pos", 0)
    checks = (
        isinstance(state, Mapping) and _non_negative_ints(state, bound),
        name != "MT19937" or (isinstance(state, Mapping) and 0 <= state.get("pos", -1) <= 624),
        all(value.get(flag, 0) in (0, 1) for flag in ("has_uint32", "has_gauss")),
        _non_negative_ints(value.get("uinteger", 0), 2**32),
        type(value.get("gauss", 0.0)) is float,
        isinstance(buffer, list) and _non_negative_ints(buffer, 2**64),
        type(pos) is int and 0 <= pos <= len(buffer if isinstance(buffer, list) else []),
    )
    return all(checks)


def loads(kind: str, value: Any) -> bool:
    """Whether ``value`` is a state of an RNG of ``kind`` that loads as it should.

    ``kind`` is ``"random"``, ``"torch"``, ``"numpy"`` (numpy's legacy global RNG as
    ``{"key", "pos", "gauss"}``), ``"generator"`` (a numpy Generator) or ``"object"``
    (any RNG object :func:`dump_rng` dumps). The state is loaded into a scratch RNG,
    so whatever the RNG's own setter refuses is refused here too.
    """
    if kind == "numpy":
        return (
            isinstance(value, Mapping)
            and set(value) == {"key", "pos", "gauss"}
            and _words(value["key"], 624)
            and type(value["pos"]) is int
            and 0 <= value["pos"] <= 624
            and _gauss(value["gauss"])
        )
    if isinstance(value, Mapping) and not _bit_generator_fields(value):
        return False
    scratch = _scratch_for(kind, value)
    if scratch is None:
        return False
    try:
        load_rng(scratch, value)
        if isinstance(scratch, np.random.Generator):
            # What numpy took must be what was given (it can wrap or clip silently).
            taken = to_plain(scratch.bit_generator.state)
            if taken["state"] != value["state"]:
                return False
    except (
        TypeError,
        ValueError,
        KeyError,
        IndexError,
        OverflowError,
        RuntimeError,
        AttributeError,
    ):
        return False
    return True
