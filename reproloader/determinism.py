"""Applying a :class:`~reproloader.config.DeterminismConfig` to torch, and undoing it.

:func:`apply` sets the switches in the order they must be set (the cuBLAS workspace
variable first: cuBLAS reads it when CUDA creates its handles) and returns an
:class:`AppliedSettings` that, used as a context manager, puts every earlier value
back on exit, also when the block raises and when such blocks nest.
"""

from __future__ import annotations

import os
import random
import warnings
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reproloader.config import DeterminismConfig, ReproConfig
from reproloader.exceptions import ConfigError
from reproloader.seeding import Lane, Purpose, SeedTree, UnitStreams

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "AppliedSettings",
    "CublasTooLateWarning",
    "apply",
    "current_settings",
    "seed_everything",
]

CUBLAS_VARIABLE = "CUBLAS_WORKSPACE_CONFIG"


class CublasTooLateWarning(UserWarning):
    """``CUBLAS_WORKSPACE_CONFIG`` was set after CUDA had started: it may not take effect."""


def _cudnn_tf32_precisions() -> Any:
    # torch 2.9+ keeps cuDNN TF32 per operator kind; reading the legacy flag raises
    # once conv and RNN differ, so use the per-kind API where it exists.
    conv = getattr(torch.backends.cudnn, "conv", None)
    rnn = getattr(torch.backends.cudnn, "rnn", None)
    if conv is not None and rnn is not None and hasattr(conv, "fp32_precision"):
        return ("precision", conv.fp32_precision, rnn.fp32_precision)
    return ("legacy", torch.backends.cudnn.allow_tf32)


def _set_cudnn_tf32(value: Any) -> None:
    if value[0] == "precision":
        torch.backends.cudnn.conv.fp32_precision = value[1]  # type: ignore[attr-defined]
        torch.backends.cudnn.rnn.fp32_precision = value[2]  # type: ignore[attr-defined]
    else:
        torch.backends.cudnn.allow_tf32 = value[1]


def _cudnn_tf32(allow: bool) -> Any:
    if _cudnn_tf32_precisions()[0] == "precision":
        mode = "tf32" if allow else "ieee"
        return ("precision", mode, mode)
    return ("legacy", allow)


@dataclass(frozen=True)
class Settings:
    """torch's determinism-related global settings at one moment."""

    deterministic_algorithms: bool
    warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    cublas_workspace_config: str | None
    fill_uninitialized_memory: bool
    float32_matmul_precision: str
    cudnn_tf32: Any


def current_settings() -> Settings:
    """What torch is set to now."""
    return Settings(
        deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn_deterministic=torch.backends.cudnn.deterministic,
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        cublas_workspace_config=os.environ.get(CUBLAS_VARIABLE),
        fill_uninitialized_memory=torch.utils.deterministic.fill_uninitialized_memory,  # type: ignore[attr-defined]
        float32_matmul_precision=torch.get_float32_matmul_precision(),
        cudnn_tf32=_cudnn_tf32_precisions(),
    )


def _set(settings: Settings) -> None:
    # The environment variable first: cuBLAS reads it when CUDA creates its handles.
    if settings.cublas_workspace_config is None:
        os.environ.pop(CUBLAS_VARIABLE, None)
    else:
        os.environ[CUBLAS_VARIABLE] = settings.cublas_workspace_config
    torch.use_deterministic_algorithms(
        settings.deterministic_algorithms, warn_only=settings.warn_only
    )
    torch.backends.cudnn.deterministic = settings.cudnn_deterministic
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    torch.utils.deterministic.fill_uninitialized_memory = settings.fill_uninitialized_memory  # type: ignore[attr-defined]
    torch.set_float32_matmul_precision(settings.float32_matmul_precision)
    _set_cudnn_tf32(settings.cudnn_tf32)


class AppliedSettings:
    """The settings a config replaced; a context manager that puts them back.

    ``apply()`` has already applied the config when it returns this; leaving a
    ``with`` block restores exactly what was there before, whatever happened inside.
    """

    def __init__(self, config: DeterminismConfig, previous: Settings) -> None:
        self.config = config
        self.previous = previous

    def restore(self) -> None:
        """Put back the settings that were there before ``apply()``."""
        _set(self.previous)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()


def apply(config: DeterminismConfig | ReproConfig) -> AppliedSettings:
    """Apply a determinism config to torch now.

    Warns with :class:`CublasTooLateWarning` when CUDA was initialized before
    ``CUBLAS_WORKSPACE_CONFIG`` got its value: cuBLAS handles made before then
    keep their non-deterministic workspaces.
    """
    if isinstance(config, ReproConfig):
        config = config.determinism
    previous = current_settings()
    workspace: str | None = config.cublas_workspace_config
    if workspace is None:
        workspace = previous.cublas_workspace_config
    elif workspace != previous.cublas_workspace_config and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        warnings.warn(
            f"{CUBLAS_VARIABLE}={workspace!r} is set after CUDA was initialized: cuBLAS "
            "handles created before now keep non-deterministic workspaces. Apply the "
            "config before any CUDA work (first thing in the program), or export "
            f"{CUBLAS_VARIABLE}={workspace} in the shell that starts it.",
            CublasTooLateWarning,
            stacklevel=2,
        )
    _set(
        Settings(
            deterministic_algorithms=config.deterministic_algorithms,
            warn_only=config.warn_only,
            cudnn_deterministic=config.cudnn_deterministic,
            cudnn_benchmark=config.cudnn_benchmark,
            cublas_workspace_config=workspace,
            fill_uninitialized_memory=config.fill_uninitialized_memory,
            float32_matmul_precision=config.float32_matmul_precision,
            cudnn_tf32=_cudnn_tf32(config.cudnn_allow_tf32),
        )
    )
    return AppliedSettings(config, previous)


def seed_everything(config: ReproConfig | int) -> AppliedSettings:
    """Seed this process's RNGs from the config's seed and apply its determinism switches.

    One call at the top of a training script: python ``random``, numpy's global RNG
    and torch (CPU and every CUDA device) are seeded from node ``(MAIN,)`` of the
    seed tree, a stream of their own that no loader unit shares, and the
    determinism section is applied. Loaders built afterwards with the same config
    use the same seed.

    Args:
        config: a :class:`ReproConfig` with a seed, or the seed itself.

    Returns:
        What :func:`apply` returns: use it as a context manager to restore the
        determinism settings (the RNG states are not restored).
    """
    if isinstance(config, int) and not isinstance(config, bool):
        config = ReproConfig(seed=config)
    if not isinstance(config, ReproConfig) or config.seed is None:
        raise ConfigError(
            f"seed_everything needs a seed: pass an int, or a ReproConfig with seed set "
            f"(got {config!r})"
        )
    applied = apply(config.determinism)
    words = UnitStreams().words(SeedTree(config.seed).key(Purpose.MAIN), 0, Lane.GLOBALS, 4)
    w = words.tolist()
    random.seed((w[0] << 64) | w[1])
    np.random.seed(words[2:4].view(np.uint32))
    torch.manual_seed(w[3])  # CPU and, if present, every CUDA device
    return applied
