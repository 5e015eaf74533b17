"""``reproloader`` / ``python -m reproloader``: thin formatting over audit.py and state.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["main"]


def _colour(stream: TextIO) -> bool:
    return (
        stream.isatty() and os.environ.get("NO_COLOR") is None and os.environ.get("TERM") != "dumb"
    )


def _mark(passed: bool, severity: str, colour: bool) -> str:
    text = "ok " if passed else {"info": "note", "warning": "WARN", "error": "FAIL"}[severity]
    if not colour:
        return f"{text:4}"
    code = "32" if passed else {"info": "36", "warning": "33", "error": "31"}[severity]
    return f"\033[{code}m{text:4}\033[0m"


def _print_doctor(report: Any, out: TextIO) -> None:
    colour = _colour(out)
    print("reproloader doctor", file=out)
    print("\nversions", file=out)
    for name, version in report.versions.items():
        print(f"  {name:<22} {version}", file=out)
    print("\ndeterminism settings", file=out)
    for name, value in report.settings.items():
        print(f"  {name:<26} {value}", file=out)
    print("\nenvironment", file=out)
    for name, value in report.environment.items():
        print(f"  {name:<26} {value if value is not None else '(not set)'}", file=out)
    print(f"\nstart method: {report.start_method}", file=out)
    cuda = report.cuda
    print(
        f"CUDA: {'available' if cuda['available'] else 'not available'}"
        + (f", runtime {cuda['runtime']}" if cuda["runtime"] else "")
        + (f", cuDNN {cuda['cudnn']}" if cuda["cudnn"] else "")
        + (f", devices {', '.join(cuda['devices'])}" if cuda["devices"] else ""),
        file=out,
    )
    print("\nchecks", file=out)
    for f in report.findings:
        print(f"  {_mark(f.passed, f.severity, colour)} {f.check}: {f.evidence}", file=out)
        if not f.passed and f.fix:
            print(f"       fix: {f.fix}", file=out)
    verdict = "nothing off" if report.ok else "something is off (see WARN/FAIL above)"
    print(f"\n{verdict}", file=out)


def _doctor(args: argparse.Namespace) -> int:
    from reproloader.audit import doctor
    from reproloader.config import ReproConfig

    if args.config is not None:
        ReproConfig.load(args.config).apply()
    report = doctor()
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        print()
    else:
        _print_doctor(report, sys.stdout)
    return 1 if args.strict and not report.ok else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reproloader", description="Reproducible data loading for PyTorch."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    doctor = commands.add_parser(
        "doctor",
        help="what in this environment is not reproducible",
        description="Print versions, torch's determinism switches, the environment, the "
        "start method and the CUDA/cuDNN state, and say in plain words what is not "
        "reproducible with them.",
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument(
        "--strict", action="store_true", help="exit 1 when a check warns or fails (for CI)"
    )
    doctor.add_argument(
        "--config", metavar="FILE", help="apply a ReproConfig file (.toml/.json) first"
    )
    doctor.set_defaults(run=_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reproloader`` command."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError:  # `reproloader doctor | head`: the reader left, nothing to say
        sys.stdout = None
        return 0


if __name__ == "__main__":
    sys.exit(main())
