"""Property: the batches do not depend on how many processes make them."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reproloader import ReproLoader
from tests.datasets import AllSources, collect, same


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 30),
    batch_size=st.integers(1, 8),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    scope=st.sampled_from(["batch", "sample"]),
    seed=st.integers(0, 2**128 - 1),
)
def test_workers_never_change_the_batches(
    n: int, batch_size: int, drop_last: bool, shuffle: bool, scope: str, seed: int
) -> None:
    def run(num_workers: int) -> list[list[object]]:
        loader = ReproLoader(
            AllSources(n),
            batch_size=batch_size,
            drop_last=drop_last,
            shuffle=shuffle,
            num_workers=num_workers,
            seed=seed,
            config={"rng_scope": scope},
        )
        return collect(loader, epochs=2)

    assert same(run(0), run(2))
