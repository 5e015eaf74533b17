"""Fuzzing ``ReproLoader.load_state_dict`` with mutated real states (issue 12, point 2).

For each loader configuration, real states are taken at several stop points; every key
path of each state (nested dicts and lists included) is then mutated: deleted, or
replaced by a value of another type or out of range. Each mutated state is loaded into
a fresh loader of the same configuration, which then runs the rest of the epoch and
the next one. The outcome of a case is one of:

- ``REFUSED``: ``load_state_dict`` raised a :class:`reproloader.StateError`;
- ``EXACT``: the batches equal, bit for bit, those the unmutated state resumes to;
- ``WRONG``: the state loaded and the batches differ (a silent failure);
- ``WARNED``: the state loaded with a warning, and the batches differ (the user was
  told at load: a state without what it would need to be exact, as an older release
  may have written);
- ``BARE``: any other exception, at load or while iterating (a ``StateError`` raised
  only while iterating too: the state was half used);
- ``HANG``: no result within the case's time limit;
- ``USER``: the mutation is inside the user dataset's own ``state_dict`` value, which
  only the user can validate; counted apart, whatever happened (the detail says what);
- ``DIRTY``: refused, but the loader did not stay as it was (its next pass is not a
  fresh loader's first one).

Each case runs in a forked child process (its workers in its own process group), so a
hang is killed at the time limit and nothing a case does leaks into the next.

Run ``python tests/statefuzz.py [--quick]`` (with ``PYTHONPATH`` at the checkout).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import os
import pickle
import random
import select
import signal
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import RandomSampler, WeightedRandomSampler

from reproloader import ReproLoader, StateError, get_context
from tests.datasets import AllSources, Curriculum, StatefulStream, Stream, _StreamIterator

OUTCOMES = ("REFUSED", "EXACT", "WRONG", "WARNED", "BARE", "HANG", "USER", "DIRTY")
FAILURES = ("WRONG", "BARE", "HANG", "DIRTY")

N, BATCH = 24, 4  # 6 batches an epoch
CASE_TIMEOUT = 20.0
QUIET_CHILDREN = True

Path = tuple[Any, ...]
_MISSING = object()

# -- datasets: every value depends on every RNG -----------------------------------


def _ctx_draw() -> float:
    return float(get_context().rng.random())


class RngStream(Stream):
    """``Stream`` that also draws from the context's Generator."""

    def __iter__(self) -> Iterator[torch.Tensor]:
        for item in super().__iter__():
            yield torch.cat([item, torch.tensor([_ctx_draw()], dtype=torch.float64)])


class _RngStreamIterator(_StreamIterator):
    def __next__(self) -> torch.Tensor:
        item = super().__next__()
        return torch.cat([item, torch.tensor([_ctx_draw()], dtype=torch.float64)])


class RngStatefulStream(StatefulStream):
    """``StatefulStream`` (its iterator has ``state_dict``) drawing from the context too."""

    def __iter__(self) -> _RngStreamIterator:
        it = super().__iter__()
        return _RngStreamIterator(it.n, it.i, it.step)


class RngCurriculum(Curriculum):
    """``Curriculum`` (a map-style dataset with its own state) drawing from every RNG."""

    def __getitem__(self, i: int) -> torch.Tensor:
        item = super().__getitem__(i)
        extra = [float(np.random.random()), float(torch.rand(())), _ctx_draw()]
        return torch.cat([item, torch.tensor(extra, dtype=torch.float64)])


