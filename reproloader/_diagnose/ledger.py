"""Reading run ledgers, and the diff that says where and why two runs parted.

A ledger (written by :mod:`reproloader._runtime.ledger`) is one JSON-lines file per
rank: a header, then a line per batch handed out; a resumed run appends a header
with ``resumed_at`` and goes on. Reading one gives each rank's *effective* record: a
resume point replaces what the earlier segment recorded from there on (batches a
killed run consumed after its last checkpoint were consumed again after the resume).
A line that is not whole JSON is a torn line, the mark of a process killed while it
wrote: it is skipped and reported, never an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Divergence",
    "HeaderChange",
    "LedgerDiff",
    "LedgerReadError",
    "RankLedger",
    "diff_ledgers",
    "header_changes",
    "read_ledger",
]

Key = tuple[int, int]
"""(epoch, batch index)."""


class LedgerReadError(ValueError):
    """A path that is not a ledger (or a folder of them); the message says what to give."""


@dataclass
class Segment:
    """One run (or one resumed continuation) in a rank's file: its header and batch lines."""

    header: dict[str, Any]
    line: int
    batches: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RankLedger:
    """One rank's ledger file, read.

    Attributes:
        path: the file.
        segments: the runs in it, in order (a resume starts a new segment).
        torn: ``(line number, where)`` of lines that are not whole JSON: ``"last"``
            for the file's last line (the writer was killed mid-line), ``"middle"``
            otherwise (killed, then resumed).
    """

    path: Path
    segments: list[Segment]
    torn: list[tuple[int, str]]

    @property
    def header(self) -> dict[str, Any]:
        """The first run's header."""
        return self.segments[0].header

    @property
    def rank(self) -> int:
        return int(self.header.get("rank", 0))

    def records(self) -> dict[Key, dict[str, Any]]:
        """The batches the run consumed, by (epoch, batch): resumes replace what followed their point."""
        out: dict[Key, dict[str, Any]] = {}
        for segment in self.segments:
            resumed = segment.header.get("resumed_at")
            if resumed is not None:
                point = (int(resumed["epoch"]), int(resumed["batch"]))
                out = {key: value for key, value in out.items() if key < point}
            for record in segment.batches:
                out[(int(record["epoch"]), int(record["batch"]))] = record
        return dict(sorted(out.items()))

    def by_step(self) -> dict[int, dict[str, Any]]:
        """The effective records by global step."""
        return {int(r["step"]): r for r in self.records().values()}

    def torn_notes(self, name: str) -> list[str]:
        notes = []
        for line, where in self.torn:
            if where == "last":
                notes.append(
                    f"{name} {self.path}: the last line ({line}) is torn: the process "
                    "was killed while writing it; it is skipped"
                )
            else:
                notes.append(
                    f"{name} {self.path}: line {line} is torn (a killed run, resumed "
                    "after it); it is skipped"
                )
        return notes


