"""``ReproConfig``: the loader's reproducibility settings as one validated, frozen object.

A config can be shared by several loaders (train and validation) and stored with
a run; a field that does not apply to one loader, such as ``start_method`` for a
loader with ``num_workers=0``, simply has nothing to act on there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reproloader.context import RngScope
from reproloader.seeding import MAX_SEED

__all__ = ["GlobalRngName", "ReproConfig", "StartMethod"]

StartMethod = Literal["fork", "spawn", "forkserver"]
GlobalRngName = Literal["numpy", "random", "torch"]


class ReproConfig(BaseModel):
    """How a ReproLoader seeds its data.

    Attributes:
        seed: the root seed, an int in ``[0, 2**128)``. ``None`` draws one from
            torch's global RNG (or the loader's ``generator``) when the loader is
            built, so ``torch.manual_seed(s)`` before it makes the run repeatable.
        rng_scope: what one random stream covers. ``"batch"``: each batch's
            randomness derives from (seed, epoch, rank, batch index); results do not
            depend on ``num_workers`` or the start method. ``"sample"``: each
            sample's from (seed, epoch, dataset index); a sample's augmentation also
            does not depend on batch size or world size. ``"worker"``: one stream per
            worker per epoch, the classic model; results depend on ``num_workers``.
        start_method: the multiprocessing start method for workers; ``None`` keeps
            the platform's default (fork on Linux, which reseeding makes safe).
        reseed_globals: which process-wide RNGs are reseeded before each unit:
            python ``random``, numpy's legacy global RNG, torch's CPU generator. Drop
            one only if no dataset, transform or collate_fn draws from it: its draws
            would then depend on what ran before in the process.
        reseed_dataset_rngs: reseed, in place and before each unit, the numpy
            ``Generator``/``RandomState``, ``random.Random`` and ``torch.Generator``
            objects stored on the dataset (and on samplers you pass in). This fixes
            the classic bug of a Generator created in ``__init__`` that every worker
            copies; turn it off if such an RNG must keep its own stream.

    Example:
        >>> ReproConfig(seed=7, rng_scope="sample")
        ReproConfig(seed=7, rng_scope='sample', start_method=None, ...)
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    seed: int | None = Field(default=None, ge=0, lt=MAX_SEED, strict=True)
    rng_scope: RngScope = "batch"
    start_method: StartMethod | None = None
    reseed_globals: frozenset[GlobalRngName] = frozenset({"numpy", "random", "torch"})
    reseed_dataset_rngs: bool = Field(default=True, strict=True)
