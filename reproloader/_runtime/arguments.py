"""Checking and resolving ``ReproLoader``'s own arguments (the ones DataLoader lacks)."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.multiprocessing

from reproloader.config import ReproConfig
from reproloader.distributed import ShardedSampler
from reproloader.exceptions import ConfigError
from reproloader.sampler import SeededRandomSampler
from reproloader.seeding import MAX_SEED, check_int

__all__ = [
    "check_config",
    "check_shard",
    "resolve_sampler",
    "resolve_seed",
    "resolve_start_method",
    "warn_unpicklable",
]


def _start_method(context: object) -> str | None:
    """The start method a ``multiprocessing_context`` argument names, if it names one."""
    if context is None:
        return None
    if isinstance(context, str):
        return context
    get = getattr(context, "get_start_method", None)
    return get() if callable(get) else None


def check_shard(iterable: bool, sampler: Any, batch_sampler: Any, batch_size: Any) -> None:
    """Raise unless ``shard=True`` can make the sampler: map-style, no sampler of the user's."""
    if iterable:
        raise ConfigError(
            "shard=True shards map-style datasets; an IterableDataset decides itself "
            "what each rank reads (see get_context().rank and .world_size)"
        )
    if sampler is not None or batch_sampler is not None:
        raise ConfigError(
            "shard=True makes its own sampler; pass shard=True without sampler/"
            "batch_sampler, or keep your sampler (a DistributedSampler) without shard"
        )
    if batch_size is None:
        raise ConfigError(
            "shard=True needs a batch_size: each rank takes batch_size samples per step"
        )


def check_config(
    config: ReproConfig | Mapping[str, Any] | None, rng_scope: str | None = None
) -> ReproConfig:
    """A :class:`ReproConfig` from ``None``, a config, or a mapping of its fields.

    ``rng_scope``, the loader's keyword, sets the config's field of that name; a
    config that sets it to something else is refused.
    """
    if config is None:
        config = ReproConfig()
    elif isinstance(config, Mapping):
        config = ReproConfig(**config)
    elif not isinstance(config, ReproConfig):
        raise TypeError(
            f"config must be a ReproConfig or a mapping of its fields, got {config!r} "
            f"of type {type(config).__name__}"
        )
    if rng_scope is None or rng_scope == config.rng_scope:
        return config
    if "rng_scope" in config.model_fields_set:
        raise ConfigError(
            f"rng_scope={rng_scope!r} contradicts config.rng_scope={config.rng_scope!r}; "
            "pass the scope in one place only"
        )
    return ReproConfig(**{**config.model_dump(exclude_unset=True), "rng_scope": rng_scope})


def resolve_seed(seed: int | None, config: ReproConfig, generator: torch.Generator | None) -> int:
    """The root seed: the argument, else ``config.seed``, else one draw from torch's RNG."""
    if seed is not None:
        if not isinstance(seed, int):  # numpy integers too would pass check_int
            raise TypeError(f"seed must be an int, got {seed!r} of type {type(seed).__name__}")
        check_int("seed", seed, MAX_SEED, shown="2**128")
        if config.seed is not None and config.seed != seed:
            raise ConfigError(
                f"seed={seed} contradicts config.seed={config.seed}; pass the seed in "
                "one place only"
            )
        return seed
    if config.seed is not None:
        return config.seed
    # Once, at construction, exactly as DataLoader draws its base seed: so that
    # torch.manual_seed(s) before building the loader makes the run repeatable.
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


def resolve_start_method(context: Any, config: ReproConfig, num_workers: int) -> Any:
    """The multiprocessing context to use, honouring ``config.start_method``."""
    wanted = config.start_method
    if wanted is None:
        return context
    given = _start_method(context)
    if given is not None and given != wanted:
        raise ConfigError(
            f"multiprocessing_context uses start method {given!r} but "
            f"config.start_method={wanted!r}; set one of them only"
        )
    if context is None and num_workers > 0:
        return torch.multiprocessing.get_context(wanted)
    return context


def resolve_sampler(
    dataset: Any,
    *,
    iterable: bool,
    shuffle: bool | None,
    shard: bool,
    sampler: Any,
    batch_sampler: Any,
    batch_size: int | None,
    drop_last: bool,
    seed: int,
) -> tuple[Any, bool | None]:
    """The sampler to give DataLoader, and the ``shuffle`` to pass along with it.

    ``shard=True`` makes a :class:`ShardedSampler`; ``shuffle=True`` on a map-style
    dataset without a sampler of the user's makes a :class:`SeededRandomSampler`.
    Either way DataLoader then gets ``shuffle=False``, since the sampler shuffles.
    """
    if shuffle is not None and not isinstance(shuffle, (bool, np.bool_)):
        # DataLoader reads any truthy value as True: shuffle="no" would shuffle.
        raise ConfigError(
            f"shuffle must be True, False or None, got {shuffle!r} of type "
            f"{type(shuffle).__name__}; pass shuffle=True or shuffle=False"
        )
    if shard:
        check_shard(iterable, sampler, batch_sampler, batch_size)
        assert batch_size is not None
        sharded = ShardedSampler(
            dataset, seed=seed, shuffle=bool(shuffle), batch_size=batch_size, drop_last=drop_last
        )
        return sharded, False
    if shuffle and not iterable and batch_sampler is None:
        if sampler is None:
            return SeededRandomSampler(dataset, seed=seed), False
        if isinstance(sampler, SeededRandomSampler):
            # A loader rebuilt from its own attributes passes shuffle=True with the
            # sampler that shuffle=True made: that is consistent, not a clash.
            return sampler, False
    return sampler, shuffle


def warn_unpicklable(loader: Any) -> None:
    """Warn, naming each part, when workers could not start because a part is not picklable.

    Called when starting the workers raised. With the spawn and forkserver start
    methods each worker receives the dataset, ``worker_init_fn`` and ``collate_fn``
    pickled (a lambda or a function defined inside another cannot be); with fork it
    receives nothing pickled, so nothing is said.
    """
    method = _start_method(loader.multiprocessing_context)
    if method is None:
        method = torch.multiprocessing.get_start_method()
    if method == "fork":
        return
    culprits = [
        f"{name} ({error})"
        for name in ("dataset", "worker_init_fn", "collate_fn")
        if (error := _pickle_error(getattr(loader, name))) is not None
    ]
    if culprits:
        warnings.warn(
            f"the DataLoader workers could not start: with the {method!r} start method "
            f"each worker receives the loader's parts pickled, and {'; '.join(culprits)} "
            "cannot be pickled. Define it at module level (not as a lambda or inside a "
            "function), or use multiprocessing_context='fork' (Linux).",
            UserWarning,
            stacklevel=6,  # the user's iter(loader)
        )


def _pickle_error(value: object) -> str | None:
    try:
        pickle.dumps(value)
    except Exception as error:  # noqa: BLE001 - any failure to pickle is the finding
        return f"{type(error).__name__}: {error}"
    return None
