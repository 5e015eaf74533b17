"""Golden streams: the numbers users get, pinned.

A failure here means a change alters the data of every existing run with the same
seed. If that is intended, update the numbers and add a ``stream`` changelog
fragment saying what changed and why.
"""

from __future__ import annotations

import pytest
import torch

from reproloader import ReproLoader, SeededRandomSampler
from reproloader.seeding import Lane, Purpose, SeedTree, UnitStreams
from tests.datasets import AllSources, Stream

SEED = 20261122


def test_node_key_is_pinned() -> None:
    assert SeedTree(SEED).key(Purpose.BATCH, 3, 1).tolist() == [
        10654655381672707485,
        5628169392401732562,
    ]


def test_unit_seed_words_are_pinned() -> None:
    key = SeedTree(SEED).key(Purpose.BATCH, 3, 1)
    assert UnitStreams().words(key, 17, Lane.GLOBALS, 3).tolist() == [
        5160296869554578614,
        11726433868060126282,
        2840642433668089252,
    ]


def test_unit_generator_is_pinned() -> None:
    streams = UnitStreams()
    rng = streams.new_generator()
    streams.position(rng.bit_generator, SeedTree(SEED).key(Purpose.SAMPLE, 2), 123, Lane.RNG)  # type: ignore[arg-type]
    assert rng.integers(0, 2**32, 4).tolist() == [706656809, 3611054516, 2315816564, 788769238]


# Shuffle orders: the keyed Feistel bijection of reproloader._runtime.shuffle (state
# format version 2; version 1 used Generator(PCG64(node)).permutation(n)). Version 4
# gives n <= 8192 an exact uniform permutation (the ranks of PCG64(node)'s raw words):
# n=10's order was [0, 6, 3, 7, 8, 4, 9, 2, 1, 5] in versions 2 and 3; n=8193's is the
# Feistel's, unchanged.
def test_shuffle_permutation_is_pinned() -> None:
    assert SeedTree(SEED).permutation(5, 10).tolist() == [9, 0, 7, 4, 3, 6, 8, 5, 2, 1]
    assert SeededRandomSampler(range(8192), seed=SEED).indices(5, 0, 4).tolist() == [
        675,
        1553,
        4967,
        1808,
    ]


def test_shuffle_above_the_exact_size_is_the_feistel_of_version_2() -> None:
    sampler = SeededRandomSampler(range(8193), seed=SEED)
    assert sampler.indices(5, 0, 4).tolist() == [6058, 3797, 3918, 5938]


def test_shuffle_of_a_huge_epoch_is_pinned() -> None:
    sampler = SeededRandomSampler(range(10**10), seed=SEED)
    assert sampler.indices(5, 0, 4).tolist() == [2343006362, 3628220561, 8950168226, 8040305930]
    assert sampler.indices(5, 8 * 10**9, 8 * 10**9 + 2).tolist() == [4100308274, 4592919018]
    assert sampler.indices(5, 10**10 - 2, 10**10).tolist() == [5472433899, 195650722]


# Through the loader: [index, random, numpy global, torch, context rng, dataset's own rng].
# Version 2 seeds torch with the top 63 bits of its word (below 2**63, as torch's own
# seeds): the torch column changed then, deliberately, and nothing else did.
# Version 2's shuffle puts sample 7 first where version 1 had sample 1; batch and
# worker scope streams belong to the batch, so only the index changed; in sample
# scope the first row is sample 7's own stream, as version 1 gave it in batch 1.
# Version 3 fills python random's state from the unit's words instead of random.seed:
# the random column changed, deliberately, and nothing else did.
# Version 4's exact order of 8 samples puts samples 3 and 6 first where version 3 had
# 7 and 4: in batch and worker scope only the index column changed; in sample scope
# the rows are samples 3's and 6's own streams.
LOADER_GOLDEN = {
    "batch": [
        [
            3.0,
            0.9154489302726958,
            0.7034171971242786,
            0.9162073135375977,
            0.3113631743372899,
            0.002896511401680124,
        ],
        [
            6.0,
            0.3348654715356565,
            0.2930281717011497,
            0.5355747938156128,
            0.3633243855002726,
            0.5221483935315591,
        ],
    ],
    "sample": [
        [
            3.0,
            0.3611176120975417,
            0.530642620375916,
            0.07040703296661377,
            0.9612612027602505,
            0.24851784926836096,
        ],
        [
            6.0,
            0.9003719615636009,
            0.7483191699923405,
            0.2273350954055786,
            0.7564461214706608,
            0.7020684536373064,
        ],
    ],
    "worker": [
        [
            3.0,
            0.2511890109540216,
            0.6360037735418129,
            0.8476377129554749,
            0.8486785459596162,
            0.4621534398432423,
        ],
        [
            6.0,
            0.7909563598533196,
            0.27082316631725367,
            0.35079896450042725,
            0.9228165780180617,
            0.907262858396675,
        ],
    ],
}


@pytest.mark.parametrize("scope", sorted(LOADER_GOLDEN))
def test_first_batch_through_the_loader_is_pinned(scope: str) -> None:
    loader = ReproLoader(
        AllSources(8), batch_size=2, shuffle=True, seed=0, config={"rng_scope": scope}
    )
    assert next(iter(loader)).tolist() == LOADER_GOLDEN[scope]


def test_first_batch_of_an_iterable_dataset_is_pinned() -> None:
    # [index, random, numpy global, torch]; version 3 changed the random column.
    batch = next(iter(ReproLoader(Stream(8), batch_size=2, seed=0)))
    assert batch.tolist() == [
        [0.0, 0.9148979978710505, 0.45275204487420173, 0.029104769229888916],
        [1.0, 0.2911618741682497, 0.5716465687227084, 0.8699402213096619],
    ]


def test_golden_values_hold_in_workers_too() -> None:
    loader = ReproLoader(AllSources(8), batch_size=2, shuffle=True, seed=0, num_workers=2)
    assert torch.equal(
        next(iter(loader)), torch.tensor(LOADER_GOLDEN["batch"], dtype=torch.float64)
    )
