"""Checkpoints that survive being killed: atomic writes and the training loop's RNG states.

A resumable run saves, every few steps, the model, the optimizer, the loader's
``state_dict()`` and the RNG states of the training loop itself (dropout draws from
torch's global RNG). :func:`save_checkpoint` writes the file so that a kill at any
moment leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reproloader._runtime.rngstate import to_plain

__all__ = ["capture_rng_state", "load_checkpoint", "restore_rng_state", "save_checkpoint"]


def save_checkpoint(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)``, atomically.

    Writes a temporary file next to ``path``, flushes it to disk, renames it over
    ``path`` (an atomic replace on POSIX and Windows) and flushes the directory, so
    a crash or SIGKILL at any point leaves a complete checkpoint behind.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def load_checkpoint(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data only."""
    return torch.load(path, weights_only=True)


def capture_rng_state() -> dict[str, Any]:
    """The training process's RNG states, as plain data for a checkpoint.

    python ``random``, numpy's global RNG, torch's CPU generator and, when CUDA is
    initialized, every CUDA device's generator. ReproLoader never changes them, so
    they are the training loop's own.
    """
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "random": [version, list(internal), gauss],
        "numpy": to_plain(np.random.get_state(legacy=False)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,  # type: ignore[no-untyped-call]
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` returned."""
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {
        "key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32),
        "pos": numpy_state["state"]["pos"],
    }
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
