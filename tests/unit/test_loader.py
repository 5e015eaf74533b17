from __future__ import annotations

import inspect
import pickle
import random
import re
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    WeightedRandomSampler,
)
from torchdata.stateful_dataloader import StatefulDataLoader

from reproloader import ConfigError, ReproConfig, ReproLoader, SeededRandomSampler
from tests.datasets import GlobalDraws, collect, flat, same

DATALOADER_PARAMS = inspect.signature(DataLoader.__init__).parameters


def test_is_a_dataloader_and_a_stateful_dataloader() -> None:
    loader = ReproLoader(GlobalDraws(4))
    assert isinstance(loader, DataLoader)
    assert isinstance(loader, StatefulDataLoader)


def test_signature_has_every_dataloader_parameter_with_the_same_default_and_kind() -> None:
    ours = inspect.signature(ReproLoader.__init__).parameters
    for name, theirs in DATALOADER_PARAMS.items():
        assert name in ours, name
        assert ours[name].default == theirs.default, name
        assert ours[name].kind == theirs.kind, name
    assert ours["seed"].kind is ours["config"].kind is inspect.Parameter.KEYWORD_ONLY


def _every_dataloader_argument() -> dict[str, Any]:
    """A value for every DataLoader parameter that DataLoader itself accepts together."""
    dataset = GlobalDraws(12)
    return {
        "dataset": dataset,
        "batch_size": 3,
        "shuffle": False,
        "sampler": SequentialSampler(dataset),
        "batch_sampler": None,  # exclusive with batch_size/sampler; covered below
        "num_workers": 2,
        "collate_fn": torch.utils.data.default_collate,
        "pin_memory": False,
        "drop_last": True,
        "timeout": 30.0,
        "worker_init_fn": _noop,
        "multiprocessing_context": "spawn",
        "generator": torch.Generator().manual_seed(3),
        "prefetch_factor": 3,
        "persistent_workers": True,
        "pin_memory_device": "",
        "in_order": True,
    }


def _noop(worker_id: int) -> None:
    pass


@pytest.mark.slow
def test_accepts_every_dataloader_parameter_with_the_same_effect() -> None:
    kwargs = _every_dataloader_argument()
    assert set(kwargs) | {"self"} == set(DATALOADER_PARAMS)
    loader = ReproLoader(**kwargs, seed=0)
    reference = DataLoader(**_every_dataloader_argument())
    assert len(loader) == len(reference) == 4
    assert loader.multiprocessing_context.get_start_method() == "spawn"
    got = [b[:, 0].tolist() for b in loader]
    assert got == [b[:, 0].tolist() for b in reference]  # same indices in the same batches
    assert loader.dataset is kwargs["dataset"]


def test_batch_sampler_argument() -> None:
    dataset = GlobalDraws(10)
    batch_sampler = BatchSampler(SequentialSampler(dataset), batch_size=4, drop_last=False)
    loader = ReproLoader(dataset, batch_sampler=batch_sampler, seed=0)
    assert loader.batch_sampler is batch_sampler
    assert [len(b) for b in loader] == [4, 4, 2]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("batch_size", 5),
        ("drop_last", True),
        ("num_workers", 1),
        ("timeout", 5.0),
        ("worker_init_fn", _noop),
        ("prefetch_factor", 4),
        ("persistent_workers", True),
        ("in_order", False),
        ("seed", 99),
        ("shuffle", True),
        ("snapshot_every_n_steps", 3),
    ],
)
def test_arguments_are_readable_under_their_own_name(name: str, value: Any) -> None:
    kwargs: dict[str, Any] = (
        {"num_workers": 1} if name in ("prefetch_factor", "persistent_workers") else {}
    )
    kwargs[name] = value
    loader = ReproLoader(GlobalDraws(10), **kwargs)
    assert getattr(loader, name) == value
    assert name in vars(loader) or name == "multiprocessing_context"


def test_config_is_readable_and_accepts_a_mapping() -> None:
    loader = ReproLoader(GlobalDraws(4), config={"rng_scope": "sample"})
    assert loader.config == ReproConfig(rng_scope="sample")
    assert loader.rng_scope == "sample"


