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
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reproloader.exceptions import ConfigError
from reproloader.seeding import Lane, Purpose, SeedTree, UnitStreams

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "AppliedSettings",
    "CublasTooLateWarning",
    "DeterminismConfig",
    "apply",
    "current_settings",
    "seed_everything",
]

CUBLAS_VARIABLE = "CUBLAS_WORKSPACE_CONFIG"


class ReproConfigLike(Protocol):
    """What this module reads of a ``ReproConfig`` (which sits above it and imports it)."""

    @property
    def seed(self) -> int | None: ...

    @property
    def determinism(self) -> DeterminismConfig: ...


FROZEN_MODEL = ConfigDict(frozen=True, extra="forbid", validate_default=True)
"""Pydantic settings of every config model: immutable, unknown keys refused."""

CublasWorkspace = Literal[":4096:8", ":16:8"]
MatmulPrecision = Literal["highest", "high", "medium"]


class DeterminismConfig(BaseModel):
    """torch's process-wide determinism switches; the defaults are the deterministic choices.

    Apply them with :meth:`apply` (or ``ReproConfig.apply()`` /
    :func:`reproloader.seed_everything`). A ReproLoader does not apply them by
    itself: they change the whole process, model code included, and some cost
    speed, so the training script decides when.

    Attributes:
        deterministic_algorithms: ``torch.use_deterministic_algorithms``: ops without
            a deterministic implementation raise instead of running; those with one use
            it (index_add, scatter_add and some convolution backwards on CUDA use
            atomics otherwise).
        warn_only: with ``deterministic_algorithms``, only warn for ops that would
            raise, so a run can list them before you fix them.
        cudnn_deterministic: ``torch.backends.cudnn.deterministic``: deterministic
            cuDNN convolution algorithms only.
        cudnn_benchmark: ``torch.backends.cudnn.benchmark``: pick convolution
            algorithms by timing them. Faster, but the pick can differ run to run.
        cublas_workspace_config: ``CUBLAS_WORKSPACE_CONFIG``, which deterministic cuBLAS
            needs (CUDA >= 10.2): ``":4096:8"`` (fast, ~24 MiB per stream) or
            ``":16:8"`` (less memory, slower). ``None`` leaves the variable as it is.
            It must be set before CUDA starts. (In TOML, which has no null, write
            ``"none"``.)
        fill_uninitialized_memory: with ``deterministic_algorithms``, fill memory from
            ``torch.empty`` and friends with NaN (floats) or the largest integer, so
            reading it gives the same garbage every run.
        float32_matmul_precision: ``torch.set_float32_matmul_precision``: ``"highest"``
            keeps float32 matmuls in float32; ``"high"`` allows TF32 and ``"medium"``
            bfloat16 on GPUs that have them (faster, different results).
        cudnn_allow_tf32: let cuDNN convolutions and RNNs use TF32 on Ampere and newer
            (torch's default is True).
    """

    model_config = FROZEN_MODEL

    deterministic_algorithms: bool = Field(default=True, strict=True)
    warn_only: bool = Field(default=False, strict=True)
    cudnn_deterministic: bool = Field(default=True, strict=True)
    cudnn_benchmark: bool = Field(default=False, strict=True)
    cublas_workspace_config: CublasWorkspace | None = ":4096:8"
    fill_uninitialized_memory: bool = Field(default=True, strict=True)
    float32_matmul_precision: MatmulPrecision = "highest"
    cudnn_allow_tf32: bool = Field(default=False, strict=True)

    @field_validator("cublas_workspace_config", mode="before")
    @classmethod
    def _none_from_files(cls, value: object) -> object:
        return None if value == "none" else value

    @model_validator(mode="after")
    def _consistent(self) -> DeterminismConfig:
        if self.cudnn_benchmark and (self.deterministic_algorithms or self.cudnn_deterministic):
            on = [
                name
                for name in ("deterministic_algorithms", "cudnn_deterministic")
                if getattr(self, name)
            ]
            raise ValueError(
                f"cudnn_benchmark=True contradicts {' and '.join(f'{n}=True' for n in on)}: "
                "benchmarking picks cuDNN convolution algorithms by timing them, and the "
                "pick can differ from run to run. Set cudnn_benchmark=False to be "
                f"reproducible, or {' and '.join(f'{n}=False' for n in on)} if speed "
                "matters more."
            )
        if self.warn_only and not self.deterministic_algorithms:
            raise ValueError(
                "warn_only=True only changes what deterministic_algorithms=True does with "
                "ops that have no deterministic implementation; set "
                "deterministic_algorithms=True, or warn_only=False"
            )
        return self

    def apply(self) -> AppliedSettings:
        """Apply now; use as a context manager to restore the previous settings on exit."""
        return apply(self)


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


def apply(config: DeterminismConfig | ReproConfigLike) -> AppliedSettings:
    """Apply a determinism config to torch now.

    Warns with :class:`CublasTooLateWarning` when CUDA was initialized before
    ``CUBLAS_WORKSPACE_CONFIG`` got its value: cuBLAS handles made before then
    keep their non-deterministic workspaces.
    """
    if not isinstance(config, DeterminismConfig):
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


def seed_everything(config: ReproConfigLike | int) -> AppliedSettings:
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
    seed: int | None
    determinism: DeterminismConfig | None
    if isinstance(config, int) and not isinstance(config, bool):
        seed, determinism = config, DeterminismConfig()
    else:  # a ReproConfig, read by its fields: config.py sits above this module
        seed = getattr(config, "seed", None)
        determinism = getattr(config, "determinism", None)
        if seed is None or not isinstance(determinism, DeterminismConfig):
            raise ConfigError(
                f"seed_everything needs a seed: pass an int, or a ReproConfig with seed set "
                f"(got {config!r})"
            )
    tree = SeedTree(seed)  # checks the seed's type and range
    applied = apply(determinism)
    words = UnitStreams().words(tree.key(Purpose.MAIN), 0, Lane.GLOBALS, 4)
    w = words.tolist()
    random.seed((w[0] << 64) | w[1])
    np.random.seed(words[2:4].view(np.uint32))
    torch.manual_seed(w[3] >> 1)  # CPU and every CUDA device; below 2**63, as torch's own
    return applied
