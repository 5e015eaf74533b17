"""Finding the RNG objects a pipeline holds: a budgeted walk of its object graph.

A dataset, a sampler or a ``collate_fn`` can keep RNG objects anywhere: on an
attribute (``self.rng``), in a list of transforms, several containers deep
(albumentations keeps one per transform, six attributes down from the dataset in
``Compose([A.OneOf([...])])``), in a ``__slots__`` field, in a closure or a
``functools.partial``. :func:`discover` walks all of that breadth first from named
roots and returns what the loader can reseed in place, and what it cannot:

* **reseedable**: numpy ``Generator`` and ``RandomState``, ``random.Random``
  (``SystemRandom`` excepted) and ``torch.Generator``;
* **not reseedable** (reported, never touched): ``random.SystemRandom`` (reads
  ``os.urandom``), a bare numpy ``BitGenerator``, and any other object whose class
  has both a drawing method (``random``, ``rand``, ``randint``, ``integers``,
  ``uniform``, ``normal``, ...) and a state method (``seed``, ``manual_seed``,
  ``getstate``, ``get_state``, ...): an RNG of a library the loader does not know.

The walk is bounded by a *budget*, a count of objects whose contents it reads, not
a depth, so deep but small pipelines are walked whole while huge object graphs stay
cheap. Plain data is not counted: numbers, strings, paths, arrays, tensors, and
long lists, tuples and dicts whose first items are plain data (a dataset's list of
a million file names costs as much as its first eight). Process-wide RNGs
(``random``'s and numpy's global instances) are left out: they are reseeded as such.

A random DataPipe's own RNG (``shuffle``'s) is not reseeded per unit either: the
loader seeds it once per pass, alike in every worker, as its sharding needs
(:mod:`reproloader._runtime.datapipes`).

Only ``__dict__``, ``__slots__``, closures, ``functools.partial`` and bound methods
are followed, never properties or ``__getattr__``, so the walk runs no user code.
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import types
import warnings
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import torch

from reproloader._runtime.datapipes import owns_its_rngs

__all__ = [
    "DEFAULT_BUDGET",
    "Discovery",
    "RngWarning",
    "discover",
    "find_rngs",
    "is_global",
]

DEFAULT_BUDGET: Final = 5_000
"""Objects whose contents one walk reads at most (about 5 ms of walking)."""

_RNG_TYPES: Final = (np.random.Generator, np.random.RandomState, random.Random, torch.Generator)
_RANDOM: Final[random.Random] = random._inst  # the instance behind random.random()

# Values that hold no RNG and are not looked into.
_ATOMS: Final = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    bytearray,
    range,
    os.PathLike,
    np.generic,
    np.ndarray,
    torch.Tensor,
    np.dtype,
    torch.dtype,
    torch.device,
)
# Objects that are not followed: their contents belong to the program, not the pipeline.
_NO_DESCENT: Final = (
    types.ModuleType,
    type,
    types.BuiltinFunctionType,
    types.CodeType,
    types.FrameType,
    types.GeneratorType,
    np.random.SeedSequence,
)
_LONG: Final = 64  # a container longer than this is probed before it is walked
_PROBE: Final = 8  # ... through its first items
_DRAWS: Final = (
    "random",
    "rand",
    "randn",
    "randint",
    "integers",
    "uniform",
    "normal",
    "standard_normal",
)
_STATES: Final = ("seed", "manual_seed", "getstate", "get_state", "setstate", "set_state")


class RngWarning(UserWarning):
    """A pipeline holds randomness the loader cannot reseed, or could not look at all."""


def is_global(obj: object) -> bool:
    """Whether ``obj`` is one of the process-wide RNGs (reseeded as such, not as objects)."""
    return obj is _RANDOM or obj is np.random.mtrand._rand


def _foreign_type(cls: type) -> bool:
    if issubclass(cls, (random.SystemRandom, np.random.BitGenerator)):
        return True
    if issubclass(cls, _RNG_TYPES):
        return False
    return any(hasattr(cls, name) for name in _DRAWS) and any(
        hasattr(cls, name) for name in _STATES
    )


_ATOM, _RNG, _FOREIGN, _SKIP, _WALK = range(5)
_KINDS: dict[type, int] = {}


def _classify(cls: type) -> int:
    if issubclass(cls, _ATOMS):
        kind = _ATOM
    elif issubclass(cls, _RNG_TYPES) and not issubclass(cls, random.SystemRandom):
        kind = _RNG
    elif issubclass(cls, _NO_DESCENT):
        kind = _SKIP
    elif _foreign_type(cls):
        kind = _FOREIGN
    else:
        kind = _WALK
    _KINDS[cls] = kind
    return kind


def _kind(obj: object) -> int:
    """What the walk does with ``obj``, decided once per type (isinstance on ABCs is slow)."""
    cls = type(obj)
    kind = _KINDS.get(cls)
    return _classify(cls) if kind is None else kind


def _slot_names(cls: type) -> Iterator[str]:
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__"):
                yield name


def _slots(obj: object) -> Iterator[tuple[str, object]]:
    cls = type(obj)
    for name in _slot_names(cls):
        # Only the member descriptor itself: a property of the same name could run code.
        for klass in cls.__mro__:
            descriptor = klass.__dict__.get(name)
            if descriptor is not None:
                break
        if isinstance(descriptor, types.MemberDescriptorType):
            try:
                yield f".{name}", descriptor.__get__(obj, cls)
            except AttributeError:  # an unset slot
                continue


_EMPTY: Final = object()


def _cell_contents(cell: types.CellType) -> object:
    try:
        return cell.cell_contents
    except ValueError:  # a closure variable not assigned yet
        return _EMPTY


def _children(obj: object) -> Iterator[tuple[str, object]]:
    """``(path suffix, child)`` for everything ``obj`` holds that the walk follows."""
    if isinstance(obj, (list, tuple)):
        yield from ((f"[{i}]", v) for i, v in enumerate(obj))
    elif isinstance(obj, dict):
        yield from ((f"[{k!r}]", v) for k, v in obj.items())
    elif isinstance(obj, types.FunctionType):
        for i, cell in enumerate(obj.__closure__ or ()):
            contents = _cell_contents(cell)
            if contents is not _EMPTY:
                yield f".__closure__[{i}].cell_contents", contents
        if obj.__defaults__:
            yield ".__defaults__", obj.__defaults__
        if obj.__kwdefaults__:
            yield ".__kwdefaults__", obj.__kwdefaults__
    elif isinstance(obj, types.MethodType):
        yield ".__self__", obj.__self__
        yield ".__func__", obj.__func__
    else:
        if isinstance(obj, functools.partial):
            yield ".func", obj.func
            yield ".args", obj.args
            yield ".keywords", obj.keywords
        attributes = getattr(obj, "__dict__", None)
        if isinstance(attributes, dict):
            yield from ((f".{k}", v) for k, v in list(attributes.items()))
        yield from _slots(obj)


def _plain(obj: object, depth: int = 0) -> bool:
    """Whether ``obj`` looks like plain data, judged by its first few items.

    Atoms, and up to four levels of lists, tuples, dicts and record objects (a
    ``__dict__`` of plain values) over them.
    """
    kind = _kind(obj)
    if kind == _ATOM:
        return True
    if depth >= 4 or kind != _WALK or isinstance(obj, types.FunctionType):
        return False
    if isinstance(obj, (list, tuple)):
        items: Any = obj[:_PROBE]
    elif isinstance(obj, dict):
        items = itertools.islice(obj.values(), _PROBE)
    else:
        attributes = getattr(obj, "__dict__", None)
        if not isinstance(attributes, dict) or _kind(obj) != _WALK:
            return False
        items = itertools.islice(attributes.values(), _PROBE * 2)
    return all(_plain(v, depth + 1) for v in items)


@dataclass
class Discovery:
    """What one walk found.

    Attributes:
        rngs: ``(path, rng)`` of the RNGs the loader reseeds in place, sorted by
            path; each object once, under the first of its paths in sorted order.
        foreign: ``(path, type name)`` of RNG-like objects it cannot reseed.
        stopped_at: where the walk ran out of budget (the first object it did not
            read), or None if it saw everything.
        visited: how many objects it read.
        budget: the budget it ran with.
    """

    rngs: list[tuple[str, Any]] = field(default_factory=list)
    foreign: list[tuple[str, str]] = field(default_factory=list)
    stopped_at: str | None = None
    visited: int = 0
    budget: int = DEFAULT_BUDGET

    @property
    def problems(self) -> list[tuple[str, str, str]]:
        """``(path, what, fix)`` for each thing the loader cannot reseed, in order."""
        found = [
            (
                path,
                f"{kind} cannot be reseeded in place by the loader",
                "pass a numpy Generator (rng=...) or draw from reproloader.get_context().rng",
            )
            for path, kind in self.foreign
        ]
        if self.stopped_at is not None:
            found.append(
                (
                    self.stopped_at,
                    (
                        f"the RNG search read {self.budget} objects and stopped here; RNGs "
                        "beyond it are not reseeded"
                    ),
                    (
                        "draw from reproloader.get_context().rng (or take an rng= argument), "
                        "or raise ReproConfig(rng_search_budget=...)"
                    ),
                )
            )
        return found

    def warn(self, *, stacklevel: int = 2) -> None:
        """Warn, once per process and path, about each of :attr:`problems`."""
        for path, what, fix in self.problems:
            key = (path, what)
            if key in _WARNED:
                continue
            _WARNED.add(key)
            warnings.warn(f"{path}: {what}; {fix}", RngWarning, stacklevel=stacklevel + 1)


_WARNED: set[tuple[str, str]] = set()


def discover(roots: Mapping[str, object], budget: int = DEFAULT_BUDGET) -> Discovery:
    """Walk the objects reachable from ``roots`` (name to object), breadth first.

    Args:
        roots: the objects to search, by the name their paths start with
            (``{"dataset": ds, "collate_fn": fn}``).
        budget: at most this many objects are read (see the module docstring).
    """
    found: dict[int, tuple[str, Any]] = {}
    foreign: dict[int, tuple[str, str]] = {}
    seen: set[int] = set()
    queue: deque[tuple[str, object]] = deque(roots.items())
    result = Discovery(budget=budget)
    while queue:
        path, obj = queue.popleft()
        kind = _kind(obj)
        if kind == _RNG:
            if not is_global(obj):
                previous = found.get(id(obj))
                if previous is None or path < previous[0]:
                    found[id(obj)] = (path, obj)
            continue
        if kind in (_ATOM, _SKIP) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if kind == _FOREIGN:
            foreign[id(obj)] = (path, type(obj).__qualname__)
            continue
        if result.visited >= budget:
            result.stopped_at = path
            break
        result.visited += 1
        if isinstance(obj, (list, tuple, dict)) and len(obj) > _LONG and _plain(obj):
            continue  # data, not pipeline: a list of file names, a table of labels
        own = owns_its_rngs(obj)  # a random DataPipe: seeded per pass, not per unit
        queue.extend(
            (path + suffix, child)
            for suffix, child in _children(obj)
            if _kind(child) != _ATOM and not (own and _kind(child) == _RNG)
        )
    result.rngs = sorted(found.values(), key=lambda item: item[0])
    result.foreign = sorted(foreign.values())
    return result


def find_rngs(root: object, name: str, budget: int = DEFAULT_BUDGET) -> list[tuple[str, Any]]:
    """The reseedable RNG objects reachable from ``root``, as ``(path, rng)`` sorted by path."""
    return discover({name: root}, budget).rngs