class RngPasses(Stream):
    """``RngStream`` whose dataset counts its passes (its own state, kept by each copy)."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.passes = 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        for item in super().__iter__():
            yield torch.cat([item, torch.tensor([_ctx_draw(), self.passes], dtype=torch.float64)])
        self.passes += 1

    def state_dict(self) -> dict[str, int]:
        return {"passes": self.passes}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.passes = state["passes"]


# What the user datasets' own state_dict returns: mutations inside it are the user's.
USER_STATE_KEYS = ({"i"}, {"level"}, {"passes"})


def _is_user_state(value: Any) -> bool:
    return isinstance(value, dict) and set(value) in USER_STATE_KEYS


# -- configurations ---------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """A named factory of identically built loaders."""

    name: str
    make: Callable[[], ReproLoader[Any]]
    workers: int


def _loader(dataset: Any, workers: int, **kwargs: Any) -> ReproLoader[Any]:
    if workers:
        kwargs.setdefault("multiprocessing_context", "fork")
    return ReproLoader(dataset, batch_size=BATCH, num_workers=workers, seed=0, **kwargs)


def _weighted() -> ReproLoader[Any]:
    weights = torch.linspace(1.0, 2.0, N, dtype=torch.float64)
    return _loader(AllSources(N), 0, sampler=WeightedRandomSampler(weights, N))


def _random_with_generator() -> ReproLoader[Any]:
    gen = torch.Generator().manual_seed(7)
    return _loader(AllSources(N), 0, sampler=RandomSampler(AllSources(N), generator=gen))


CONFIGS: tuple[Config, ...] = (
    Config("map-batch-shuffle-w0", lambda: _loader(AllSources(N), 0, shuffle=True), 0),
    Config("map-batch-shuffle-w2", lambda: _loader(AllSources(N), 2, shuffle=True), 2),
    Config(
        "map-sample-w0",
        lambda: _loader(AllSources(N), 0, shuffle=True, rng_scope="sample"),
        0,
    ),
    Config(
        "map-worker-w0",
        lambda: _loader(AllSources(N), 0, shuffle=True, rng_scope="worker"),
        0,
    ),
    Config(
        "map-worker-w2",
        lambda: _loader(AllSources(N), 2, shuffle=True, rng_scope="worker"),
        2,
    ),
    Config("map-shard-w0", lambda: _loader(AllSources(N), 0, shuffle=True, shard=True), 0),
    Config("map-weighted-sampler-w0", _weighted, 0),
    Config("map-random-sampler-generator-w0", _random_with_generator, 0),
    Config("iterable-w0", lambda: _loader(RngStream(N), 0), 0),
    Config("iterable-w2", lambda: _loader(RngStream(N), 2), 2),
    Config("iterable-stateful-w0", lambda: _loader(RngStatefulStream(N), 0), 0),
    Config("iterable-stateful-w2", lambda: _loader(RngStatefulStream(N), 2), 2),
    Config("map-stateful-w0", lambda: _loader(RngCurriculum(N), 0, shuffle=True), 0),
    Config("map-stateful-w2", lambda: _loader(RngCurriculum(N), 2, shuffle=True), 2),
    # Persistent workers keep their copies of the dataset: a pass's end carries them.
    Config(
        "map-stateful-w2-persistent",
        lambda: _loader(RngCurriculum(N), 2, shuffle=True, persistent_workers=True),
        2,
    ),
    # Its own state counts passes, not positions: mid-pass it resumes by replay.
    Config(
        "iterable-passes-replay-w2-persistent",
        lambda: _loader(
            RngPasses(N), 2, persistent_workers=True, config={"iterable_resume": "replay"}
        ),
        2,
    ),
    Config(
        "iterable-passes-replay-w0",
        lambda: _loader(RngPasses(N), 0, config={"iterable_resume": "replay"}),
        0,
    ),
)

# (name, batches handed out, taken after the loop ended): 0 (before iter(loader), and
# right after it), 1, mid, end, finished.
AFTER_ITER = "after-iter"
STOPS: tuple[tuple[str, int, bool], ...] = (
    ("start", 0, False),
    (AFTER_ITER, 0, False),
    ("after-1", 1, False),
    ("mid", 3, False),
    ("end", 6, False),
    ("finished", 6, True),
)

QUICK_STOPS = tuple(s for s in STOPS if s[0] in ("after-1", "end", "finished"))

# -- mutations --------------------------------------------------------------------

REPLACEMENTS: tuple[tuple[str, Any], ...] = (
    ("None", None),
    ('"x"', "x"),
    ("1.5", 1.5),
    ("-1", -1),
    ("2**70", 2**70),
    ("[]", []),
    ("{}", {}),
)
WIDE_REPLACEMENTS = tuple(
    ("2**130", 2**130) if label == "2**70" else (label, value) for label, value in REPLACEMENTS
)
LONG_LIST = 8  # lists longer than this, all numbers (RNG words): a few elements only


@dataclass(frozen=True)
class Mutation:
    """One change at one key path: ``kind`` is ``delete``, ``replace:<v>``, ``shorten``, ``dtype``."""

    path: Path
    kind: str
    value: Any = None
    user: bool = False  # inside the user's own state

    def describe(self) -> str:
        return f"{format_path(self.path)} {self.kind}"


def format_path(path: Path) -> str:
    """``workers._snapshot.worker_0.key[3]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "<state>"


