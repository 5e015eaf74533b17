"""The run ledger: what it records, resume, torn lines, and the diff's verdicts and words."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xxhash
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import Dataset

import reproloader
from reproloader import Ledger, ReproLoader, cli, diff_ledgers
from reproloader._diagnose.experiments import rebuild
from reproloader._runtime.ledger import FULL_BYTES, digest_batch, digest_indices
from reproloader.ledger import read_ledger


class Noisy(Dataset[torch.Tensor]):
    """A sample is its index plus a random draw: values depend on the seed and the unit."""

    def __init__(self, n: int = 24) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.full((3,), float(i)) + torch.rand(3)


def run(directory: Path, *, epochs: int = 2, **kwargs: Any) -> list[torch.Tensor]:
    kwargs = {"batch_size": 4, "shuffle": True, "seed": 0, **kwargs}
    loader = ReproLoader(Noisy(kwargs.pop("n", 24)), ledger=directory, **kwargs)
    return [batch for _ in range(epochs) for batch in loader]


def lines(directory: Path, rank: int = 0) -> list[dict[str, Any]]:
    text = (directory / f"rank-{rank:05d}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs of the reference run: seed 0, batch scope, no workers."""
    directory = tmp_path_factory.mktemp("base")
    run(directory)
    return directory


# -- what is written --------------------------------------------------------------------


def test_header_records_what_makes_the_run(base: Path) -> None:
    header = lines(base)[0]
    assert header["kind"] == "header"
    assert header["format"] == "reproloader-ledger"
    assert header["version"] == 1
    assert header["digest"] == "xxh3_128"
    assert header["content"] == "sampled"
    expected = {
        "seed": 0,
        "rng_scope": "batch",
        "world_size": 1,
        "rank": 0,
        "num_workers": 0,
        "dataset_length": 24,
        "dataset_type": f"{Noisy.__module__}.Noisy",
        "sampler": "shuffle",
        "batch_size": 4,
        "drop_last": False,
        "shuffle": True,
        "resumed_at": None,
    }
    assert {key: header[key] for key in expected} == expected
    assert header["config"]["rng_scope"] == "batch"
    assert header["config"]["reseed_globals"] == ["numpy", "random", "torch"]  # sorted
    assert header["config"]["determinism"]["cudnn_benchmark"] is False
    assert header["versions"] == {
        "reproloader": reproloader.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": header["versions"]["python"],
    }


def test_one_line_per_batch_with_epoch_batch_step_indices_and_digests(
    base: Path, tmp_path: Path
) -> None:
    records = lines(base)[1:]
    assert [(r["epoch"], r["batch"], r["step"]) for r in records] == [
        (e, b, 6 * e + b) for e in range(2) for b in range(6)
    ]
    # The sampler's own order for epoch 0 is what the ledger recorded.
    loader = ReproLoader(Noisy(), batch_size=4, shuffle=True, seed=0)
    assert [r["indices"] for r in records[:6]] == [list(b) for b in loader.batch_sampler]
    batches = run(tmp_path / "again", epochs=2)
    assert [r["content_digest"] for r in records] == [digest_batch(b, "sampled") for b in batches]
    assert len({r["indices_digest"] for r in records}) == len(records)


def test_steps_are_epoch_times_batches_per_epoch_plus_batch(tmp_path: Path) -> None:
    loader = ReproLoader(Noisy(), batch_size=4, shuffle=True, seed=0, ledger=tmp_path)
    loader.set_epoch(3)
    list(loader)
    assert [r["step"] for r in lines(tmp_path)[1:]] == [18, 19, 20, 21, 22, 23]


def test_workers_write_the_same_lines_as_the_main_process(base: Path, tmp_path: Path) -> None:
    run(tmp_path, num_workers=2)
    assert lines(tmp_path)[1:] == lines(base)[1:]
    assert lines(tmp_path)[0]["num_workers"] == 2


class Stream(torch.utils.data.IterableDataset[torch.Tensor]):
    def __iter__(self) -> Any:
        return (torch.full((2,), float(i)) + torch.rand(2) for i in range(10))


def test_an_iterable_dataset_records_content_and_counted_batches(tmp_path: Path) -> None:
    loader = ReproLoader(Stream(), batch_size=4, seed=0, ledger=tmp_path)
    batches = [batch for _ in range(2) for batch in loader]
    records = lines(tmp_path)[1:]
    assert [(r["epoch"], r["batch"], r["step"]) for r in records] == [
        (0, 0, 0),
        (0, 1, 1),
        (0, 2, 2),
        (1, 0, 3),
        (1, 1, 4),
        (1, 2, 5),
    ]
    assert {r["indices_digest"] for r in records} == {None}
    assert [r["content_digest"] for r in records] == [digest_batch(b, "sampled") for b in batches]


