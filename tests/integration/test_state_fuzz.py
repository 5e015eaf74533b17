"""Mutated states are refused at load or resume exactly: never wrong, a bare error or a hang.

A seeded sample of :mod:`tests.statefuzz`'s cases (``STATEFUZZ_SEED``, default 0): per
family of configurations, the states at two stop points and a sample of their mutations
that reaches every key path it can. ``python tests/statefuzz.py`` runs them all.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from tests import statefuzz
from tests.statefuzz import CONFIGS, STOPS, Mutation, apply, baselines, mutations, sample

SEED = int(os.environ.get("STATEFUZZ_SEED", "0"))
CASES_PER_FAMILY = 20
CASE_TIMEOUT = 10.0

# One configuration per family: map-style batch scope, worker scope with workers,
# an iterable dataset with its own state with workers, a map-style dataset with its own
# state, an iterable dataset fast-forwarded.
FAMILIES = {
    "map": "map-batch-shuffle-w0",
    "worker": "map-worker-w2",
    "iterable-stateful": "iterable-stateful-w2",
    "map-stateful": "map-stateful-w0",
    "iterable": "iterable-w0",
}
CONFIG = {config.name: config for config in CONFIGS}
FUZZ_STOPS = tuple(stop for stop in STOPS if stop[0] in ("after-1", "finished"))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_mutated_states_are_refused_or_resume_exactly(family: str) -> None:
    base, broken = baselines(CONFIG[FAMILIES[family]], FUZZ_STOPS)
    cases = sample(statefuzz.cases_of(base), CASES_PER_FAMILY, SEED)
    results = [statefuzz.run(case, CASE_TIMEOUT) for case in cases]
    bad = [r for r in results if r.outcome in statefuzz.FAILURES]
    listed = "\n".join(f"{r.outcome}: {r.case.describe()}: {r.detail}" for r in bad)
    assert not bad, f"{len(bad)} of {len(results)} mutated states (seed {SEED}):\n{listed}"
    # Not fuzzed there (no oracle), and a silent failure of its own:
    assert not broken, f"the UNMUTATED states resume wrongly at stops {broken}"


def _dict_paths(value: Any, path: tuple[Any, ...] = ()) -> set[tuple[Any, ...]]:
    """Every key path through dicts and lists, written independently of the generator."""
    out: set[tuple[Any, ...]] = set()
    if isinstance(value, dict):
        for key, child in value.items():
            out |= {(*path, key)} | _dict_paths(child, (*path, key))
    elif isinstance(value, (list, tuple)):
        numbers = all(isinstance(v, (int, float)) for v in value)
        indices = {0, len(value) // 2, len(value) - 1} if len(value) > 8 and numbers else None
        for i, child in enumerate(value):
            if indices is None or i in indices:
                out |= {(*path, i)} | _dict_paths(child, (*path, i))
    return out


def _value(state: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        state = state[key]
    return state


@pytest.mark.parametrize(
    "name", ["map-batch-shuffle-w0", "map-worker-w0", "iterable-stateful-w0", "map-stateful-w0"]
)
def test_mutations_cover_every_key_path_of_a_real_state(name: str) -> None:
    """A new field in the state is fuzzed too: every path gets every mutation kind."""
    base, _ = baselines(CONFIG[name], tuple(s for s in STOPS if s[0] == "mid"))
    state = base[0].state
    generated: dict[tuple[Any, ...], set[str]] = {}
    for mutation in mutations(state):
        generated.setdefault(mutation.path, set()).add(mutation.kind)
    paths = _dict_paths(state)
    assert paths, "a real state has fields"
    assert set(generated) == paths
    for path in paths:
        value = _value(state, path)
        expected = {
            f"replace:{label}"
            for label, new in (
                statefuzz.WIDE_REPLACEMENTS if statefuzz.is_wide(value) else statefuzz.REPLACEMENTS
            )
            if isinstance(value, torch.Tensor) or not (type(value) is type(new) and value == new)
        }
        if isinstance(_value(state, path[:-1]), dict):
            expected.add("delete")
        if isinstance(value, torch.Tensor):
            expected |= {"shorten", "dtype"}
        assert expected <= generated[path], f"{path}: {sorted(expected - generated[path])}"


def test_apply_changes_only_the_mutated_path() -> None:
    state = {"a": {"b": [1, 2, (3, 4)]}, "c": 5}
    assert apply(state, Mutation(("a", "b", 2, 1), "replace:None", None)) == {
        "a": {"b": [1, 2, [3, None]]},
        "c": 5,
    }
    assert apply(state, Mutation(("c",), "delete")) == {"a": {"b": [1, 2, (3, 4)]}}
    assert state == {"a": {"b": [1, 2, (3, 4)]}, "c": 5}


def test_the_oracle_tells_exact_refused_and_wrong_apart() -> None:
    base, _ = baselines(CONFIG["map-batch-shuffle-w0"], tuple(s for s in STOPS if s[0] == "mid"))
    b = base[0]
    assert statefuzz.run_case(b.config, b.state, b.expected, b.fresh) == ("EXACT", "")
    outcome, detail = statefuzz.run_case(b.config, {**b.state, "format": "x"}, b.expected, b.fresh)
    assert outcome == "REFUSED", detail
    shorter = [b.expected[0][:-1], b.expected[1]]
    assert statefuzz.run_case(b.config, b.state, shorter, b.fresh)[0] == "WRONG"
    hung = statefuzz.in_child(lambda: statefuzz.time.sleep(30), timeout=1)
    assert hung == (False, "no result")
