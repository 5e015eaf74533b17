"""Two threads, each iterating its own ReproLoader with ``num_workers=0``.

The global RNGs are process-wide, so each loader's window (save the caller's states,
reseed, produce the batch, restore) holds one process-wide lock: the threads take
turns batch by batch and each gets exactly the batches it gets alone.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from reproloader import ContextError, ReproLoader, get_context
from reproloader._runtime import isolation


class Interleaving(Dataset[torch.Tensor]):
    """Draws from every RNG a loader reseeds, yielding the GIL between draws."""

    def __len__(self) -> int:
        return 48

    def __getitem__(self, i: int) -> torch.Tensor:
        values = [float(i)]
        for draw in (
            random.random,
            lambda: float(np.random.random()),
            lambda: float(torch.rand(())),
            lambda: float(get_context().rng.random()),
            lambda: float(get_context().seed),
        ):
            time.sleep(0)  # let the other thread run here, in the middle of a batch
            values.append(draw())
        return torch.tensor(values, dtype=torch.float64)


def batches(seed: int, scope: str, epochs: int = 2) -> list[torch.Tensor]:
    loader = ReproLoader(
        Interleaving(), batch_size=4, shuffle=True, seed=seed, config={"rng_scope": scope}
    )
    out = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        out.extend(loader)
    return out


@pytest.mark.parametrize("scope", ["batch", "sample", "worker"])
def test_two_threads_each_get_their_single_threaded_batches(scope: str) -> None:
    alone = {seed: batches(seed, scope) for seed in (1, 2)}
    caller = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    results: dict[int, Any] = {}
    start = threading.Barrier(2)

    def run(seed: int) -> None:
        start.wait()
        try:
            results[seed] = batches(seed, scope)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            results[seed] = error

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hangs"
    for seed in (1, 2):
        assert not isinstance(results[seed], BaseException), results[seed]
        got = torch.stack(results[seed])
        assert torch.equal(got, torch.stack(alone[seed])), f"seed {seed}: not its batches alone"
    # Each dataset saw its own loader's context (the seed column).
    assert {float(b[0, -1]) for b in results[1]} == {1.0}
    assert {float(b[0, -1]) for b in results[2]} == {2.0}
    # Nothing drew outside a window, so the caller's states are untouched.
    assert random.getstate() == caller[0]
    assert np.array_equal(np.random.get_state()[1], caller[1][1])
    assert torch.equal(torch.get_rng_state(), caller[2])


def test_get_context_after_threads_iterated_still_raises() -> None:
    """Outside every window the context is cleared again, whichever thread ran last."""
    errors: list[BaseException] = []

    def run(seed: int) -> None:
        batches(seed, "batch", epochs=1)
        try:
            get_context()
        except ContextError as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(errors) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_process_forked_while_another_thread_is_in_a_window_can_open_one() -> None:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with isolation.WINDOW_LOCK:
            held.set()
            release.wait(timeout=60)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(timeout=60)
    pid = os.fork()
    if pid == 0:  # the child: the holding thread does not exist here
        os._exit(0 if isolation.WINDOW_LOCK.acquire(timeout=10) else 1)
    release.set()
    thread.join(timeout=60)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
