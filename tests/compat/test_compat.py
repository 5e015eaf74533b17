"""States and checkpoints written by earlier versions load, and resume exactly, forever.

Each ``v<N>/`` directory holds what ``make_fixtures.py`` wrote when the state format was
version ``N``, and a manifest naming the loader each file came from. Nothing here is
ever regenerated: a test that fails means this version can no longer resume what an
earlier one saved, which the compatibility policy (docs/resume.md) forbids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from reproloader import StateVersionError
from reproloader.checkpoint import UnverifiedCheckpointWarning, load_checkpoint
from tests.compat.make_fixtures import BUILDERS, model_state

HERE = Path(__file__).resolve().parent
VERSIONS = sorted(HERE.glob("v*/manifest.json"))


def fixtures(kind: str) -> list[Any]:
    found = []
    for manifest in VERSIONS:
        for name, entry in json.loads(manifest.read_text())["files"].items():
            if entry["kind"] == kind:
                found.append(
                    pytest.param(manifest.parent / name, entry, id=f"{manifest.parent.name}/{name}")
                )
    return found


def refused_by_policy(state: dict[str, Any]) -> bool:
    """Whether the compatibility policy (docs/resume.md) refuses ``state`` here.

    Version 2 changed the numbers of an epoch (the shuffle order, torch's seeds),
    version 3 python random's, and version 4 the shuffle order of at most 8192 samples:
    an older state taken mid-epoch whose rest would differ is refused, naming both
    fixes, rather than resumed into other numbers.
    """
    mid_epoch = not state["finished"] and state["position"] > 0
    reseeded = state["reseed_globals"]
    shuffled = "shuffle" in str(state["sampler"]) and not state["sampler"].startswith("sampler:")
    small = isinstance(state["dataset_length"], int) and state["dataset_length"] <= 8192
    return mid_epoch and (
        (state["version"] == 1 and "torch" in reseeded)
        or (state["version"] < 3 and "random" in reseeded)
        or (state["version"] < 4 and shuffled and small)
    )


def assert_resumes_where_it_was_taken(state: dict[str, Any], builder: str, batches: int) -> None:
    """A fresh loader given ``state`` continues as an uninterrupted run does after ``batches``.

    Or, where the compatibility policy refuses it, refuses it by name.
    """
    if refused_by_policy(state):
        with pytest.raises(StateVersionError, match=r"format version [123] .*set_epoch"):
            BUILDERS[builder]().load_state_dict(state)
        return
    resumed = BUILDERS[builder]()
    resumed.load_state_dict(state)
    rest = [batch for _ in range(2) for batch in resumed]  # the rest of the epoch, one more

    fresh = BUILDERS[builder]()
    uninterrupted: list[torch.Tensor] = []
    while len(uninterrupted) < batches + len(rest):
        epoch = list(fresh)
        assert epoch, "an empty epoch"
        uninterrupted += epoch
    expected = uninterrupted[batches : batches + len(rest)]
    per_epoch = len(list(BUILDERS[builder]()))
    assert len(rest) == 2 * per_epoch - batches % per_epoch, "not resumed where it was taken"
    assert len(rest) == len(expected)
    for i, (got, want) in enumerate(zip(rest, expected, strict=True)):
        assert torch.equal(got, want), f"batch {batches + i} differs from the uninterrupted run"


def test_there_are_fixtures_of_every_kind() -> None:
    assert VERSIONS, "no tests/compat/v*/manifest.json"
    assert len(fixtures("state")) >= 3
    assert len(fixtures("checkpoint")) >= 2


@pytest.mark.parametrize(("path", "entry"), fixtures("state"))
def test_an_old_state_resumes_exactly_where_it_was_taken(path: Path, entry: dict[str, Any]) -> None:
    state = torch.load(path, weights_only=True)
    assert_resumes_where_it_was_taken(state, entry["builder"], entry["batches"])


@pytest.mark.parametrize(("path", "entry"), fixtures("checkpoint"))
def test_an_old_checkpoint_loads_and_its_loader_state_resumes(
    path: Path, entry: dict[str, Any]
) -> None:
    if entry["format"] == 0:
        with pytest.warns(UnverifiedCheckpointWarning):
            checkpoint = load_checkpoint(path)
    else:
        checkpoint = load_checkpoint(path)
    assert checkpoint.keys() == {"model", "loader", "rng", "step"}
    assert checkpoint["step"] == entry["batches"]
    want = model_state()
    assert checkpoint["model"].keys() == want.keys()
    for name, tensor in want.items():
        assert torch.equal(checkpoint["model"][name], tensor), name
    assert_resumes_where_it_was_taken(checkpoint["loader"], entry["builder"], entry["batches"])
