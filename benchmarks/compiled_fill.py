"""What a compiled seed fill would buy: an experiment for issue 16's packaging question.

The package is pure Python. In its default window the costliest steps written in
Python fill python random's and numpy's Mersenne Twisters from a unit's 627 Philox
words: move a Philox to the unit, draw the words, copy two 2.5 KB states (about 30 us
cold, ``unit_cost.py``). ``compiled_fill.c`` writes the same two states from the same
words in one C call. This script builds it with the system C compiler, checks that
every stream stays bit for bit the package's, then measures throughput against
DataLoader with ``Producer.begin`` using it, beside the package as it is (each in its
own process: the change is process-wide). torch's ``manual_seed`` and the caller
isolation stay as they are: only the fill is compiled.

It needs a C compiler and Python's headers, so it is not part of ``nox -s bench``::

    python benchmarks/compiled_fill.py               # build, check, measure (minutes)
    python benchmarks/compiled_fill.py --check-only  # build and check
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import throughput
import torch
from _report import save

from reproloader import ReproLoader
from reproloader._runtime import rngs
from reproloader._runtime.producer import Producer
from reproloader.seeding import Lane, Purpose, SeedTree, UnitStreams

SOURCE = Path(__file__).resolve().parent / "compiled_fill.c"
MODES = ("package", "compiled fill")
SCOPES = {"batch scope": "ReproLoader batch", "sample scope": "ReproLoader sample"}
STREAM_WORDS = rngs.GlobalRngs(frozenset(rngs.GLOBAL_RNG_NAMES)).n_words  # the C's too


def build(directory: Path) -> ModuleType:
    """Compile ``compiled_fill.c`` into ``directory`` and import it."""
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    target = directory / f"compiled_fill{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = sysconfig.get_paths()["include"]
    command = [*compiler, "-O2", "-shared", "-fPIC", f"-I{include}", str(SOURCE), "-o", str(target)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(
            f"building the experiment needs a C compiler and Python's headers:\n{result.stderr}"
        )
    spec = importlib.util.spec_from_file_location("compiled_fill", target)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def use_compiled(module: ModuleType) -> None:
    """Make every Producer in this process fill the default global RNGs through ``module``."""
    numpy_rng = rngs.LegacyState(np.random.mtrand._rand)
    offset = rngs._random_offset()
    if not numpy_rng.fast or offset is None:
        sys.exit("the package's raw-memory paths are not available here: nothing to compare")
    numpy_at = np.random.mtrand._rand._bit_generator.ctypes.state_address
    python_at = id(random._inst) + offset  # type: ignore[attr-defined]
    original = Producer.begin

    def begin(self: Producer, node: Any, unit: int, **where: Any) -> None:
        globals_ = self._globals
        if globals_.n_words != STREAM_WORDS:
            original(self, node, unit, **where)
            return
        key = self.plan.tree.key(*node)
        numpy_rng._take_gauss()  # numpy's cached normal goes, as LegacyState.reseed does
        seed = module.fill(numpy_at, python_at, int(key[0]), int(key[1]), unit, Lane.GLOBALS)
        numpy_rng._cell.mark = numpy_rng._where()
        random._inst.gauss_next = None  # type: ignore[attr-defined]
        torch.default_generator.manual_seed(seed >> 1)
        globals_.n_words = 0  # the rest of begin as it is, the globals already done
        try:
            original(self, node, unit, **where)
        finally:
            globals_.n_words = STREAM_WORDS

    Producer.begin = begin  # type: ignore[method-assign]


class Draws(torch.utils.data.Dataset[torch.Tensor]):
    """Draws from every global RNG; an odd number of numpy normals leaves one cached."""

    def __len__(self) -> int:
        return 48

    def __getitem__(self, i: int) -> torch.Tensor:
        normals = np.random.normal(size=1 + i % 2)
        return torch.tensor(
            [random.random(), random.gauss(0, 1), np.random.random(), *normals[:1]]
        ) + torch.rand(4)


def streams(scope: str) -> tuple[list[torch.Tensor], Any]:
    loader = ReproLoader(Draws(), batch_size=5, shuffle=True, seed=3, config={"rng_scope": scope})
    batches = [batch for _ in range(2) for batch in loader]
    return batches, (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state())


def seed_the_caller() -> None:
    """The training loop's RNG states before a check; numpy's with a cached normal."""
    random.seed(11)
    np.random.seed(11)
    np.random.normal()
    torch.manual_seed(11)


def check(module: ModuleType) -> None:
    """The compiled words and the loaders' streams are the package's, bit for bit."""
    tree, moving = SeedTree(2026), UnitStreams()
    for unit in (0, 1, 7, 2**40 + 3):
        for lane in Lane:
            key = tree.key(Purpose.BATCH, unit % 5, 1)
            expected = moving.words(key, unit, lane, STREAM_WORDS).tobytes()
            got = module.words(STREAM_WORDS, int(key[0]), int(key[1]), unit, int(lane))
            assert got == expected, f"words differ: unit {unit}, lane {lane!r}"
    seed_the_caller()
    reference = {scope: streams(scope) for scope in ("batch", "sample")}
    original = Producer.begin
    use_compiled(module)
    try:
        seed_the_caller()
        for scope, (batches, caller) in reference.items():
            got_batches, got_caller = streams(scope)
            assert all(map(torch.equal, got_batches, batches)), f"{scope} scope: batches differ"
            assert got_caller[:2] == caller[:2], f"{scope} scope: the caller's RNGs differ"
            assert torch.equal(got_caller[2], caller[2]), f"{scope} scope: torch's state differs"
    finally:
        Producer.begin = original  # type: ignore[method-assign]
    print("compiled fill: words, batches and the caller's RNG states identical to the package's")


def measure_here(mode: str, reps: int, steps: int, out: Path) -> None:
    """One mode's throughput table, in this process (``--measure``)."""
    if mode == "compiled fill":
        use_compiled(build(out.parent))
    torch.set_num_threads(1)
    throughput.LOADERS = {
        name: throughput.LOADERS[name] for name in ("DataLoader", *SCOPES.values())
    }
    work = throughput.Work(4096)
    work.steps = steps  # one calibration for both modes: the same work per sample
    rows = []
    for label, dataset in (("tiny", throughput.Tiny(32768)), ("0.2 ms", work)):
        for batch_size in (32, 256):
            result = throughput.measure(dataset, batch_size, 0, reps, time.process_time)
            rows.append({"dataset": label, "batch_size": batch_size, "loaders": result})
            print(mode, throughput.format_row({**rows[-1], "num_workers": 0}), flush=True)
    out.write_text(json.dumps(rows))


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    header = "| dataset | batch | " + " | ".join(
        f"{scope}, {mode}" for scope in SCOPES for mode in MODES
    )
    lines = [header + " |", "|---|---|" + "---|" * (len(SCOPES) * len(MODES))]
    for i, row in enumerate(results[MODES[0]]):
        cells = [row["dataset"], str(row["batch_size"])]
        for name in SCOPES.values():
            for mode in MODES:
                r = results[mode][i]["loaders"][name]
                cells.append(f"{r['ratio']:.3f} ({r['extra_us_per_sample']:+.1f} us/sample)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check-only", action="store_true", help="build and check, no timing")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--measure", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        measure_here(args.measure, args.reps, args.steps, args.json)
        return
    with tempfile.TemporaryDirectory() as scratch:
        check(build(Path(scratch)))
        if args.check_only:
            return
        results = {}
        steps = str(throughput.steps_for(200e-6))
        for mode in MODES:
            path = Path(scratch) / f"{mode.replace(' ', '_')}.json"
            command = [sys.executable, __file__, "--measure", mode, "--reps", str(args.reps)]
            subprocess.run([*command, "--steps", steps, "--json", str(path)], check=True)
            results[mode] = json.loads(path.read_text())
    save(args.out, "compiled_fill", [results], table(results))


if __name__ == "__main__":
    main()