@pytest.mark.parametrize("shuffle", [False, True])
def test_rebuilt_from_its_own_attributes_gives_the_same_batches(shuffle: bool) -> None:
    loader = ReproLoader(
        GlobalDraws(10), batch_size=3, shuffle=shuffle, drop_last=True, num_workers=1
    )
    params = inspect.signature(ReproLoader.__init__).parameters
    kwargs = {n: getattr(loader, n) for n in params if n not in ("self", "batch_sampler")}
    rebuilt = ReproLoader(**kwargs)
    assert rebuilt.seed == loader.seed
    assert same(collect(loader, 2), collect(rebuilt, 2))


def test_epoch_counts_up_with_each_new_iterator() -> None:
    loader = ReproLoader(GlobalDraws(4), batch_size=2)
    seen = []
    for _ in range(3):
        seen.append(loader.epoch)  # before the pass: the epoch it will run
        seen.extend(loader.epoch for _ in loader)
    assert seen == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert loader.epoch == 3  # a pass ran to its end: the next one runs epoch 3


def test_epoch_names_the_next_pass_after_an_ended_pass_and_after_loading_one() -> None:
    loader = ReproLoader(GlobalDraws(4), batch_size=2, seed=0)
    list(loader)
    assert loader.epoch == 1
    state = loader.state_dict()
    assert (state["epoch"], state["finished"]) == (0, True)
    resumed = ReproLoader(GlobalDraws(4), batch_size=2, seed=0)
    resumed.load_state_dict(state)
    assert resumed.epoch == 1
    assert same([list(resumed)], [collect(ReproLoader(GlobalDraws(4), batch_size=2, seed=0), 2)[1]])
    assert resumed.epoch == 2


def test_set_epoch_selects_the_next_pass_exactly() -> None:
    loader = ReproLoader(GlobalDraws(4), batch_size=2, seed=0)
    reference = collect(loader, epochs=4)
    loader.set_epoch(2)
    assert loader.epoch == 2
    assert same([list(loader)], [reference[2]])
    assert loader.epoch == 3  # that pass ended: the next one runs epoch 3
    loader.set_epoch(2)  # the same epoch again gives the same batches
    assert same([list(loader)], [reference[2]])
    assert same([list(loader)], [reference[3]])


def test_a_broken_off_pass_still_counts_as_an_epoch() -> None:
    loader = ReproLoader(GlobalDraws(8), batch_size=2, seed=0)
    next(iter(loader))
    assert loader.epoch == 0
    next(iter(loader))
    assert loader.epoch == 1


@pytest.mark.parametrize(
    ("epoch", "error"), [(-1, ValueError), (2**32, ValueError), ("1", TypeError)]
)
def test_bad_epoch_raises(epoch: Any, error: type) -> None:
    with pytest.raises(error, match="epoch must be"):
        ReproLoader(GlobalDraws(4)).set_epoch(epoch)


def test_set_epoch_reaches_sampler_and_batch_sampler() -> None:
    class Recording(SequentialSampler):  # type: ignore[type-arg]
        epochs: list[int]

        def set_epoch(self, epoch: int) -> None:
            self.epochs.append(epoch)

    dataset = GlobalDraws(4)
    sampler = Recording(dataset)
    sampler.epochs = []
    loader = ReproLoader(dataset, sampler=sampler, batch_size=2)
    collect(loader, epochs=3)
    assert sampler.epochs == [0, 1, 2]


def test_set_epoch_reaches_a_batch_sampler() -> None:
    class Recording(BatchSampler):
        epochs: list[int]

        def set_epoch(self, epoch: int) -> None:
            self.epochs.append(epoch)

    dataset = GlobalDraws(4)
    batch_sampler = Recording(SequentialSampler(dataset), batch_size=2, drop_last=False)
    batch_sampler.epochs = []
    collect(ReproLoader(dataset, batch_sampler=batch_sampler), epochs=2)
    assert batch_sampler.epochs == [0, 1]