def test_a_fresh_run_refuses_a_ledger_that_holds_a_run(base: Path) -> None:
    with pytest.raises(FileExistsError, match="already holds a run; a fresh run"):
        run(base)


def test_no_ledger_keeps_the_users_collate_and_writes_nothing(tmp_path: Path) -> None:
    loader = ReproLoader(Noisy(), batch_size=4, seed=0)
    assert loader.ledger is None
    assert loader.iterator_view().__dict__.get("collate_fn") is None
    assert loader.batch_hook() is None


def test_experiments_on_a_loader_never_write_its_ledger(tmp_path: Path) -> None:
    loader = ReproLoader(Noisy(), batch_size=4, seed=0, ledger=tmp_path)
    assert rebuild(loader, num_workers=0).ledger is None


def test_ledger_argument_is_checked() -> None:
    with pytest.raises(TypeError, match=r"ledger= takes a directory path or a reproloader\.Ledger"):
        ReproLoader(Noisy(), ledger=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="takes 'sampled' or 'full', got 'most'"):
        Ledger("x", content="most")  # type: ignore[arg-type]


def test_indices_can_be_left_out(tmp_path: Path) -> None:
    loader = ReproLoader(Noisy(), batch_size=4, seed=0, ledger=Ledger(tmp_path, indices=False))
    list(loader)
    assert "indices" not in lines(tmp_path)[1]
    assert lines(tmp_path)[1]["indices_digest"]


# -- the digest ---------------------------------------------------------------------------


def test_digest_sees_dtype_shape_structure_and_every_byte_of_small_tensors() -> None:
    x = torch.arange(12, dtype=torch.float32)
    seen = {
        digest_batch(x),
        digest_batch(x.reshape(3, 4)),
        digest_batch(x.to(torch.float64)),
        digest_batch([x]),
        digest_batch((x,)),
        digest_batch({"x": x}),
        digest_batch(x.numpy()),
        digest_batch(torch.cat([x[:-1], torch.tensor([11.000001])])),
    }
    assert len(seen) == 8
    assert digest_batch(x) == digest_batch(torch.arange(12, dtype=torch.float32))
    assert digest_batch(x[::2]) == digest_batch(x[::2].contiguous())


_INDEX = st.one_of(st.integers(), st.booleans(), st.integers(-5, 5).map(np.int64))


@given(st.one_of(st.lists(_INDEX), st.lists(st.lists(st.integers(), max_size=3)), st.integers()))
def test_indices_text_is_json_and_the_digest_is_of_that_text(indices: Any) -> None:
    # Lists of plain ints take a fast path; every path must write what json.dumps
    # writes of the indices as Python values.
    digest, text = digest_indices(indices)
    if isinstance(indices, list):
        indices = [int(i) if isinstance(i, np.integer) else i for i in indices]
    assert text == json.dumps(indices, separators=(",", ":"))
    assert digest == xxhash.xxh3_128_hexdigest(text.encode())


def test_sampled_digest_sees_a_changed_block_but_may_miss_one_value() -> None:
    big = torch.zeros(FULL_BYTES)  # 4 MiB of float32: sampled
    moved = big.clone()
    moved[:64] = 1.0  # the first 256-byte block is always sampled
    one = big.clone()
    one[100] = 1.0  # the second block is not (1 block in 64 is)
    assert digest_batch(moved, "sampled") != digest_batch(big, "sampled")
    assert digest_batch(one, "sampled") == digest_batch(big, "sampled")
    assert digest_batch(one, "full") != digest_batch(big, "full")


# -- resume -----------------------------------------------------------------------------------


def test_resume_continues_the_ledger_and_records_the_resume_point(
    base: Path, tmp_path: Path
) -> None:
    first = ReproLoader(Noisy(), batch_size=4, shuffle=True, seed=0, ledger=tmp_path)
    it = iter(first)
    for _ in range(4):
        next(it)
    state = first.state_dict()
    next(it)  # consumed after the checkpoint: replaced by the resumed run's
    second = ReproLoader(Noisy(), batch_size=4, shuffle=True, seed=0, ledger=tmp_path)
    second.load_state_dict(state)
    for _ in range(2):
        list(second)
    written = lines(tmp_path)
    headers = [i for i, line in enumerate(written) if line["kind"] == "header"]
    assert headers == [0, 6]
    assert written[6]["resumed_at"] == {"epoch": 0, "batch": 4, "step": 4}
    assert [(r["epoch"], r["batch"], r["step"]) for r in written[7:9]] == [(0, 4, 4), (0, 5, 5)]
    # What the run consumed, resumes applied, is the uninterrupted run's record.
    resumed = read_ledger(tmp_path)[0].records()
    assert list(resumed.values()) == list(read_ledger(base)[0].records().values())
    assert diff_ledgers(base, tmp_path).same


