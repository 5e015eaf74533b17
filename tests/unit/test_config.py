from __future__ import annotations

import pydantic
import pytest

from reproloader import ReproConfig


def test_defaults() -> None:
    config = ReproConfig()
    assert config.seed is None
    assert config.rng_scope == "batch"
    assert config.start_method is None
    assert config.reseed_globals == frozenset({"numpy", "random", "torch"})
    assert config.reseed_dataset_rngs is True


def test_config_is_frozen() -> None:
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        ReproConfig().rng_scope = "sample"  # type: ignore[misc]


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(
        pydantic.ValidationError, match="rng_scop\n  Extra inputs are not permitted"
    ):
        ReproConfig(rng_scop="sample")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rng_scope", "epoch", "Input should be 'batch', 'sample' or 'worker'"),
        ("start_method", "thread", "Input should be 'fork', 'spawn' or 'forkserver'"),
        ("seed", -1, "Input should be greater than or equal to 0"),
        ("seed", 2**128, "Input should be less than 340282366920938463463374607431768211456"),
        ("seed", "5", "Input should be a valid integer"),
        ("reseed_globals", ["jax"], "Input should be 'numpy', 'random' or 'torch'"),
        ("reseed_dataset_rngs", "yes", "Input should be a valid boolean"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        ReproConfig(**{field: value})
    assert field in str(info.value)
    assert message in str(info.value)


def test_config_round_trips_through_json() -> None:
    config = ReproConfig(seed=3, rng_scope="sample", reseed_globals=frozenset({"torch"}))
    assert ReproConfig.model_validate_json(config.model_dump_json()) == config