def test_distributed_sampler_gets_set_epoch() -> None:
    dataset = GlobalDraws(8)
    sampler = DistributedSampler(dataset, num_replicas=2, rank=0, shuffle=True, seed=0)
    loader = ReproLoader(dataset, sampler=sampler, batch_size=2)
    first, second = collect(loader, epochs=2)
    assert sampler.epoch == 1
    assert flat(first).reshape(-1, 4)[:, 0].tolist() != flat(second).reshape(-1, 4)[:, 0].tolist()


def test_seed_is_drawn_from_torchs_global_rng_at_construction() -> None:
    torch.manual_seed(5)
    first = ReproLoader(GlobalDraws(4)).seed
    torch.manual_seed(5)
    assert ReproLoader(GlobalDraws(4)).seed == first
    torch.manual_seed(5)
    torch.rand(())
    assert ReproLoader(GlobalDraws(4)).seed != first


def test_seed_is_drawn_from_the_generator_when_given() -> None:
    before = torch.get_rng_state()
    seeds = [
        ReproLoader(GlobalDraws(4), generator=torch.Generator().manual_seed(s)).seed
        for s in (1, 1, 2, 3)
    ]
    assert seeds[0] == seeds[1]
    assert len(set(seeds)) == 3, f"each generator state gives its own seed, got {seeds}"
    # One draw, as DataLoader draws its base seed: the next draw of the same generator.
    generator = torch.Generator().manual_seed(2)
    assert seeds[2] == int(torch.empty((), dtype=torch.int64).random_(generator=generator))
    assert torch.equal(torch.get_rng_state(), before)


def test_generator_is_not_advanced_by_iterating() -> None:
    generator = torch.Generator().manual_seed(1)
    loader = ReproLoader(
        GlobalDraws(8), batch_size=2, shuffle=True, num_workers=2, generator=generator
    )
    state = generator.get_state()
    collect(loader, epochs=2)
    assert torch.equal(generator.get_state(), state)


def test_config_seed_is_used() -> None:
    assert ReproLoader(GlobalDraws(4), config=ReproConfig(seed=8)).seed == 8


def test_seed_contradicting_config_seed_raises() -> None:
    with pytest.raises(
        ConfigError,
        match=re.escape("seed=1 contradicts config.seed=2; pass the seed in one place only"),
    ):
        ReproLoader(GlobalDraws(4), seed=1, config={"seed": 2})


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [(-1, ValueError, r"\[0, 2\*\*128\)"), (1.5, TypeError, "seed must be an int")],
)
def test_bad_seed_raises(seed: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ReproLoader(GlobalDraws(4), seed=seed)


def test_bad_config_type_raises() -> None:
    with pytest.raises(
        TypeError, match="config must be a ReproConfig or a mapping of its fields, got 3"
    ):
        ReproLoader(GlobalDraws(4), config=3)  # type: ignore[arg-type]


def test_start_method_contradiction_raises() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("start method 'fork' but config.start_method='spawn'")
    ):
        ReproLoader(
            GlobalDraws(4),
            num_workers=1,
            multiprocessing_context="fork",
            config={"start_method": "spawn"},
        )


def test_config_start_method_with_no_workers_is_accepted() -> None:
    loader = ReproLoader(GlobalDraws(4), config={"start_method": "spawn"})
    assert loader.multiprocessing_context is None


@pytest.mark.parametrize("name", ["seed", "config", "shuffle", "dataset", "batch_size"])
def test_fixed_attributes_cannot_be_set_after_construction(name: str) -> None:
    loader = ReproLoader(GlobalDraws(4))
    with pytest.raises(
        ValueError, match=f"{name} attribute should not be set after ReproLoader is initialized"
    ):
        setattr(loader, name, getattr(loader, name))


def test_dataloader_errors_are_kept() -> None:
    with pytest.raises(ValueError, match="sampler option is mutually exclusive with shuffle"):
        ReproLoader(GlobalDraws(4), sampler=SequentialSampler(range(4)), shuffle=True)


def test_shuffle_uses_a_seeded_random_sampler() -> None:
    loader = ReproLoader(GlobalDraws(4), shuffle=True, seed=3)
    assert isinstance(loader.sampler, SeededRandomSampler)
    assert isinstance(loader.sampler, RandomSampler)
    assert loader.sampler.seed == 3


