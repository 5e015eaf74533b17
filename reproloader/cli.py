"""``reproloader`` / ``python -m reproloader``: thin formatting over the doctor, the audit and the ledger.

Exit statuses, for scripts and CI: 0 done (nothing found, or findings that do not
count; ``diff``: the runs are the same); 1 problems found (``audit``, ``doctor
--strict``; ``diff``: the runs differ); 2 the command could not run
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


def _print_diff(diff: Any, a: str, b: str, out: TextIO) -> None:
    print(f"reproloader diff\n  A: {a}\n  B: {b}\n", file=out)
    if diff.first is not None:
        print(diff.first.describe(), file=out)
    else:
        print(f"no batch differs ({diff.compared:,} compared on every rank both hold)", file=out)
    if diff.changes:
        title = "header fields that differ" + (" (likely causes)" if not diff.same else "")
        print(f"\n{title}:", file=out)
        for change in diff.changes:
            print(f"  {change.cause}", file=out)
    if diff.notes:
        print("\nnotes:", file=out)
        for note in diff.notes:
            print(f"  {note}", file=out)
    print("\nthe runs are the same" if diff.same else "\nthe runs differ", file=out)


def _ledger_error(error: Exception) -> UsageError:
    return UsageError(
        str(error), "give a ledger directory (the ledger= of a ReproLoader) or a rank file"
    )


def _diff(args: argparse.Namespace) -> int:
    from reproloader._diagnose.ledger import LedgerReadError, diff_ledgers

    try:
        diff = diff_ledgers(args.a, args.b)
    except LedgerReadError as error:
        raise _ledger_error(error) from error
    if args.json:
        json.dump(
            {
                "same": diff.same,
                "first": None if diff.first is None else vars(diff.first),
                "changes": [vars(c) for c in diff.changes],
                "notes": diff.notes,
                "compared": diff.compared,
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        _print_diff(diff, args.a, args.b, sys.stdout)
    return 0 if diff.same else FOUND


def _steps(specs: Sequence[str]) -> list[int]:
    steps: list[int] = []
    for spec in specs:
        first, dash, last = spec.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise UsageError(
                f"--steps {spec!r} is not a step or a range", "give steps as 120 or 120-130"
            ) from None
        if high < low:
            raise UsageError(f"--steps {spec!r} runs backwards", f"give {high}-{low}")
        steps.extend(range(low, high + 1))
    return steps


def _ledger(args: argparse.Namespace) -> int:
    from reproloader._diagnose.ledger import LedgerReadError, read_ledger

    try:
        ranks = read_ledger(args.path)
    except LedgerReadError as error:
        raise _ledger_error(error) from error
    if args.rank is not None and args.rank not in ranks:
        raise UsageError(
            f"{args.path} holds no rank {args.rank}", f"give one of ranks {sorted(ranks)}"
        )
    chosen = [ranks[args.rank]] if args.rank is not None else list(ranks.values())
    steps = _steps(args.steps or [])
    rows: list[dict[str, Any]] = []
    for ledger in chosen:
        by_step = ledger.by_step()
        if not steps:
            header = ledger.header
            print(
                f"rank {ledger.rank}: {ledger.path}, {len(by_step):,} batches, seed "
                f"{header.get('seed')}, {header.get('rng_scope')} scope, world size "
                f"{header.get('world_size')}, num_workers {header.get('num_workers')}"
            )
            for segment in ledger.segments[1:]:
                point = segment.header.get("resumed_at") or {}
                print(
                    f"  resumed at epoch {point.get('epoch')}, batch {point.get('batch')} "
                    f"(step {point.get('step')}), line {segment.line}"
                )
            for note in ledger.torn_notes("  "):
                print(note.strip())
            continue
        for step in steps:
            record = by_step.get(step)
            if record is None:
                print(f"rank {ledger.rank} step {step}: not recorded")
                continue
            rows.append({"rank": ledger.rank, **record})
            indices = record.get("indices", "(indices not recorded)")
            if args.json:
                continue
            print(
                f"rank {ledger.rank} step {step}: epoch {record['epoch']} batch "
                f"{record['batch']} indices {json.dumps(indices)}"
            )
    if args.json and steps:
        json.dump(rows, sys.stdout, indent=2)
        print()
    return 0


def _batch(args: argparse.Namespace) -> int:
    from reproloader._diagnose.experiments import TargetError
    from reproloader._diagnose.ledger import LedgerReadError, batch_to_file, step_position

    if args.path:
        sys.path.insert(0, os.getcwd())
    if args.step is not None:
        if args.ledger is None or args.epoch is not None or args.batch is not None:
            raise UsageError(
                "--step needs --ledger (where the step is recorded), without --epoch/--batch",
                "give --ledger PATH --step S, or --epoch E --batch B",
            )
        try:
            epoch, batch, world_size = step_position(args.ledger, args.step, args.rank)
        except LedgerReadError as error:
            raise _ledger_error(error) from error
        if args.world_size is None:
            args.world_size = world_size
    elif args.epoch is None or args.batch is None:
        raise UsageError(
            "give which batch: --epoch and --batch, or --ledger and --step",
            "e.g. --epoch 3 --batch 120 --rank 5",
        )
    else:
        epoch, batch = args.epoch, args.batch
    try:
        batch_to_file(
            args.target,
            epoch=epoch,
            batch=batch,
            rank=args.rank,
            world_size=args.world_size,
            out=args.out,
        )
    except TargetError as error:
        raise UsageError(error.problem, error.fix) from error
    print(f"wrote epoch {epoch}, batch {batch}, rank {args.rank} to {args.out}")
    return 0


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
    diff = commands.add_parser(
        "diff",
        help="where and why two runs' ledgers differ",
        description="Compare two run ledgers (ReproLoader(ledger=...)): print the first "
        "(epoch, batch, rank) where they differ, whether the indices differ or only the "
        "values, and the header fields that differ (seed, versions, dataset length, "
        "num_workers under worker scope...), in words. Torn last lines (a killed "
        "process) are skipped and reported.",
        epilog="exit status: 0 the runs are the same (a header field that does not change "
        "the batches, such as a torch version, is printed but does not count); 1 they "
        "differ: a batch, the ranks, or a header field that changes the batches; 2 A or B "
        "is not a ledger",
    )
    diff.add_argument("a", help="a ledger directory, or one rank-NNNNN.jsonl file")
    diff.add_argument("b", help="the ledger to compare it with")
    diff.add_argument("--json", action="store_true", help="machine-readable output")
    diff.set_defaults(run=_diff)
    ledger = commands.add_parser(
        "ledger",
        help="summarize a run ledger, or print the indices of given steps",
        description="Without --steps: each rank's batches, seed, scope, resumes and torn "
        "lines. With --steps: each step's epoch, batch index and dataset indices.",
        epilog="exit status: 0; 2 PATH is not a ledger or --steps is malformed",
    )
    ledger.add_argument("path", help="a ledger directory, or one rank-NNNNN.jsonl file")
    ledger.add_argument(
        "--steps", nargs="+", metavar="S", help="steps (global, per rank): 120 or 120-130"
    )
    ledger.add_argument("--rank", type=int, help="only this rank")
    ledger.add_argument("--json", action="store_true", help="machine-readable output")
    ledger.set_defaults(run=_ledger)
    batch = commands.add_parser(
        "batch",
        help="write one batch of a run to a file (torch.save), made on demand",
        description="Build the loader from TARGET (module:function, as audit takes) and "
        "write the batch of the given epoch, batch index and rank to --out with "
        "torch.save, without iterating the batches before it. Name it by --epoch and "
        "--batch, or by --step and the run's --ledger.",
        epilog="exit status: 0 written; 2 TARGET cannot be imported or gives no "
        "ReproLoader, or the batch is not in the run",
    )
    batch.add_argument("target", help="module:function returning the run's ReproLoader")
    batch.add_argument("--epoch", type=int)
    batch.add_argument("--batch", type=int, help="the batch index in the epoch")
    batch.add_argument("--rank", type=int, default=0, help="the rank (default 0)")
    batch.add_argument(
        "--world-size",
        type=int,
        help="the run's number of ranks (default: the ledger's with --ledger, else 1)",
    )
    batch.add_argument("--ledger", help="the run's ledger, to find --step in")
    batch.add_argument("--step", type=int, help="the global step (with --ledger)")
    batch.add_argument("--out", required=True, help="the file to write (torch.save)")
    batch.add_argument(
        "--no-path",
        dest="path",
        action="store_false",
        help="do not put the current directory on sys.path to import the target",
    )
    batch.set_defaults(run=_batch)
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