def _numbers(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def children(value: Any) -> list[tuple[Any, Any]]:
    """The (key, child) pairs to recurse into: dict items; list items, a few if long."""
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, (list, tuple)):
        n = len(value)
        if n > LONG_LIST and _numbers(value):
            return [(i, value[i]) for i in sorted({0, n // 2, n - 1})]
        return list(enumerate(value))
    return []


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return False
    return type(a) is type(b) and a == b


def is_wide(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64


def mutations(state: Any, path: Path = (), user: bool = False) -> Iterator[Mutation]:
    """Every mutation of every key path below ``path`` (the root itself excluded)."""
    for key, child in children(state):
        here, in_user = (*path, key), user or _is_user_state(state)
        if isinstance(state, dict):
            yield Mutation(here, "delete", user=in_user)
        # Replacing the whole user value is the user's too: only they know what is valid.
        replace_user = in_user or _is_user_state(child)
        # Out of range is the point: 2**70 is a valid value of a 128-bit word (PCG64's
        # state and increment), another RNG state rather than damage.
        for label, new in WIDE_REPLACEMENTS if is_wide(child) else REPLACEMENTS:
            if not _same(child, new):
                yield Mutation(here, f"replace:{label}", new, user=replace_user)
        if isinstance(child, (list, tuple)) and child:
            yield Mutation(here, "shorten", user=replace_user)
        if isinstance(child, torch.Tensor):
            yield Mutation(here, "shorten", user=replace_user)
            yield Mutation(here, "dtype", user=replace_user)
        yield from mutations(child, here, in_user)


def apply(state: dict[str, Any], mutation: Mutation) -> dict[str, Any]:
    """A deep copy of ``state`` with ``mutation`` applied."""
    out = copy.deepcopy(state)
    *parents, last = mutation.path
    holder: Any = out
    chain = []
    for key in parents:
        chain.append((holder, key))
        holder = holder[key]
    if isinstance(holder, tuple):  # rebuild tuples up the chain as lists
        holder = list(holder)
        parent, key = chain[-1]
        parent[key] = holder
    old = holder[last]
    if mutation.kind == "delete":
        del holder[last]
    elif mutation.kind == "shorten":
        holder[last] = old[:-1]
    elif mutation.kind == "dtype":
        holder[last] = old.to(torch.int64)
    else:
        holder[last] = copy.deepcopy(mutation.value)
    return out


# -- running ----------------------------------------------------------------------


def passes(loader: ReproLoader[Any], count: int = 2) -> list[list[Any]]:
    """``count`` passes over the loader (after a load: the rest of the epoch, the next)."""
    return [list(loader) for _ in range(count)]


def equal(a: list[list[Any]], b: list[list[Any]]) -> bool:
    """Bitwise equality of two lists of passes of tensor batches."""
    return len(a) == len(b) and all(
        len(x) == len(y)
        and all(
            isinstance(p, torch.Tensor)
            and isinstance(q, torch.Tensor)
            and p.dtype == q.dtype
            and p.shape == q.shape
            and torch.equal(p, q)
            for p, q in zip(x, y, strict=True)
        )
        for x, y in zip(a, b, strict=True)
    )


def through_torch_save(state: dict[str, Any]) -> dict[str, Any]:
    """The state as a checkpoint gives it back."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # type: ignore[no-any-return]


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if "Original Traceback" in text:  # a worker's error: keep its last line
        text = text.split("Original Traceback")[0] + "... " + text.rsplit(":", 1)[-1]
    return f"{type(error).__name__}: {text[:160]}"


def run_case(  # noqa: PLR0911  # one return per outcome
    config: Config, state: dict[str, Any], expected: list[list[Any]], fresh: list[Any]
) -> tuple[str, str]:
    """Load ``state`` into a fresh loader and classify: (outcome, detail)."""
    loader = config.make()
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            loader.load_state_dict(state)
    except StateError as error:
        try:
            again = list(loader)
        except Exception as late:  # noqa: BLE001  # any error is the finding
            return "DIRTY", f"refused, then the next pass raised {_short(late)}"
        if not equal([again], [fresh]):
            return "DIRTY", f"refused ({_short(error)}), then a pass unlike a fresh loader's"
        return "REFUSED", _short(error)
    except Exception as error:  # noqa: BLE001
        return "BARE", f"at load: {_short(error)}"
    try:
        got = passes(loader)
    except StateError as error:
        return "BARE", f"StateError only while iterating: {_short(error)}"
    except Exception as error:  # noqa: BLE001
        return "BARE", f"while iterating: {_short(error)}"
    del loader
    gc.collect()
    if equal(got, expected):
        return "EXACT", ""
    if warned:
        return "WARNED", _short(Warning(str(warned[0].message)))
    lengths, wanted = [len(p) for p in got], [len(p) for p in expected]
    if lengths != wanted:
        return "WRONG", f"passes of {lengths} batches, expected {wanted}"
    where = next(
        (i, j)
        for i, (x, y) in enumerate(zip(got, expected, strict=True))
        for j, (p, q) in enumerate(zip(x, y, strict=True))
        if not equal([[p]], [[q]])
    )
    return "WRONG", f"pass {where[0]} batch {where[1]} differs (lengths right)"


def in_child(fn: Callable[[], Any], timeout: float) -> tuple[bool, Any]:
    """Run ``fn`` in a forked child (own process group); (finished, result or traceback)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            os.setpgid(0, 0)
            os.close(read)
            if QUIET_CHILDREN:  # workers' tracebacks: the outcome's detail has them
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)
            try:
                payload = pickle.dumps((True, fn()))
            except BaseException:  # noqa: BLE001
                payload = pickle.dumps((False, traceback.format_exc()))
            with os.fdopen(write, "wb") as out:
                out.write(payload)
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    done = False
    with os.fdopen(read, "rb") as pipe:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([pipe], [], [], left)
            if not ready:
                break
            chunk = os.read(pipe.fileno(), 1 << 16)
            if not chunk:
                done = True
                break
            chunks.append(chunk)
    if not done:
        # Its process group: the child and the workers it started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    if not done or not chunks:
        return False, "no result"
    ok, result = pickle.loads(b"".join(chunks))
    if not ok:
        raise RuntimeError(f"the case's harness failed in the child:\n{result}")
    return True, result


@dataclass
class Baseline:
    """One configuration at one stop point: its state and what it resumes to."""

    config: Config
    stop: str
    state: dict[str, Any]
    expected: list[list[Any]]
    fresh: list[Any]


def baselines(
    config: Config, stops: Sequence[tuple[str, int, bool]]
) -> tuple[list[Baseline], list[str]]:
    """States at each stop and what they resume to; the stops whose unmutated resume differs.

    Each unmutated resume is checked against an uninterrupted run; a stop where it
    differs is a bug of its own (reported, not fuzzed: there is no oracle).
    """

    def work() -> tuple[list[tuple[str, dict[str, Any], list[list[Any]], list[Any]]], list[str]]:
        # One run gives the reference and every state: state_dict() changes nothing.
        loader = config.make()
        taken: dict[str, dict[str, Any]] = {}

        def take(loader: ReproLoader[Any], count: int, after_loop: bool) -> None:
            for name, stop, after in stops:
                if stop == count and after == after_loop and name != AFTER_ITER:
                    taken[name] = through_torch_save(loader.state_dict())

        reference: list[Any] = []
        take(loader, 0, False)
        it = iter(loader)
        if any(name == AFTER_ITER for name, _, _ in stops):
            taken[AFTER_ITER] = through_torch_save(loader.state_dict())
        for batch in it:
            reference.append(batch)
            take(loader, len(reference), False)
        take(loader, len(reference), True)
        reference += [b for p in passes(loader) for b in p]
        del loader
        gc.collect()  # no iterator of ours may be inherited by the next workers
        fresh = reference[:6]
        out, broken = [], []
        for name, stop, _ in stops:
            resumed = config.make()
            resumed.load_state_dict(taken[name])
            rest = passes(resumed)
            whole = reference[:stop] + [b for p in rest for b in p]
            del resumed
            gc.collect()
            if equal([whole], [reference[: len(whole)]]):
                out.append((name, taken[name], rest, fresh))
            else:
                broken.append(name)
        return out, broken

    finished, result = in_child(work, 300)
    if not finished:
        raise RuntimeError(f"{config.name}: taking states hung")
    good, bad = result
    return [Baseline(config, name, state, rest, fresh) for name, state, rest, fresh in good], bad


@dataclass(frozen=True)
class Case:
    """One mutated state of one baseline."""

    baseline: Baseline
    mutation: Mutation

    def describe(self) -> str:
        return f"{self.baseline.config.name} @{self.baseline.stop}: {self.mutation.describe()}"


def cases_of(base: list[Baseline]) -> list[Case]:
    """Every mutation of every baseline state."""
    return [Case(b, m) for b in base for m in mutations(b.state)]


def sample(cases: list[Case], limit: int | None, seed: int) -> list[Case]:
    """Up to ``limit`` cases, spread out: every key path first, then every (path, kind).

    The sample depends only on ``seed`` and the configuration's name.
    """
    if limit is None or len(cases) <= limit:
        return cases
    rng = random.Random(f"{seed}:{cases[0].baseline.config.name}")  # str seeds are stable
    shuffled = cases[:]
    rng.shuffle(shuffled)
    tiers: tuple[list[Case], list[Case], list[Case]] = ([], [], [])
    paths: set[Path] = set()
    kinds: set[tuple[Path, str]] = set()
    for case in shuffled:
        path, kind = case.mutation.path, case.mutation.kind
        tier = 0 if path not in paths else 1 if (path, kind) not in kinds else 2
        tiers[tier].append(case)
        paths.add(path)
        kinds.add((path, kind))
    return [*tiers[0], *tiers[1], *tiers[2]][:limit]


def field_of(path: Path) -> str:
    """A key path with worker names and list indices generalized: ``worker_*``, ``[i]``."""
    general = tuple(
        "[i]" if isinstance(p, int) else "worker_*" if str(p).startswith("worker_") else p
        for p in path
    )
    return format_path(general).replace(".[i]", "[i]")


@dataclass
class Result:
    """One case's outcome."""

    case: Case
    outcome: str
    detail: str
    seconds: float = 0.0
    raw: str = field(default="")


def run(case: Case, timeout: float = CASE_TIMEOUT) -> Result:
    """Run one case in a child under ``timeout``; USER overrides the outcome's label."""
    base = case.baseline
    state = apply(base.state, case.mutation)
    start = time.monotonic()
    finished, result = in_child(
        lambda: run_case(base.config, state, base.expected, base.fresh), timeout
    )
    outcome, detail = result if finished else ("HANG", f"no result in {timeout:.0f} s")
    raw = outcome
    if case.mutation.user:
        outcome, detail = "USER", f"{raw}: {detail}" if detail else raw
    return Result(case, outcome, detail, time.monotonic() - start, raw)


# -- the script -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fuzz; print counts per configuration and outcome and the first failures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases (about 2 minutes)")
    parser.add_argument(
        "--limit", type=int, help="cases per configuration (default 100, 8 with --quick; -1: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the case sample")
    parser.add_argument("--examples", type=int, default=3, help="example cases per failure kind")
    parser.add_argument("--only", help="configurations whose name contains this")
    args = parser.parse_args(argv)
    limit = args.limit if args.limit is not None else (8 if args.quick else 100)
    limit = None if limit < 0 else limit
    stops = QUICK_STOPS if args.quick else STOPS
    torch.set_num_threads(1)
    began = time.monotonic()
    results: list[Result] = []
    configs = [c for c in CONFIGS if args.only is None or args.only in c.name]
    for config in configs:
        base, broken = baselines(config, stops)
        if broken:
            print(
                f"{config.name}: the UNMUTATED state resumes wrongly at {broken}; not fuzzed there"
            )
        every = cases_of(base)
        chosen = sample(every, limit, args.seed)
        t0 = time.monotonic()
        mine = [run(case) for case in chosen]
        results += mine
        counts = Counter(r.outcome for r in mine)
        print(
            f"{config.name:34} {len(chosen):4}/{len(every):5} cases "
            f"{time.monotonic() - t0:6.1f} s  "
            + "  ".join(f"{o}={counts[o]}" for o in OUTCOMES if counts[o]),
            flush=True,
        )
    total = Counter(r.outcome for r in results)
    print(f"\n{len(results)} mutated states in {time.monotonic() - began:.0f} s: ", end="")
    print("  ".join(f"{o}={total[o]}" for o in OUTCOMES))
    kinds: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        if r.outcome in FAILURES or (r.outcome == "USER" and r.raw in FAILURES):
            label = r.outcome if r.outcome != "USER" else f"USER/{r.raw}"
            kinds.setdefault((label, _kind(r.detail)), []).append(r)
    if kinds:
        print("\nDistinct failures (outcome, kind, count, example cases):")
    for (label, kind), rs in sorted(kinds.items(), key=lambda kv: (kv[0][0], -len(kv[1]))):
        print(f"- {label} x{len(rs)}: {kind}")
        for r in rs[: args.examples]:
            print(f"    {r.case.describe()}   [{r.detail[:200]}]")
    failures = [r for r in results if r.outcome in FAILURES]
    by_field: dict[str, dict[str, set[str]]] = {}
    for r in failures:
        where = by_field.setdefault(field_of(r.case.mutation.path), {})
        where.setdefault(r.outcome, set()).add(r.case.mutation.kind.replace("replace:", ""))
    if by_field:
        print("\nFailures by field (worker ids and list indices merged): outcome [mutations]")
    for name, outcomes in sorted(by_field.items()):
        listed = "; ".join(f"{o} [{', '.join(sorted(k))}]" for o, k in sorted(outcomes.items()))
        print(f"  {name}: {listed}")
    return 1 if failures else 0


def _kind(detail: str) -> str:
    """A failure's kind: its detail without numbers or quoted values."""
    words = detail.split()[:14]
    return " ".join("#" if any(c.isdigit() for c in word) else word for word in words)


if __name__ == "__main__":
    sys.exit(main())