def _read_file(path: Path) -> RankLedger:
    segments: list[Segment] = []
    torn: list[tuple[int, str]] = []
    with open(path, "rb") as f:
        raw_lines = f.read().split(b"\n")
    last = len(raw_lines) - (1 if raw_lines and raw_lines[-1] == b"" else 0)
    for number, raw in enumerate(raw_lines[:last], start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            torn.append((number, "last" if number == last else "middle"))
            continue
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind == "header":
            segments.append(Segment(record, number))
        elif kind == "batch" and segments:
            segments[-1].batches.append(record)
        else:
            raise LedgerReadError(
                f"{path}, line {number}: not a reproloader ledger line (expected a header "
                "first, then batch lines); give a file a ReproLoader(ledger=...) wrote"
            )
    if not segments:
        raise LedgerReadError(
            f"{path} holds no ledger header; give a file a ReproLoader(ledger=...) wrote"
        )
    return RankLedger(path, segments, torn)


def read_ledger(path: str | Path) -> dict[int, RankLedger]:
    """A ledger file, or a folder of per-rank ledgers, by rank.

    Raises:
        LedgerReadError: the path does not exist, holds no ``rank-*.jsonl`` file, or
            a file in it is not a ledger.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("rank-*.jsonl"))
        if not files:
            raise LedgerReadError(
                f"{path} holds no ledger file (rank-NNNNN.jsonl); give the directory "
                "passed as ReproLoader(ledger=...) or one of its files"
            )
    elif path.is_file():
        files = [path]
    else:
        raise LedgerReadError(
            f"{path} does not exist; give a ledger directory or a rank-NNNNN.jsonl file"
        )
    ranks: dict[int, RankLedger] = {}
    for file in files:
        ledger = _read_file(file)
        if ledger.rank in ranks:
            raise LedgerReadError(
                f"{file} and {ranks[ledger.rank].path} both hold rank {ledger.rank}; "
                "give one run's ledger directory"
            )
        ranks[ledger.rank] = ledger
    return dict(sorted(ranks.items()))


# -- headers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderChange:
    """A header field two runs differ in.

    Attributes:
        field: the field (dotted for nested ones: ``versions.torch``).
        a: its value in the first run.
        b: in the second.
        cause: the difference in words (``"seed 0 vs 1"``).
        changes_data: whether it changes the batches by itself (a seed does; a
            torch version may; ``num_workers`` in batch scope does not).
    """

    field: str
    a: Any
    b: Any
    cause: str
    changes_data: bool


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else repr(value)


# Fields compared, in the order they are reported: the likeliest causes first.
_RECIPE = (
    ("seed", "seed"),
    ("dataset_length", "dataset length"),
    ("rng_scope", "rng scope"),
    ("batch_size", "batch size"),
    ("drop_last", "drop_last"),
    ("shuffle", "shuffle"),
    ("sampler", "sampler"),
    ("world_size", "world size"),
    ("shard", "shard"),
    ("reseed_globals", "reseed_globals"),
    ("reseed_dataset_rngs", "reseed_dataset_rngs"),
)
_NOT_COMPARED = {
    "kind",
    "dataset_type",
    "rank",
    "resumed_at",
    "written_at",
    "versions",
    "config",
    "num_workers",
    "in_order",
}


def header_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[HeaderChange]:
    """Every header field two runs differ in, likeliest causes first, each in words."""
    changes: list[HeaderChange] = []
    for name, words in _RECIPE:
        if a.get(name) != b.get(name):
            x, y = a.get(name), b.get(name)
            changes.append(HeaderChange(name, x, y, f"{words} {_number(x)} vs {_number(y)}", True))
    worker_scope = "worker" in (a.get("rng_scope"), b.get("rng_scope"))
    if a.get("num_workers") != b.get("num_workers"):
        x, y = a.get("num_workers"), b.get("num_workers")
        if worker_scope:
            cause, data = f"worker scope with {x} vs {y} workers", True
        else:
            cause = f"num_workers {x} vs {y} (does not change the batches in {a.get('rng_scope')} scope)"
            data = False
        changes.append(HeaderChange("num_workers", x, y, cause, data))
    if a.get("in_order") != b.get("in_order"):
        x, y = a.get("in_order"), b.get("in_order")
        changes.append(
            HeaderChange("in_order", x, y, f"in_order {x} vs {y} (may reorder batches)", False)
        )
    if a.get("dataset_type") != b.get("dataset_type"):
        x, y = a.get("dataset_type"), b.get("dataset_type")
        # The class's name alone changes no batch (the batches themselves are compared).
        changes.append(HeaderChange("dataset_type", x, y, f"dataset type {x} vs {y}", False))
    for package in ("torch", "numpy", "python", "reproloader"):
        x = (a.get("versions") or {}).get(package)
        y = (b.get("versions") or {}).get(package)
        if x != y:
            changes.append(
                HeaderChange(f"versions.{package}", x, y, f"{package} {x} vs {y}", False)
            )
    config_a, config_b = a.get("config") or {}, b.get("config") or {}
    for name in sorted(set(config_a) | set(config_b)):
        x, y = config_a.get(name), config_b.get(name)
        if name in ("seed", "rng_scope") or x == y:
            continue  # the effective seed and scope are compared above
        if isinstance(x, dict) and isinstance(y, dict):
            changes += [
                HeaderChange(
                    f"config.{name}.{sub}",
                    x.get(sub),
                    y.get(sub),
                    f"config {name}.{sub} {x.get(sub)!r} vs {y.get(sub)!r}",
                    False,
                )
                for sub in sorted(set(x) | set(y))
                if x.get(sub) != y.get(sub)
            ]
            continue
        changes.append(HeaderChange(f"config.{name}", x, y, f"config {name} {x!r} vs {y!r}", False))
    for name in sorted((set(a) | set(b)) - _NOT_COMPARED - {n for n, _ in _RECIPE}):
        if name in ("format", "version", "digest", "content") or a.get(name) == b.get(name):
            continue
        changes.append(
            HeaderChange(
                name, a.get(name), b.get(name), f"{name} {a.get(name)!r} vs {b.get(name)!r}", False
            )
        )
    return changes


# -- the diff ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Divergence:
    """The first batch where two runs differ.

    Attributes:
        epoch: its epoch.
        batch: its batch index in the epoch.
        rank: its rank.
        step_a: its global step in the first run (None: not recorded there).
        step_b: in the second.
        what: ``"indices"`` (other samples), ``"values"`` (the same indices, other
            content), ``"missing in A"`` or ``"missing in B"``.
        gap: where a batch is missing, where the run that lacks it has batches:
            ``"after"`` (it stops before the batch), ``"before"`` (it starts after:
            a run started from a later checkpoint), ``"around"`` (it has batches on
            both sides: skipped with ``skip_batches``/``skip_steps``, or a torn line);
            None otherwise.
    """

    epoch: int
    batch: int
    rank: int
    step_a: int | None
    step_b: int | None
    what: str
    gap: str | None = None

    def describe(self) -> str:
        where = f"epoch {self.epoch}, batch {self.batch}, rank {self.rank}"
        steps = f" (step {self.step_a if self.step_a is not None else self.step_b})"
        if self.step_a is not None and self.step_b is not None and self.step_a != self.step_b:
            steps = f" (step {self.step_a} in A, {self.step_b} in B)"
        text = {
            "indices": "the indices differ: the runs read other samples",
            "values": "the same indices, other values: the samples' content or their "
            "randomness (augmentation) differs",
            "missing in A": "recorded in B only",
            "missing in B": "recorded in A only",
        }[self.what]
        if self.what.startswith("missing"):
            lacking = self.what[-1]
            text += {
                "after": f" ({lacking} stops before it)",
                "before": f" ({lacking} starts after it: a run started from a later checkpoint)",
                "around": f" ({lacking} has batches before and after it: skipped with "
                "skip_batches/skip_steps, or a torn line)",
            }.get(self.gap or "after", "")
        return f"first difference at {where}{steps}: {text}"


@dataclass(frozen=True)
class LedgerDiff:
    """What :func:`diff_ledgers` found.

    Attributes:
        first: the first differing (epoch, batch, rank), or None.
        changes: header fields that differ (between the two runs' first headers).
        notes: other facts: torn lines, resumes whose header changed, rank sets,
            digest algorithms, batches compared.
        compared: how many batches were compared.
    """

    first: Divergence | None
    changes: list[HeaderChange]
    notes: list[str]
    compared: int
    ranks_differ: bool = False

    @property
    def same(self) -> bool:
        """No batch differs, both have the same ranks, and no header field that changes data."""
        return (
            self.first is None
            and not self.ranks_differ
            and not any(c.changes_data for c in self.changes)
        )


def _first_difference(
    rank: int, a: Mapping[Key, dict[str, Any]], b: Mapping[Key, dict[str, Any]], *, values: bool
) -> Divergence | None:
    gap = None
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if x is None or y is None:
            what = "missing in A" if x is None else "missing in B"
            held = b if x is not None else a  # the batches of the run that lacks it
            if not held or key > max(held):
                gap = "after"
            elif key < min(held):
                gap = "before"
            else:
                gap = "around"
        elif x.get("indices_digest") != y.get("indices_digest"):
            what = "indices"
        elif values and x.get("content_digest") != y.get("content_digest"):
            what = "values"
        else:
            continue
        return Divergence(
            key[0],
            key[1],
            rank,
            None if x is None else int(x["step"]),
            None if y is None else int(y["step"]),
            what,
            gap,
        )
    return None


def _resume_notes(name: str, ledger: RankLedger) -> Iterable[str]:
    first = ledger.segments[0].header
    for segment in ledger.segments[1:]:
        point = segment.header.get("resumed_at") or {}
        changed = [c.cause for c in header_changes(first, segment.header)]
        where = f"epoch {point.get('epoch')}, batch {point.get('batch')}"
        if changed:
            yield (
                f"{name} rank {ledger.rank} was resumed at {where} with "
                + "; ".join(changed)
                + " (first run vs resumed run)"
            )


def diff_ledgers(a: str | Path, b: str | Path) -> LedgerDiff:
    """Compare two ledgers (files or folders of per-rank files).

    Raises:
        LedgerReadError: either path is not a ledger.
    """
    left, right = read_ledger(a), read_ledger(b)
    notes: list[str] = []
    for name, ranks in (("A", left), ("B", right)):
        for ledger in ranks.values():
            notes += ledger.torn_notes(name)
            notes += list(_resume_notes(name, ledger))
    ranks_differ = set(left) != set(right)
    if ranks_differ:
        notes.append(f"A has ranks {sorted(left)}, B has ranks {sorted(right)}")
    common = sorted(set(left) & set(right))
    first_a, first_b = left[min(left)].header, right[min(right)].header
    changes = header_changes(first_a, first_b)
    values = True
    for name in ("digest", "content"):
        if first_a.get(name) != first_b.get(name):
            values = False
            notes.append(
                f"content digests made with {name} {first_a.get(name)!r} vs "
                f"{first_b.get(name)!r}: only the indices are compared"
            )
    if values and first_a.get("content") == "sampled":
        # Nothing silent: "same" then means the same on the bytes the digest read.
        notes.append(
            "content digests are sampled (Ledger content='sampled'): a tensor over 1 MiB is "
            "compared on a sample of its bytes; record with Ledger(dir, content='full') to "
            "compare every byte"
        )
    divergences = []
    compared = 0
    for rank in common:
        records_a, records_b = left[rank].records(), right[rank].records()
        compared += len(set(records_a) & set(records_b))
        found = _first_difference(rank, records_a, records_b, values=values)
        if found is not None:
            divergences.append(found)
    first = min(divergences, key=lambda d: (d.epoch, d.batch, d.rank), default=None)
    return LedgerDiff(first, changes, notes, compared, ranks_differ)


# -- one batch, on demand ------------------------------------------------------------------


def step_position(path: str | Path, step: int, rank: int) -> tuple[int, int, int]:
    """The (epoch, batch, world size) a ledger recorded as ``step`` on ``rank``.

    Raises:
        LedgerReadError: not a ledger, or no such rank or step in it.
    """
    ranks = read_ledger(path)
    if rank not in ranks:
        raise LedgerReadError(f"{path} holds no rank {rank} (its ranks: {sorted(ranks)})")
    record = ranks[rank].by_step().get(step)
    if record is None:
        steps = ranks[rank].by_step()
        span = f"{min(steps)}-{max(steps)}" if steps else "none"
        raise LedgerReadError(f"{path} rank {rank} recorded no step {step} (its steps: {span})")
    world_size = int(ranks[rank].header.get("world_size") or 1)
    return int(record["epoch"]), int(record["batch"]), world_size


def batch_to_file(
    target: Any,
    *,
    epoch: int,
    batch: int,
    rank: int,
    out: str | Path,
    world_size: int | None = None,
) -> Any:
    """Build the loader from ``target`` (as :func:`reproloader.audit` takes), make one batch, ``torch.save`` it.

    The batch is ``loader.batch_at(epoch, batch, rank=rank, world_size=world_size)``:
    made on demand, without iterating the batches before it (``world_size`` None: this
    process's). Returns the batch.

    Raises:
        TargetError: ``target`` cannot be imported or called, gives no loader, or a
            loader without ``batch_at`` (a ReproLoader has it).
    """
    import torch

    from reproloader._diagnose.experiments import TargetError, load_target, raised

    loader = load_target(target)
    batch_at = getattr(loader, "batch_at", None)
    if batch_at is None:
        raise TargetError(
            f"{target} gave a {type(loader).__name__}, which cannot make a batch on demand "
            "(no batch_at method)",
            "return a reproloader.ReproLoader built as in the run",
        )
    where = {"rank": rank} if world_size is None else {"rank": rank, "world_size": world_size}
    try:
        data = batch_at(epoch, batch, **where)
    except (ValueError, IndexError, TypeError) as error:
        asked = ", ".join(f"{k}={v}" for k, v in where.items())
        raise TargetError(
            f"{target}: batch_at({epoch}, {batch}, {asked}) raised {raised(error)}",
            "give an epoch, batch and rank the run has (reproloader ledger PATH lists them)",
        ) from error
    torch.save(data, out)
    return data
