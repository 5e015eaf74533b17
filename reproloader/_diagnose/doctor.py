"""``doctor()``: what in this process's environment is not reproducible; nothing printed.

It inspects versions, torch's determinism switches, the environment, the start
method, CUDA and cuDNN, and returns :class:`Finding` objects that say whether each
check passed, the evidence, and a fix. ``reproloader doctor`` formats them.
"""

from __future__ import annotations

import importlib.metadata
import multiprocessing
import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from reproloader._diagnose.findings import Finding, Reported, Severity
from reproloader.determinism import CUBLAS_VARIABLE, current_settings

__all__ = ["DoctorReport", "doctor"]


@dataclass(frozen=True)
class DoctorReport(Reported):
    """What :func:`doctor` found: facts about the process, and findings."""

    versions: dict[str, str | None]
    settings: dict[str, Any]
    environment: dict[str, str | None]
    start_method: str
    cuda: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """How many checks did not pass, by what they mean: notes, warnings, failures."""
        off = [f.severity for f in self.findings if not f.passed]
        return {
            "notes": off.count("info"),
            "warnings": off.count("warning"),
            "failures": off.count("error"),
        }

    def summary(self) -> str:
        """The last line of ``reproloader doctor``: the counts, and what ``--strict`` does."""
        counts = self.counts
        words = ", ".join(f"{n} {kind if n != 1 else kind[:-1]}" for kind, n in counts.items())
        verdict = (
            "--strict exits 1"
            if counts["warnings"] or counts["failures"]
            else "nothing for --strict to fail on"
        )
        return f"{words}: {verdict} (it fails on warnings and failures; notes are for information)"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``, with the counts and the summary line."""
        out = super().to_dict()
        out["counts"] = self.counts
        out["summary"] = self.summary()
        return out


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _default_start_method() -> str:
    chosen = multiprocessing.get_start_method(allow_none=True)
    return chosen if chosen is not None else multiprocessing.get_context().get_start_method()


ENVIRONMENT = (
    CUBLAS_VARIABLE,
    "PYTHONHASHSEED",
    "CUDA_LAUNCH_BLOCKING",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
)


def doctor() -> DoctorReport:
    """Inspect this process and say, in plain words, what is not reproducible with it."""
    settings = current_settings()
    cuda = torch.cuda.is_available()
    cuda_facts: dict[str, Any] = {
        "available": cuda,
        "initialized": torch.cuda.is_initialized(),  # type: ignore[no-untyped-call]
        "runtime": torch.version.cuda,
        "cudnn": (
            torch.backends.cudnn.version()  # type: ignore[no-untyped-call]
            if torch.backends.cudnn.is_available()  # type: ignore[no-untyped-call]
            else None
        ),
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
    }
    environment = {name: os.environ.get(name) for name in ENVIRONMENT}
    environment.update({k: v for k, v in os.environ.items() if k.startswith("REPROLOADER_")})
    report = DoctorReport(
        versions={
            "python": platform.python_version(),
            "reproloader": _version("reproloader"),
            "torch": torch.__version__,
            "torchdata": _version("torchdata"),
            "numpy": _version("numpy"),
            "pydantic": _version("pydantic"),
            "platform": f"{sys.platform} {platform.machine()}",
        },
        settings={
            "deterministic_algorithms": settings.deterministic_algorithms,
            "warn_only": settings.warn_only,
            "cudnn_deterministic": settings.cudnn_deterministic,
            "cudnn_benchmark": settings.cudnn_benchmark,
            "fill_uninitialized_memory": settings.fill_uninitialized_memory,
            "float32_matmul_precision": settings.float32_matmul_precision,
            "cudnn_tf32": _describe_tf32(settings.cudnn_tf32),
            "torch_threads": torch.get_num_threads(),
        },
        environment=environment,
        start_method=_default_start_method(),
        cuda=cuda_facts,
    )
    report.findings.extend(_findings(report, cuda))
    return report


def _describe_tf32(value: Any) -> str:
    if value[0] == "precision":
        return f"conv={value[1]}, rnn={value[2]}"
    return "allowed" if value[1] else "off"


def _findings(report: DoctorReport, cuda: bool) -> list[Finding]:
    s = report.settings
    gpu: Severity = "warning" if cuda else "info"
    gpu_note = "" if cuda else " (no CUDA device here, so this matters only on GPUs)"
    tf32_on = "tf32" in s["cudnn_tf32"] or s["cudnn_tf32"] == "allowed"
    workspace = report.environment[CUBLAS_VARIABLE]
    return [
        Finding(
            "deterministic algorithms",
            s["deterministic_algorithms"] and not s["warn_only"],
            gpu,
            f"torch.use_deterministic_algorithms is {'on' if s['deterministic_algorithms'] else 'off'}"
            + (" (warn_only)" if s["warn_only"] else "")
            + gpu_note,
            "some CUDA ops (index_add_, scatter_add_, some convolution backwards) use "
            "atomics and give different results run to run; apply a ReproConfig "
            "(config.apply() or reproloader.seed_everything)",
        ),
        Finding(
            "cuDNN benchmark",
            not s["cudnn_benchmark"],
            gpu,
            f"torch.backends.cudnn.benchmark is {s['cudnn_benchmark']}{gpu_note}",
            "benchmarking picks convolution algorithms by timing, which can differ "
            "between runs: set torch.backends.cudnn.benchmark = False",
        ),
        Finding(
            "cuDNN deterministic",
            s["cudnn_deterministic"],
            gpu,
            f"torch.backends.cudnn.deterministic is {s['cudnn_deterministic']}{gpu_note}",
            "cuDNN may choose non-deterministic convolution algorithms: set "
            "torch.backends.cudnn.deterministic = True",
        ),
        Finding(
            "cuBLAS workspace",
            workspace in (":4096:8", ":16:8"),
            gpu,
            f"{CUBLAS_VARIABLE} is {workspace if workspace else '(not set)'}{gpu_note}",
            f"deterministic cuBLAS needs {CUBLAS_VARIABLE}=:4096:8 (or :16:8) set before "
            "CUDA starts; without it deterministic algorithms make cuBLAS calls raise",
        ),
        Finding(
            "TF32 for cuDNN",
            not tf32_on,
            "info",
            f"cuDNN TF32: {s['cudnn_tf32']}; float32 matmul precision: {s['float32_matmul_precision']}",
            "TF32 is deterministic, but its numbers differ from float32's (and from GPUs "
            "without TF32); apply a ReproConfig, whose default turns it off",
        ),
        Finding(
            "hash seed",
            report.environment["PYTHONHASHSEED"] is not None,
            "info",
            f"PYTHONHASHSEED is {report.environment['PYTHONHASHSEED'] or '(not set)'}",
            "iteration order of sets (and dicts built from sets) of strings changes "
            "between runs; export PYTHONHASHSEED=0 if a pipeline iterates such a set",
        ),
        Finding(
            "start method",
            True,
            "info",
            f"default multiprocessing start method: {report.start_method}",
        ),
    ]