def test_the_same_loader_resumed_in_place_records_its_resume(tmp_path: Path) -> None:
    loader = ReproLoader(Noisy(), batch_size=4, shuffle=True, seed=0, ledger=tmp_path)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    loader.load_state_dict(state)
    list(loader)
    written = lines(tmp_path)
    assert written[2]["kind"] == "header"
    assert written[2]["resumed_at"] == {"epoch": 0, "batch": 1, "step": 1}
    assert [r["step"] for r in written[3:]] == [1, 2, 3, 4, 5]


# -- torn lines ---------------------------------------------------------------------------


def test_a_torn_last_line_is_skipped_and_reported(base: Path, tmp_path: Path) -> None:
    torn = tmp_path / "rank-00000.jsonl"
    text = (base / "rank-00000.jsonl").read_text()
    torn.write_text(text[: len(text) - 40])  # the last line cut short, as by SIGKILL
    ledger = read_ledger(tmp_path)[0]
    assert ledger.torn == [(13, "last")]
    assert len(ledger.records()) == 11
    diff = diff_ledgers(base, tmp_path)
    assert diff.first is not None
    assert (diff.first.epoch, diff.first.batch, diff.first.what) == (1, 5, "missing in B")
    assert any("the last line (13) is torn" in note for note in diff.notes)


# -- the diff's words ------------------------------------------------------------------------


def edited(base: Path, directory: Path, **changes: Any) -> Path:
    """A copy of the base ledger whose header has ``changes`` (dotted keys for nested)."""
    written = lines(base)
    for key, value in changes.items():
        where = written[0]
        *path, last = key.split(".")
        for part in path:
            where = where[part]
        where[last] = value
    directory.mkdir()
    (directory / "rank-00000.jsonl").write_text("".join(json.dumps(w) + "\n" for w in written))
    return directory


@pytest.mark.parametrize(
    ("changes", "cause", "same"),
    [
        ({"seed": 1}, "seed 0 vs 1", False),
        ({"versions.torch": "2.15.0"}, f"torch {torch.__version__} vs 2.15.0", True),
        ({"dataset_length": 50_000}, "dataset length 24 vs 50,000", False),
        (
            {"rng_scope": "worker", "num_workers": 4},
            "worker scope with 0 vs 4 workers",
            False,
        ),
        (
            {"num_workers": 4},
            "num_workers 0 vs 4 (does not change the batches in batch scope)",
            True,
        ),
    ],
)
def test_diff_names_the_header_field_that_changed(
    base: Path, tmp_path: Path, changes: dict[str, Any], cause: str, same: bool
) -> None:
    diff = diff_ledgers(base, edited(base, tmp_path / "b", **changes))
    assert cause in [c.cause for c in diff.changes]
    assert diff.first is None
    assert diff.same is same


