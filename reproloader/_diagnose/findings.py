"""``Finding``: one check's result, shared by ``doctor()`` and ``audit()``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["Finding", "Reported", "Severity"]

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


class Reported:
    """What ``doctor()``'s and ``audit()``'s reports share: a list of findings."""

    findings: list[Finding]

    @property
    def ok(self) -> bool:
        """No check failed with a warning or an error (what ``--strict`` and exit statuses say)."""
        return all(f.passed or f.severity == "info" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        out: dict[str, Any] = asdict(self)  # type: ignore[call-overload]
        out["ok"] = self.ok
        return out