@pytest.mark.parametrize("num_workers", [0, 2])
def test_sampler_drawing_from_torchs_global_rng_is_repeatable_and_isolated(
    num_workers: int,
) -> None:
    dataset = GlobalDraws(12)

    def run() -> list[list[Any]]:
        sampler = WeightedRandomSampler(torch.ones(12), num_samples=12)
        loader = ReproLoader(
            dataset, sampler=sampler, batch_size=4, num_workers=num_workers, seed=0
        )
        return collect(loader, epochs=2)

    before = (random.getstate(), torch.get_rng_state(), np.random.get_state()[1].tolist())
    first = run()
    assert same(first, run())
    assert (
        random.getstate(),
        torch.get_rng_state().tolist(),
        np.random.get_state()[1].tolist(),
    ) == (
        before[0],
        before[1].tolist(),
        before[2],
    )
    assert (
        flat(first[0]).reshape(-1, 4)[:, 0].tolist() != flat(first[1]).reshape(-1, 4)[:, 0].tolist()
    )


def test_random_sampler_with_its_own_generator_is_reseeded_per_epoch() -> None:
    dataset = GlobalDraws(12)

    def orders(seed: int, generator_seed: int, epochs: tuple[int, ...]) -> list[list[int]]:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(generator_seed))
        loader = ReproLoader(dataset, sampler=sampler, batch_size=4, seed=seed)
        out = []
        for epoch in epochs:
            loader.set_epoch(epoch)
            out.append([int(i) for batch in loader for i in batch[:, 0]])
        return out

    both = orders(1, 0, (0, 1))
    assert sorted(both[0]) == sorted(both[1]) == list(range(12))
    assert both[0] != both[1], "each epoch its own order"
    # The order is a function of (loader seed, epoch), whatever the generator held:
    assert orders(1, 5, (0, 1)) == both
    assert orders(1, 0, (1,)) == both[1:], "epoch 1 does not depend on epoch 0 having run"
    assert orders(2, 0, (0, 1)) != both, "another loader seed, another order"


def test_without_automatic_batching() -> None:
    loader = ReproLoader(GlobalDraws(5), batch_size=None, shuffle=True, seed=0)
    items = list(loader)
    assert len(items) == 5
    assert sorted(int(t[0]) for t in items) == list(range(5))
    assert same(
        [items],
        [list(ReproLoader(GlobalDraws(5), batch_size=None, shuffle=True, seed=0, num_workers=2))],
    )


@pytest.mark.parametrize("drop_last", [False, True])
def test_len_and_batches_match_dataloader(drop_last: bool) -> None:
    loader = ReproLoader(GlobalDraws(10), batch_size=4, drop_last=drop_last, shuffle=True)
    reference = DataLoader(GlobalDraws(10), batch_size=4, drop_last=drop_last, shuffle=True)
    assert len(loader) == len(reference)
    assert [len(b) for b in loader] == [len(b) for b in reference]


def test_collate_fn_randomness_is_part_of_the_unit() -> None:
    def mixup(batch: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(batch) * torch.rand(())

    a = collect(ReproLoader(GlobalDraws(8), batch_size=2, collate_fn=mixup, seed=0), 2)
    b = collect(
        ReproLoader(GlobalDraws(8), batch_size=2, collate_fn=mixup, seed=0, num_workers=2), 2
    )
    assert same(a, b)


def test_sample_scope_with_non_integer_keys_raises_config_error() -> None:
    class Keyed(torch.utils.data.Dataset[str]):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, key: str) -> str:
            return key

    loader = ReproLoader(Keyed(), sampler=["a", "b"], batch_size=2, config={"rng_scope": "sample"})
    with pytest.raises(
        ConfigError, match="but the sampler produced 'a' of type str; use rng_scope='batch'"
    ):
        next(iter(loader))
    assert next(iter(ReproLoader(Keyed(), sampler=["a", "b"], batch_size=2))) == ["a", "b"]


def test_repr_shows_seed_and_scope() -> None:
    loader = ReproLoader(GlobalDraws(4), seed=12)
    assert (
        repr(loader)
        == "ReproLoader(dataset=GlobalDraws, batch_size=1, num_workers=0, seed=12, rng_scope='batch', epoch=0)"
    )


