"""DataPipes: sharding and shuffling as DataLoader does them, seeded from the tree.

torch's DataLoader treats an ``IterDataPipe`` specially at the start of each pass:
it shards the graph (``sharding_filter``) over ranks and workers, and seeds every
random DataPipe of the graph (``shuffle``) from one seed shared by all of them, so
that each worker shuffles alike and its shard is a true part of the epoch. Here the
shared seed is a node of the tree, ``(seed, epoch)``: the same on every rank and
worker, different from epoch to epoch, and read from no process-wide RNG. A pipe's
own RNG objects are therefore left to this seeding, not reseeded per unit
(:func:`owns_its_rngs`), which would make workers shuffle apart.

Everything else about a DataPipe is an iterable dataset's: its map functions draw
from the unit's reseeded RNGs, and resuming mid-pass replays the pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import IterDataPipe, MapDataPipe
from torch.utils.data.graph_settings import apply_random_seed, apply_sharding

from reproloader.seeding import Purpose, SeedTree

__all__ = ["is_datapipe", "owns_its_rngs", "start_pass"]


def is_datapipe(obj: object) -> bool:
    """Whether ``obj`` is a DataPipe (iterable or map-style)."""
    return isinstance(obj, (IterDataPipe, MapDataPipe))


def owns_its_rngs(obj: object) -> bool:
    """Whether ``obj`` is a random DataPipe, seeded each pass through its ``set_seed``."""
    return isinstance(obj, IterDataPipe) and callable(getattr(type(obj), "set_seed", None))


def pipeline_seed(tree: SeedTree, epoch: int) -> int:
    """The seed a pass's random DataPipes are seeded from: a torch seed, below 2**63."""
    word = tree.node(Purpose.PIPELINE, epoch).generate_state(1, np.uint64)[0]
    return int(word) >> 1


def start_pass(datapipe: Any, tree: SeedTree, epoch: int, *, rank: int, world_size: int) -> None:
    """Shard ``datapipe`` for this process and seed its random DataPipes for ``epoch``.

    Call it in the process that iterates the pipe, before ``iter``. Sharding
    follows DataLoader: over the ranks first, then over each rank's workers.
    """
    if not isinstance(datapipe, IterDataPipe):
        return
    info = torch.utils.data.get_worker_info()
    if info is None:
        apply_sharding(datapipe, world_size, rank)
    else:
        apply_sharding(datapipe, info.num_workers * world_size, info.id * world_size + rank)
    generator = torch.Generator()
    generator.manual_seed(pipeline_seed(tree, epoch))
    apply_random_seed(datapipe, generator)
