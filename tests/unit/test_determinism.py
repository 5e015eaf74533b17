from __future__ import annotations

import dataclasses
import os
import random
import re
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from reproloader import ConfigError, ReproConfig, seed_everything
from reproloader.config import DeterminismConfig
from reproloader.determinism import CublasTooLateWarning, apply, current_settings


@pytest.fixture(autouse=True)
def _restore_torch_settings() -> Iterator[None]:
    before = current_settings()
    environ = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield
    after = current_settings()
    apply(DeterminismConfig(deterministic_algorithms=False, cudnn_deterministic=False)).restore()
    assert after == before, "a test leaked torch settings"
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == environ


def test_defaults_are_the_deterministic_choices() -> None:
    config = DeterminismConfig()
    assert config.deterministic_algorithms
    assert config.cudnn_deterministic
    assert (config.cudnn_benchmark, config.warn_only, config.cudnn_allow_tf32) == (
        False,
        False,
        False,
    )
    assert (config.cublas_workspace_config, config.float32_matmul_precision) == (
        ":4096:8",
        "highest",
    )


def test_apply_sets_every_flag_and_the_context_manager_restores_them() -> None:
    before = current_settings()
    with ReproConfig().apply():
        now = current_settings()
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic is True
        assert torch.backends.cudnn.benchmark is False
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.utils.deterministic.fill_uninitialized_memory is True  # type: ignore[attr-defined]
        assert torch.get_float32_matmul_precision() == "highest"
        assert now.cudnn_tf32[1:] in ((False,), ("ieee", "ieee"))
    assert current_settings() == before


@pytest.mark.parametrize(
    ("field", "value", "read"),
    [
        ("warn_only", True, torch.is_deterministic_algorithms_warn_only_enabled),
        ("cudnn_deterministic", False, lambda: torch.backends.cudnn.deterministic),
        ("cublas_workspace_config", ":16:8", lambda: os.environ["CUBLAS_WORKSPACE_CONFIG"]),
        (
            "fill_uninitialized_memory",
            False,
            lambda: torch.utils.deterministic.fill_uninitialized_memory,
        ),  # type: ignore[attr-defined]
        ("float32_matmul_precision", "medium", torch.get_float32_matmul_precision),
    ],
)
def test_each_field_reaches_torch(field: str, value: object, read: object) -> None:
    before = current_settings()
    with DeterminismConfig(**{field: value}).apply():
        assert read() == value  # type: ignore[operator]
    assert current_settings() == before


def test_benchmark_and_tf32_reach_torch() -> None:
    config = DeterminismConfig(
        deterministic_algorithms=False,
        cudnn_deterministic=False,
        cudnn_benchmark=True,
        cudnn_allow_tf32=True,
    )
    with config.apply():
        assert torch.backends.cudnn.benchmark is True
        assert current_settings().cudnn_tf32[1:] in ((True,), ("tf32", "tf32"))


def test_nested_applications_unwind_in_order() -> None:
    outer = DeterminismConfig(float32_matmul_precision="high")
    inner = DeterminismConfig(
        deterministic_algorithms=False, cudnn_deterministic=False, float32_matmul_precision="medium"
    )
    before = current_settings()
    with outer.apply():
        with inner.apply():
            assert torch.get_float32_matmul_precision() == "medium"
            assert not torch.are_deterministic_algorithms_enabled()
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.are_deterministic_algorithms_enabled()
    assert current_settings() == before


def test_settings_are_restored_when_the_block_raises() -> None:
    before = current_settings()
    with pytest.raises(KeyError), ReproConfig().apply():
        raise KeyError("boom")
    assert current_settings() == before


def test_a_variable_set_before_is_restored_and_none_leaves_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with DeterminismConfig(cublas_workspace_config=None).apply():
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    with DeterminismConfig().apply():
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_setting_cublas_after_cuda_started_warns_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    message = "CUBLAS_WORKSPACE_CONFIG=':4096:8' is set after CUDA was initialized"
    with (
        pytest.warns(CublasTooLateWarning, match=re.escape(message)) as record,
        ReproConfig().apply(),
    ):
        pass
    assert "export CUBLAS_WORKSPACE_CONFIG=:4096:8" in str(record[0].message)


def test_benchmark_with_deterministic_settings_is_explained() -> None:
    message = (
        "cudnn_benchmark=True contradicts deterministic_algorithms=True and cudnn_deterministic=True: "
        "benchmarking picks cuDNN convolution algorithms by timing them, and the pick can differ from "
        "run to run. Set cudnn_benchmark=False to be reproducible, or deterministic_algorithms=False "
        "and cudnn_deterministic=False if speed matters more."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        DeterminismConfig(cudnn_benchmark=True)


def test_warn_only_without_deterministic_algorithms_is_explained() -> None:
    with pytest.raises(
        ValueError, match="warn_only=True only changes what deterministic_algorithms=True does"
    ):
        DeterminismConfig(deterministic_algorithms=False, warn_only=True)


@pytest.mark.parametrize(
    ("field", "value"), [("cublas_workspace_config", ":8:8"), ("float32_matmul_precision", "low")]
)
def test_bad_values_list_the_allowed_ones(field: str, value: str) -> None:
    with pytest.raises(ValueError, match="Input should be"):
        DeterminismConfig(**{field: value})


def test_seed_everything_seeds_every_rng_repeatably_and_applies_the_flags() -> None:
    applied = seed_everything(5)
    try:
        first = (random.random(), np.random.random(), torch.rand(()).item())
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        applied.restore()
    seed_everything(ReproConfig(seed=5)).restore()
    assert (random.random(), np.random.random(), torch.rand(()).item()) == first
    seed_everything(6).restore()
    assert random.random() != first[0]


def test_seed_everything_needs_a_seed() -> None:
    with pytest.raises(ConfigError, match="seed_everything needs a seed"):
        seed_everything(ReproConfig())


def test_settings_snapshot_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        current_settings().cudnn_benchmark = True  # type: ignore[misc]