def test_errors_in_the_dataset_restore_the_callers_rng() -> None:
    class Failing(GlobalDraws):
        def __getitem__(self, i: int) -> torch.Tensor:
            torch.rand(5)
            raise KeyError(i)

    before = torch.get_rng_state()
    with pytest.raises(KeyError):
        next(iter(ReproLoader(Failing(4), seed=0)))
    assert torch.equal(torch.get_rng_state(), before)


def test_set_epoch_reaches_a_sampler_inside_a_batch_sampler_once() -> None:
    class Recording(DistributedSampler):  # type: ignore[type-arg]
        epochs: list[int]

        def set_epoch(self, epoch: int) -> None:
            self.epochs.append(epoch)
            super().set_epoch(epoch)

    dataset = GlobalDraws(8)
    sampler = Recording(dataset, num_replicas=2, rank=0)
    sampler.epochs = []
    batch_sampler = BatchSampler(sampler, batch_size=2, drop_last=False)
    collect(ReproLoader(dataset, batch_sampler=batch_sampler, seed=0), epochs=2)
    assert sampler.epochs == [0, 1]


def test_rng_scope_keyword_is_the_configs_field() -> None:
    by_keyword = ReproLoader(GlobalDraws(8), batch_size=2, seed=3, rng_scope="sample")
    by_config = ReproLoader(
        GlobalDraws(8), batch_size=2, seed=3, config=ReproConfig(rng_scope="sample")
    )
    assert by_keyword.config.rng_scope == by_keyword.rng_scope == "sample"
    assert same(collect(by_keyword, 2), collect(by_config, 2))
    assert not same(
        collect(by_keyword, 1), collect(ReproLoader(GlobalDraws(8), batch_size=2, seed=3), 1)
    )
    # A config that leaves the scope unset takes the keyword; its other fields stay.
    mixed = ReproLoader(
        GlobalDraws(8), seed=3, rng_scope="worker", config=ReproConfig(reseed_globals=["torch"])
    )
    assert (mixed.config.rng_scope, sorted(mixed.config.reseed_globals)) == ("worker", ["torch"])


def test_rng_scope_keyword_contradicting_the_config_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"rng_scope='sample' contradicts config.rng_scope='worker'"
    ):
        ReproLoader(GlobalDraws(8), rng_scope="sample", config={"rng_scope": "worker"})
    with pytest.raises(ValueError, match="rng_scope"):
        ReproLoader(GlobalDraws(8), rng_scope="per-batch")  # type: ignore[arg-type]


class _InitialSeed(torch.utils.data.Dataset[Any]):
    """Returns the torch seeds a unit runs under, as some of torch's own tests do."""

    def __init__(self) -> None:
        self.gen = torch.Generator()

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> Any:
        info = torch.utils.data.get_worker_info()
        worker_seed = info.seed if info is not None else 0
        return [torch.initial_seed(), self.gen.initial_seed(), worker_seed]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_torch_seed_the_loader_sets_is_below_2_to_the_63(num_workers: int) -> None:
    loader = ReproLoader(
        _InitialSeed(),
        batch_size=4,
        seed=11,
        num_workers=num_workers,
        multiprocessing_context="fork" if num_workers else None,
    )
    batches = [torch.stack(batch) for batch in loader]  # collates: every seed fits int64
    assert min(int(b.min()) for b in batches) >= 0
    assert len({int(b[0, 0]) for b in batches}) == len(batches)  # a seed per unit


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_workers_that_cannot_start_for_pickling_name_the_part(method: str) -> None:
    # Spawned workers receive the loader's parts pickled: a local function cannot be.
    # As DataLoader does, the original error is raised, after a warning that here
    # names the part that failed (pickling happens before any process starts).
    def local_init(worker_id: int) -> None:
        pass

    loader = ReproLoader(
        list(range(8)),
        batch_size=2,
        num_workers=1,
        seed=1,
        multiprocessing_context=method,
        worker_init_fn=local_init,
    )
    with (
        pytest.warns(UserWarning, match=rf"'{method}' start method .* worker_init_fn \("),
        pytest.raises((AttributeError, pickle.PicklingError)),
    ):
        next(iter(loader))
