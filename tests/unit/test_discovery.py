from __future__ import annotations

import functools
import random
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from reproloader._runtime import discovery
from reproloader._runtime.discovery import RngWarning, discover, find_rngs


@pytest.fixture(autouse=True)
def _fresh_warning_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "_WARNED", set())


def warned(*found: discovery.Discovery) -> list[str]:
    """The RngWarning messages that warning about each of ``found`` in turn gives."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for each in found:
            each.warn()
    assert all(w.category is RngWarning for w in record)
    return [str(w.message) for w in record]


class Augment:
    def __init__(self) -> None:
        self.rng = np.random.default_rng(1)


class Holder:
    def __init__(self) -> None:
        self.gen = np.random.default_rng(0)
        self.legacy = np.random.RandomState(0)
        self.py = random.Random(0)
        self.torch_gen = torch.Generator().manual_seed(0)
        self.transforms = [Augment(), "text", 3]
        self.alias = self.gen  # reported once, under its first path
        self.global_random = random._inst  # type: ignore[attr-defined]
        self.global_numpy = np.random.mtrand._rand
        self.table = {"aug": Augment()}


class Node:
    """A transform that holds other transforms, like albumentations' Compose and OneOf."""

    def __init__(self, *children: Any, **attributes: Any) -> None:
        self.transforms = list(children)
        self.__dict__.update(attributes)


def test_find_rngs_reports_each_rng_once_with_its_path() -> None:
    paths = [path for path, _ in find_rngs(Holder(), "dataset")]
    assert paths == [
        "dataset.alias",
        "dataset.legacy",
        "dataset.py",
        "dataset.table['aug'].rng",
        "dataset.torch_gen",
        "dataset.transforms[0].rng",
    ]


def test_nested_pipelines_are_reached_whatever_their_depth() -> None:
    leaf = Node(random_generator=np.random.default_rng(0))
    dataset = Node(transform=Node(Node(), Node(Node(leaf))))
    dataset.loop = dataset  # type: ignore[attr-defined]  # cycles end the walk, not the budget
    found = discover({"dataset": dataset})
    assert [p for p, _ in found.rngs] == [
        "dataset.transform.transforms[1].transforms[0].transforms[0].random_generator"
    ]
    assert found.stopped_at is None
    assert found.problems == []


def test_slots_closures_partials_and_bound_methods_are_searched() -> None:
    class Slotted:
        __slots__ = ("rng", "unset")

        def __init__(self) -> None:
            self.rng = random.Random(0)

    gen = np.random.default_rng(0)

    def collate(batch: list[Any]) -> list[Any]:
        return [gen.random() for _ in batch]

    def scale(batch: list[Any], rng: np.random.Generator) -> list[Any]:
        return batch

    found = discover(
        {
            "slots": Slotted(),
            "closure": collate,
            "partial": functools.partial(scale, rng=np.random.default_rng(1)),
            "method": Augment().__init__,
        }
    )
    assert [p for p, _ in found.rngs] == [
        "closure.__closure__[0].cell_contents",
        "method.__self__.rng",
        "partial.keywords['rng']",
        "slots.rng",
    ]


def test_budget_stops_the_walk_and_names_where() -> None:
    chain = Node()
    node = chain
    for _ in range(30):
        node.next = Node()  # type: ignore[attr-defined]
        node = node.next  # type: ignore[attr-defined]
    node.rng = np.random.default_rng(0)  # type: ignore[attr-defined]
    found = discover({"d": chain}, budget=20)
    assert found.rngs == []
    assert found.visited == 20
    assert found.stopped_at is not None
    assert found.stopped_at.startswith("d.next.next")
    assert [p for p, _ in discover({"d": chain}, budget=100).rngs] == ["d" + ".next" * 30 + ".rng"]


def test_budget_warning_is_given_once_with_path_and_fix() -> None:
    chain = [[[[Node()]]]]
    found = discover({"d": chain}, budget=2)
    assert found.stopped_at == "d[0][0]"
    record = warned(found, discover({"d": chain}, budget=2))
    assert record == [
        (
            "d[0][0]: the RNG search read 2 objects and stopped here; RNGs beyond it are not "
            "reseeded; draw from reproloader.get_context().rng (or take an rng= argument), or "
            "raise ReproConfig(rng_search_budget=...)"
        )
    ]


def test_long_lists_of_plain_data_cost_nothing() -> None:
    class Records:
        def __init__(self) -> None:
            self.paths = [f"img_{i}.jpg" for i in range(10**6)]
            self.samples = [(f"img_{i}.jpg", i) for i in range(10**5)]
            self.labels = {i: [i, {"box": [0, 1]}] for i in range(10**5)}
            self.rng = np.random.default_rng(0)

    found = discover({"dataset": Records()}, budget=50)
    assert [p for p, _ in found.rngs] == ["dataset.rng"]
    assert found.stopped_at is None
    assert found.visited < 10


def test_long_lists_of_pipeline_objects_are_walked_under_the_budget() -> None:
    augments = [Node(rng=np.random.default_rng(i)) for i in range(100)]
    found = discover({"d": augments}, budget=1000)
    assert len(found.rngs) == 100
    assert found.stopped_at is None


class ForeignRng:
    """An RNG of a library the loader does not know: it draws and it has a seed."""

    def seed(self, value: int) -> None:
        self.value = value

    def random(self) -> float:
        return 0.5


def test_rngs_that_cannot_be_reseeded_are_reported_not_returned() -> None:
    holder = Node(
        system=random.SystemRandom(),
        bits=np.random.PCG64(0),
        other=ForeignRng(),
        fine=np.random.default_rng(0),
    )
    found = discover({"dataset": holder})
    assert [p for p, _ in found.rngs] == ["dataset.fine"]
    assert found.foreign == [
        ("dataset.bits", "PCG64"),
        ("dataset.other", "ForeignRng"),
        ("dataset.system", "SystemRandom"),
    ]
    assert warned(found, found) == [
        f"dataset.{name}: {kind} cannot be reseeded in place by the loader; pass a numpy "
        "Generator (rng=...) or draw from reproloader.get_context().rng"
        for name, kind in [("bits", "PCG64"), ("other", "ForeignRng"), ("system", "SystemRandom")]
    ]


def test_ordinary_objects_are_not_taken_for_rngs() -> None:
    class Transform:
        def __init__(self) -> None:
            self.p = 0.5

        def __call__(self, x: Any) -> Any:
            return x

        def get_params(self) -> dict[str, Any]:
            return {}

    found = discover({"t": [Transform(), torch.nn.Linear(2, 2), np.zeros(3), random]})
    assert found.foreign == []
    assert found.rngs == []
    assert warned(found) == []