def test_diff_exit_statuses_and_output(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(tmp_path / "seed1", seed=1)
    assert cli.main(["diff", str(base), str(base)]) == 0
    assert "the runs are the same" in capsys.readouterr().out
    assert cli.main(["diff", str(base), str(tmp_path / "seed1")]) == 1
    out = capsys.readouterr().out
    assert "first difference at epoch 0, batch 0, rank 0 (step 0): the indices differ" in out
    assert "  seed 0 vs 1\n" in out
    assert cli.main(["diff", str(base), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"reproloader diff: {tmp_path / 'missing'} does not exist")
    (tmp_path / "junk.jsonl").write_text('{"a": 1}\n')
    assert cli.main(["diff", str(base), str(tmp_path / "junk.jsonl")]) == 2
    assert "not a reproloader ledger line" in capsys.readouterr().err


def test_diff_says_when_only_the_values_differ(base: Path, tmp_path: Path) -> None:
    written = lines(base)
    written[9]["content_digest"] = "0" * 32  # epoch 1, batch 2
    (tmp_path / "rank-00000.jsonl").write_text("".join(json.dumps(w) + "\n" for w in written))
    diff = diff_ledgers(base, tmp_path)
    assert diff.first is not None
    assert (diff.first.epoch, diff.first.batch, diff.first.rank) == (1, 2, 0)
    assert diff.first.what == "values"
    assert "the same indices, other values" in diff.first.describe()


@pytest.mark.parametrize(
    ("dropped", "first", "gap", "words"),
    [
        (range(9, 13), (1, 2), "after", "stops before it"),
        (range(1, 4), (0, 0), "before", "starts after it: a run started from a later checkpoint"),
        (
            [5],
            (0, 4),
            "around",
            "has batches before and after it: skipped with skip_batches/skip_steps, or a torn line",
        ),
    ],
)
def test_diff_says_where_the_run_that_lacks_a_batch_has_batches(
    base: Path,
    tmp_path: Path,
    dropped: list[int] | range,
    first: tuple[int, int],
    gap: str,
    words: str,
) -> None:
    written = [w for n, w in enumerate(lines(base)) if n not in dropped]  # line 0: the header
    (tmp_path / "rank-00000.jsonl").write_text("".join(json.dumps(w) + "\n" for w in written))
    for a, b, what, lacking in (
        (base, tmp_path, "missing in B", "B"),
        (tmp_path, base, "missing in A", "A"),
    ):
        diff = diff_ledgers(a, b)
        assert diff.first is not None
        assert ((diff.first.epoch, diff.first.batch), diff.first.what, diff.first.gap) == (
            first,
            what,
            gap,
        )
        other = "B" if lacking == "A" else "A"
        assert diff.first.describe().endswith(f": recorded in {other} only ({lacking} {words})")


def test_ledger_command_prints_the_indices_of_steps(
    base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["ledger", str(base), "--steps", "5-6", "99"]) == 0
    out = capsys.readouterr().out.splitlines()
    records = lines(base)
    assert out == [
        f"rank 0 step 5: epoch 0 batch 5 indices {json.dumps(records[6]['indices'])}",
        f"rank 0 step 6: epoch 1 batch 0 indices {json.dumps(records[7]['indices'])}",
        "rank 0 step 99: not recorded",
    ]
    assert cli.main(["ledger", str(base)]) == 0
    assert "12 batches, seed 0, batch scope" in capsys.readouterr().out
    assert cli.main(["ledger", str(base), "--steps", "x"]) == 2


def build_loader() -> ReproLoader[Any]:
    """The `reproloader batch` target of the test below."""
    return ReproLoader(Noisy(), batch_size=4, shuffle=True, seed=0)


def test_batch_command_writes_the_batch_the_run_had(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.pt"
    target = f"{__name__}:build_loader"
    assert cli.main(["batch", target, "--ledger", str(base), "--step", "8", "--out", str(out)]) == 0
    batch = torch.load(out, weights_only=True)
    assert digest_batch(batch, "sampled") == lines(base)[9]["content_digest"]
    assert cli.main(["batch", target, "--epoch", "1", "--batch", "2", "--out", str(out)]) == 0
    assert torch.equal(torch.load(out, weights_only=True), batch)


class Asked(torch.utils.data.DataLoader[Any]):
    """A loader whose batch_at says what it was asked (the CLI's side of `batch`, alone)."""

    def batch_at(
        self, epoch: int, batch: int, *, rank: int = 0, world_size: int | None = None
    ) -> dict[str, int | None]:
        return {"epoch": epoch, "batch": batch, "rank": rank, "world_size": world_size}


def asked_loader() -> Asked:
    return Asked(Noisy())


def test_batch_command_asks_batch_at_for_the_steps_position(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.pt"
    target = f"{__name__}:asked_loader"
    assert cli.main(["batch", target, "--ledger", str(base), "--step", "8", "--out", str(out)]) == 0
    asked = {"epoch": 1, "batch": 2, "rank": 0, "world_size": 1}  # the ledger's world size
    assert torch.load(out, weights_only=True) == asked
    args = ["--epoch", "3", "--batch", "4", "--rank", "1", "--out", str(out)]
    assert cli.main(["batch", target, *args, "--world-size", "2"]) == 0
    asked = {"epoch": 3, "batch": 4, "rank": 1, "world_size": 2}
    assert torch.load(out, weights_only=True) == asked


def test_batch_command_usage_errors(base: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "b.pt")
    target = f"{__name__}:build_loader"
    assert cli.main(["batch", target, "--out", out]) == 2
    assert cli.main(["batch", target, "--step", "3", "--out", out]) == 2
    assert cli.main(["batch", target, "--ledger", str(base), "--step", "99", "--out", out]) == 2
    plain = f"{__name__}:plain_loader"
    assert cli.main(["batch", plain, "--epoch", "0", "--batch", "0", "--out", out]) == 2


def plain_loader() -> torch.utils.data.DataLoader[Any]:
    return torch.utils.data.DataLoader(Noisy())
