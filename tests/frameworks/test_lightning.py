"""ReproLoader inside Lightning's Trainer (nox -s integration installs Lightning)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")

from tests.helpers import run_script

SCRIPT = Path(__file__).with_name("_lightning_run.py")


def run(mode: str, phase: str, out: Path) -> None:
    run_script(SCRIPT, mode, phase, str(out))


def records(out: Path, phase: str, rank: int) -> list[dict[str, Any]]:
    path = out / f"{phase}_rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def steps(rows: list[dict[str, Any]]) -> dict[tuple[int, int], tuple[list[int], list[float]]]:
    return {(r["epoch"], r["index"]): (r["ids"], r["values"]) for r in rows}


# Each mode's reference run is made once per process (a module-scoped fixture would be
# made again whenever an xdist process runs another module's test in between); the tests
# of one mode run on one xdist process (noxfile: --dist loadgroup), the modes in parallel.
_REFERENCES: dict[str, Path] = {}


@pytest.fixture(
    params=[
        pytest.param(m, marks=pytest.mark.xdist_group(f"lightning-{m}"))
        for m in ("single", "ddp", "ddp-shard")
    ],
)
def mode(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, int]:
    if request.param not in _REFERENCES:
        out = tmp_path_factory.mktemp(request.param)
        run(request.param, "ref", out)
        _REFERENCES[request.param] = out
    return request.param, _REFERENCES[request.param], 1 if request.param == "single" else 2


def test_batches_repeat_and_the_epoch_counter_follows_the_trainer(
    mode: tuple[str, Path, int], tmp_path: Path
) -> None:
    name, out, ranks = mode
    run(name, "ref", tmp_path)
    for rank in range(ranks):
        reference = records(out, "ref", rank)
        assert len({r["epoch"] for r in reference}) == 3
        assert all(r["loader_epoch"] == r["epoch"] for r in reference)
        assert records(tmp_path, "ref", rank) == reference
        epochs = [[r["values"] for r in reference if r["epoch"] == e] for e in range(3)]
        assert epochs[0] != epochs[1] != epochs[2]


def test_ranks_split_the_data(mode: tuple[str, Path, int]) -> None:
    name, out, ranks = mode
    if ranks == 1:
        pytest.skip("one process")
    for epoch in range(3):
        ids = [
            i
            for rank in range(ranks)
            for r in records(out, "ref", rank)
            if r["epoch"] == epoch
            for i in r["ids"]
        ]
        assert sorted(ids) == list(range(40)), "each sample once per epoch across ranks"
    expected = "ShardedSampler" if name == "ddp-shard" else "SequentialSampler"
    assert records(out, "ref", 0)[0]["sampler"] == expected  # Lightning left shard=True alone


@pytest.mark.parametrize("where", ["mid", "end"])
def test_resume_through_lightning_checkpoints(
    mode: tuple[str, Path, int], where: str, tmp_path: Path
) -> None:
    name, out, ranks = mode
    run(name, f"stop_{where}", tmp_path)
    run(name, f"resume_{where}", tmp_path)
    for rank in range(ranks):
        reference = steps(records(out, "ref", rank))
        resumed = records(tmp_path, f"resume_{where}", rank)
        assert resumed, "the resumed run trained"
        for row in resumed:
            assert row["loader_epoch"] == row["epoch"]
            assert (row["ids"], row["values"]) == reference[(row["epoch"], row["index"])], (
                rank,
                row["epoch"],
                row["index"],
            )
        first = (resumed[0]["epoch"], resumed[0]["index"])
        per_epoch = 40 // (4 * ranks)
        assert first == (divmod(7, per_epoch) if where == "mid" else (1, 0))
