"""``reproloader`` / ``python -m reproloader``: thin formatting over the doctor and the audit.

Exit statuses, for scripts and CI: 0 done (nothing found, or findings that do not
count); 1 problems found (``audit``, ``doctor --strict``); 2 the command could not run
as asked: a bad option, a config file or ``REPROLOADER_*`` variable that is missing or
invalid, an audit target that cannot be imported or gives no pipeline. A status-2 error
is one or two lines on stderr, the problem and a fix, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["main"]

FOUND = 1
"""Exit status: the command ran and found problems."""
USAGE = 2
"""Exit status: the command could not run as asked (argparse uses 2 for bad options too)."""


class UsageError(Exception):
    """A user error the CLI reports in two lines (problem, fix) with exit status 2."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


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
    print(f"\n{report.summary()}", file=out)


def _doctor(args: argparse.Namespace) -> int:
    from reproloader._diagnose.doctor import doctor

    if args.config is not None:
        _load_config(args.config).apply()
    report = doctor()
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        print()
    else:
        _print_doctor(report, sys.stdout)
    return FOUND if args.strict and not report.ok else 0


def _load_config(path: str) -> Any:
    from reproloader.config import ReproConfig
    from reproloader.exceptions import ConfigError

    try:
        return ReproConfig.load(path)
    except FileNotFoundError as error:
        raise UsageError(
            f"config file {path} does not exist",
            "give the path of a .toml or .json ReproConfig file (or a pyproject.toml)",
        ) from error
    except OSError as error:
        raise UsageError(
            f"cannot read config file {path}: {error.strerror or error}",
            "give the path of a readable .toml or .json file",
        ) from error
    except ConfigError as error:
        text = str(error)
        if text.startswith("environment variable"):
            fix = "correct or unset that REPROLOADER_* variable (the fields: docs/determinism.md)"
        elif text.startswith("cannot read a config"):
            fix = "give a .toml or .json file (or a pyproject.toml with [tool.reproloader])"
        elif text.startswith("config file") and ", field " not in text.partition(":")[0]:
            fix = f"correct {path}: a .toml or .json table of ReproConfig fields"
        else:
            fix = "correct that value (ReproConfig's fields and values: docs/determinism.md)"
        raise UsageError(text, fix) from error


def _print_audit(report: Any, out: TextIO) -> None:
    colour = _colour(out)
    print(f"reproloader audit: {report.target} ({report.seconds:.1f} s)\n", file=out)
    width = max(len(f.check) for f in report.findings)
    print(f"  {'problem':<{width}}  found  evidence", file=out)
    for f in report.findings:
        found = "no" if f.passed else "YES"
        if f.passed and f.severity == "info":
            found = "-"
        if colour:
            code = "32" if f.passed else "31" if f.severity == "error" else "33"
            found = f"\033[{code}m{found:<5}\033[0m"
        else:
            found = f"{found:<5}"
        print(f"  {f.check:<{width}}  {found}  {f.evidence}", file=out)
        if not f.passed and f.fix:
            print(f"  {'':<{width}}         fix: {f.fix}", file=out)
    failed = sum(not f.passed and f.severity != "info" for f in report.findings)
    print(f"\n{failed} problem(s) found" if failed else "\nno problem found", file=out)


def _audit(args: argparse.Namespace) -> int:
    from reproloader._diagnose.audit import audit
    from reproloader._diagnose.experiments import TargetError

    if args.path:
        sys.path.insert(0, os.getcwd())

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"auditing {message}", file=sys.stderr, flush=True)

    try:
        report = audit(
            args.target,
            workers=args.workers,
            start_methods=() if args.no_spawn else ("spawn",),
            fresh_processes=not args.no_fresh,
            progress=progress,
        )
    except TargetError as error:
        raise UsageError(error.problem, error.fix) from error
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        print()
    else:
        _print_audit(report, sys.stdout)
    return 0 if report.ok else FOUND


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reproloader",
        description="Reproducible data loading for PyTorch.",
        epilog="exit status: 0 done, 1 problems found, 2 could not run as asked (the "
        "error says why and how to fix it); `reproloader COMMAND --help` gives details",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    doctor = commands.add_parser(
        "doctor",
        help="what in this environment is not reproducible",
        description="Print versions, torch's determinism switches, the environment, the "
        "start method and the CUDA/cuDNN state, and say in plain words what is not "
        "reproducible with them. It ends with a count of notes, warnings and failures.",
        epilog="exit status: 0, also when something is off, unless --strict is given; "
        "1 with --strict when a check warns or fails (notes never count); "
        "2 when --config names a missing or invalid file, or a REPROLOADER_* variable "
        "is invalid (one line says which and how to fix it)",
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument(
        "--strict", action="store_true", help="exit 1 when a check warns or fails (for CI)"
    )
    doctor.add_argument(
        "--config", metavar="FILE", help="apply a ReproConfig file (.toml/.json) first"
    )
    doctor.set_defaults(run=_doctor)
    audit = commands.add_parser(
        "audit",
        help="find the reproducibility bugs of a data pipeline",
        description="Run short experiments on a pipeline (a few batches each) and report "
        "duplicated worker streams, epochs that repeat, results that change with num_workers "
        "or the start method, runs that differ with the same seed, broken mid-epoch resume, "
        "process-wide settings and RNG objects stored in the dataset.",
        epilog="exit status: 0 no problem found; 1 problems found; 2 the audit could not "
        "run: TARGET is not module:function, cannot be imported, names nothing, gives "
        "no DataLoader or Dataset, or its pipeline cannot make a batch (one or two lines "
        "on stderr say which and how to fix it)",
    )
    audit.add_argument(
        "target",
        help="module:function returning a DataLoader (or Dataset), e.g. mypkg.data:train_loader",
    )
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.add_argument("--workers", type=int, default=2, help="worker count to compare (default 2)")
    audit.add_argument(
        "--no-spawn", action="store_true", help="skip the spawn start-method comparison"
    )
    audit.add_argument("--no-fresh", action="store_true", help="skip the two fresh-process runs")
    audit.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    audit.add_argument(
        "--no-path",
        dest="path",
        action="store_false",
        help="do not put the current directory on sys.path to import the target",
    )
    audit.set_defaults(run=_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reproloader`` command; returns its exit status."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except UsageError as error:
        print(f"reproloader {args.command}: {error.problem}", file=sys.stderr)
        print(f"  fix: {error.fix}", file=sys.stderr)
        return USAGE
    except BrokenPipeError:  # `reproloader doctor | head`: the reader left, nothing to say
        sys.stdout = None
        return 0


if __name__ == "__main__":
    sys.exit(main())
