"""``Finding``: one check's result, shared by ``doctor()`` and ``audit()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Finding", "Severity"]

Severity = Literal["info", "warning", "error"]


@dataclass(frozen=True)
class Finding:
    """One check's result.

    Attributes:
        check: what was checked, in a few words.
        passed: whether it is fine for reproducibility.
        severity: how much a failure matters here: ``"info"`` (worth knowing),
            ``"warning"`` (results can differ between runs), ``"error"`` (they do).
        evidence: what was observed.
        fix: what to do about a failure ("" when passed).
    """

    check: str
    passed: bool
    severity: Severity
    evidence: str
    fix: str = ""
