"""Hugging Face datasets: map-style with_transform, and an iterable dataset's shuffle.

A map-style ``Dataset`` whose transform draws from torch's global RNG is exact as it
is. An ``IterableDataset`` with ``.shuffle(seed, buffer_size)`` repeats and has
epochs that differ, but its ``state_dict`` leaves out the shuffle buffer, so a
resume through it is only as exact as that state: the loader warns as the state is
taken (0 and 2 workers), the audit reports it, and ``iterable_resume="replay"`` resumes
it exactly.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
import torch

from reproloader import ReproConfig, ReproLoader, audit
from tests.frameworks._pipelines import check_exact, require, resumed, run

datasets = require("datasets")
datasets.disable_progress_bars()


def augment(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {
        "x": [torch.tensor(v) + torch.rand(()) for v in batch["x"]],
        "i": batch["i"],
    }


def table(n: int) -> Any:
    return datasets.Dataset.from_dict({"x": [float(i) for i in range(n)], "i": list(range(n))})


def make_map(**kwargs: Any) -> ReproLoader[Any]:
    return ReproLoader(
        table(16).with_transform(augment), batch_size=4, shuffle=True, seed=0, **kwargs
    )


def stream() -> Any:
    return table(64).to_iterable_dataset(num_shards=4).shuffle(seed=0, buffer_size=16)


def make_stream(**kwargs: Any) -> ReproLoader[Any]:
    return ReproLoader(stream(), batch_size=4, seed=0, **kwargs)


def test_map_style_with_transform_is_exact() -> None:
    check_exact(make_map)


def test_iterable_shuffle_repeats_and_epochs_differ() -> None:
    reference = run(make_stream)
    assert run(make_stream) == reference
    assert reference[0] != reference[1]
    forked = run(make_stream, num_workers=2, multiprocessing_context="fork")
    assert forked == run(make_stream, num_workers=2, multiprocessing_context="fork")
    assert sorted(i for batch in forked[0] for i in batch["i"]) == list(range(64))


LOSSY = re.escape(
    "iterable dataset IterableDataset through its own state_dict(), which does not hold "
    "its whole position: it shuffles with a buffer (.shuffle(buffer_size=...)) and "
    "Hugging Face documents that an IterableDataset's state_dict() leaves the buffer out"
)


def test_iterable_resume_is_only_as_exact_as_its_state_and_the_audit_says_so() -> None:
    # Documented limit (docs/pipelines.md): the shuffle buffer is not in the state.
    with pytest.warns(UserWarning, match=LOSSY):
        rest = resumed(make_stream)
    assert rest != run(make_stream, epochs=1)[0]
    with pytest.warns(UserWarning, match=LOSSY):  # the audit takes a state too
        report = audit(make_stream(), start_methods=(), fresh_processes=False)
    resume = next(f for f in report.findings if f.check == "mid-epoch resume reproduces the stream")
    assert not resume.passed
    assert "dataset.state_dict() of IterableDataset" in resume.evidence


def augmented_stream() -> Any:
    return stream().map(augment, batched=True, batch_size=4)


def make_augmented(**kwargs: Any) -> ReproLoader[Any]:
    return ReproLoader(augmented_stream(), batch_size=4, seed=0, **kwargs)


def saved_after_three(**kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    """The first 3 batches and the state after them, through torch.save and torch.load."""
    loader = make_augmented(**kwargs)
    it = iter(loader)
    head = [plain_batch(next(it)) for _ in range(3)]
    buffer = io.BytesIO()
    torch.save(loader.state_dict(), buffer)
    buffer.seek(0)
    return head, torch.load(buffer, weights_only=True)


def plain_batch(batch: Any) -> Any:
    return {key: [float(v) for v in value] for key, value in sorted(batch.items())}


@pytest.mark.parametrize("workers", [0, 2])
def test_a_lossy_hf_state_is_warned_as_it_is_taken_and_replay_resumes_exactly(
    workers: int,
) -> None:
    # The case of issue 27: shuffle buffer, random augmentation, default config.
    with pytest.warns(UserWarning, match=LOSSY):
        saved_after_three(num_workers=workers)
    replay = ReproConfig(iterable_resume="replay")
    straight = [plain_batch(b) for b in make_augmented(num_workers=workers, config=replay)]
    head, state = saved_after_three(num_workers=workers, config=replay)  # no warning
    resumed_loader = make_augmented(num_workers=workers, config=replay)
    resumed_loader.load_state_dict(state)
    assert head + [plain_batch(b) for b in resumed_loader] == straight
