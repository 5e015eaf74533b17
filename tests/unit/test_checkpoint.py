from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from reproloader.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def test_save_then_load_round_trips_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    state = {"weights": torch.arange(3.0), "step": 7, "rng": capture_rng_state()}
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["weights"], state["weights"])
    assert loaded["step"] == 7
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self) -> tuple[object, ...]:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"step": 2, "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert list(tmp_path.iterdir()) == [path]


def test_rng_state_round_trips_every_global_rng(tmp_path: Path) -> None:
    np.random.standard_normal()  # a cached legacy gauss deviate is part of the state
    state = capture_rng_state()
    expected = (random.random(), np.random.standard_normal(), torch.rand(()).item())
    save_checkpoint(state, tmp_path / "rng.pt")
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt"))
    assert (random.random(), np.random.standard_normal(), torch.rand(()).item()) == expected
