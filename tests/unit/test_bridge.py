"""The bridge is the only code that touches torch's private names, and what it relies on holds.

When a torch or torchdata release moves an internal, the contract test named after it
fails: read ``reproloader/_runtime/bridge.py`` and adapt that one file.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
import torch.utils.data
import torch.utils.data.dataloader
import torchdata.stateful_dataloader.stateful_dataloader as stateful_module
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

import reproloader
from reproloader._runtime import bridge

PACKAGE = Path(reproloader.__file__).parent
BRIDGE = Path(bridge.__file__)
ROOTS = ("torch", "torchdata", "accelerate")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _torch_private_names() -> set[str]:
    """Every private name torch's and torchdata's DataLoader machinery defines or uses."""
    modules: list[ModuleType] = [
        torch.utils.data.dataloader,
        stateful_module,
        torch.utils.data._utils.worker,
    ]
    names = {"_is_accelerate_prepared"}  # accelerate's marker
    for module in modules:
        source = inspect.getsource(module)
        names |= set(re.findall(r"\bself\.(_[A-Za-z]\w*)", source))
        # Module-level names, but not type variables (``_T_co`` is everyone's).
        names |= {n for n, v in vars(module).items() if _private(n) and not isinstance(v, TypeVar)}
        for obj in vars(module).values():
            if inspect.isclass(obj) and obj.__module__ == module.__name__:
                names |= {n for n in vars(obj) if _private(n)}
    return names


def _violations(source: str, label: str, private_names: set[str]) -> Iterator[str]:
    for node in ast.walk(ast.parse(source, label)):
        where = f"{label}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ROOTS:
            parts = (node.module or "").split(".") + [alias.name for alias in node.names]
            if any(_private(part) for part in parts):
                yield f"{where}: from {node.module} import {[a.name for a in node.names]}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in ROOTS and any(_private(part) for part in parts):
                    yield f"{where}: import {alias.name}"
        elif isinstance(node, ast.Attribute) and (
            node.attr in private_names or (_private(node.attr) and _rooted_in_torch(node))
        ):
            yield f"{where}: .{node.attr}"
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value in private_names
        ):
            yield f"{where}: {node.value!r}"


def _rooted_in_torch(node: ast.Attribute) -> bool:
    value: ast.expr = node.value
    while isinstance(value, ast.Attribute):
        value = value.value
    return isinstance(value, ast.Name) and value.id in ROOTS


def test_no_private_torch_name_is_touched_outside_the_bridge() -> None:
    names = _torch_private_names()
    assert {"_get_iterator", "_num_yielded", "_worker_info", "_index_sampler"} <= names
    found = [
        violation
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != BRIDGE
        for violation in _violations(path.read_text(), str(path.relative_to(PACKAGE.parent)), names)
    ]
    assert not found, (
        "private torch/torchdata names outside reproloader/_runtime/bridge.py (move the "
        "access into the bridge, or rename a private attribute of ours that shares the "
        "name):\n" + "\n".join(found)
    )


def test_the_scan_finds_what_it_looks_for() -> None:
    sample = (
        "import torch.utils.data._utils\n"
        "from torchdata.stateful_dataloader.stateful_dataloader import _Thing\n"
        "x = loader._num_yielded\n"
        "y = torch.utils.data._utils\n"
        "z = getattr(loader, '_iterator')\n"
        "ok = self._tree\n"
    )
    found = list(_violations(sample, "sample.py", _torch_private_names()))
    assert [line.split(":")[1] for line in found] == ["1", "2", "3", "4", "5"], found


# -- one contract per internal the bridge relies on --------------------------------


def _quietly(cls: Any, *args: Any, **kwargs: Any) -> Any:
    with bridge.quiet_torchdata():
        return cls(*args, **kwargs)


class _Counting(StatefulDataLoader):  # type: ignore[misc]
    calls = 0

    def _get_iterator(self) -> Any:
        type(self).calls += 1
        return super()._get_iterator()


def _get_iterator() -> None:
    loader = _quietly(_Counting, list(range(4)), batch_size=2)
    assert list(loader)
    assert _Counting.calls == 1


def _index_sampler() -> None:
    batched = DataLoader(list(range(10)), batch_size=3)
    assert batched._index_sampler is batched.batch_sampler
    unbatched = DataLoader(list(range(10)), batch_size=None)
    assert unbatched._index_sampler is unbatched.sampler


def _iterator() -> None:
    loader = _quietly(StatefulDataLoader, list(range(4)), batch_size=2)
    assert loader._iterator is None
    it = iter(loader)
    assert loader._iterator is it


def _initial_iter_for_state_dict() -> None:
    loader = _quietly(StatefulDataLoader, list(range(4)), batch_size=2)
    assert loader._initial_iter_for_state_dict is False
    loader.load_state_dict({})
    assert loader._initial_iter_for_state_dict is False


def _single_process_iter() -> None:
    cls = stateful_module._StatefulSingleProcessDataLoaderIter
    assert list(inspect.signature(cls.__init__).parameters)[:3] == [
        "self",
        "loader",
        "next_iter_state",
    ]
    assert callable(cls._next_data)
    it = cls(_quietly(StatefulDataLoader, list(range(4)), batch_size=2), None)
    assert [b.tolist() for b in it] == [[0, 1], [2, 3]]


def _multi_process_iter() -> None:
    cls = stateful_module._StatefulMultiProcessingDataLoaderIter
    assert list(inspect.signature(cls.__init__).parameters)[:3] == [
        "self",
        "loader",
        "next_iter_state",
    ]


def _num_yielded_and_finished() -> None:
    it = iter(_quietly(StatefulDataLoader, list(range(6)), batch_size=2))
    assert (it._num_yielded, it._finished) == (0, False)
    next(it)
    assert (it._num_yielded, it._finished) == (1, False)
    assert len(list(it)) == 2
    assert (it._num_yielded, it._finished) == (3, True)


class _WorkerInfoIsPrivateGlobal(torch.utils.data.Dataset[bool]):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> bool:
        worker = torch.utils.data._utils.worker
        return worker._worker_info is torch.utils.data.get_worker_info()


def _worker_info() -> None:
    loader = DataLoader(
        _WorkerInfoIsPrivateGlobal(), batch_size=None, num_workers=1, multiprocessing_context="fork"
    )
    assert list(loader) == [True]
    assert callable(torch.utils.data._utils.worker.WorkerInfo)


def _accelerate_marker() -> None:
    if importlib.util.find_spec("accelerate") is None:
        pytest.skip("accelerate is not installed (nox -s integration has it)")
    import accelerate.accelerator

    assert "_is_accelerate_prepared" in inspect.getsource(accelerate.accelerator)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


def _state_dict_layout() -> None:
    from reproloader import ReproLoader
    from tests.datasets import GlobalDraws, StatefulStream

    for dataset, workers in ((GlobalDraws(12), 0), (GlobalDraws(12), 1), (StatefulStream(12), 1)):
        loader = ReproLoader(
            dataset,
            batch_size=2,
            num_workers=workers,
            seed=0,
            config={"rng_scope": "worker"},
            multiprocessing_context="fork" if workers else None,
        )
        it = iter(loader)
        next(it)
        native = bridge.running_iterator(loader).state_dict()
        own = bridge.own_worker_state(native)
        assert own["yielded"] == 1
        assert len(own["workers"]) == max(workers, 1)
        assert _same(bridge._torchdata_state(own), native), "the conversion is not lossless"
        del it


def _task_info_and_send_idx() -> None:
    loader = _quietly(
        StatefulDataLoader,
        list(range(8)),
        batch_size=2,
        num_workers=2,
        in_order=False,
        multiprocessing_context="fork",
    )
    it = iter(loader)
    next(it)
    assert isinstance(it._task_info, dict)
    assert it._send_idx >= 2  # prefetching: more sent than handed out
    first, others = bridge.iterator_out_of_order(it)
    assert first + len(others) == 1  # one batch handed out
    del it


class _Uneven(torch.utils.data.IterableDataset[int]):
    """Worker 1 yields three times as many samples as worker 0, then counts its passes."""

    def __init__(self) -> None:
        self.passes = 0

    def __iter__(self) -> Any:
        info = torch.utils.data.get_worker_info()
        assert info is not None
        yield from range(2 + 4 * info.id)
        self.passes += 1

    def state_dict(self) -> dict[str, int]:
        return {"passes": self.passes}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.passes = state["passes"]


def _end_worker_snapshots() -> None:
    loader = _quietly(
        StatefulDataLoader,
        _Uneven(),
        batch_size=None,
        num_workers=2,
        persistent_workers=True,
        multiprocessing_context="fork",
    )
    it = iter(loader)
    assert len(list(it)) == 8
    assert isinstance(it._last_yielded_worker_id, int)
    assert isinstance(it._get_main_state(), dict)
    assert sorted(it._worker_snapshots) == ["worker_0", "worker_1"]
    # torchdata's own last snapshot predates worker 1's end; the running states do not.
    it.failed = 0  # reproloader's iterators count failed batches
    own = bridge.iterator_end_worker_state(it)
    assert own["ended"] is True
    assert [w["map"] for w in own["workers"]] == [{"passes": 1}, {"passes": 1}]
    snapshot = it.state_dict()["_snapshot"]["_worker_snapshots"]["worker_1"]
    assert snapshot["dataset_state"] == {"passes": 0}
    del it


def _pin_memory() -> None:
    # Called on a CPU-only machine it must still walk the batch (pinning needs CUDA,
    # so only the walk is checked here: an object with pin_memory() is asked to pin).
    class Pins:
        def pin_memory(self) -> str:
            return "pinned"

    from torch.utils.data._utils.pin_memory import pin_memory

    assert pin_memory([Pins()], None) == ["pinned"]


CONTRACTS: dict[str, Callable[[], None]] = {
    "DataLoader._get_iterator": _get_iterator,
    "DataLoader._index_sampler": _index_sampler,
    "DataLoader._iterator": _iterator,
    "StatefulDataLoader._initial_iter_for_state_dict": _initial_iter_for_state_dict,
    "_StatefulSingleProcessDataLoaderIter": _single_process_iter,
    "_StatefulMultiProcessingDataLoaderIter": _multi_process_iter,
    "iterator._num_yielded": _num_yielded_and_finished,
    "iterator._finished": _num_yielded_and_finished,
    "iterator.state_dict() layout": _state_dict_layout,
    "iterator._task_info, _send_idx": _task_info_and_send_idx,
    "iterator._worker_snapshots, _get_main_state, _last_yielded_worker_id": (_end_worker_snapshots),
    "torch.utils.data._utils.worker._worker_info": _worker_info,
    "accelerate: DataLoader._is_accelerate_prepared": _accelerate_marker,
    "torch.utils.data._utils.pin_memory.pin_memory": _pin_memory,
}


def test_every_internal_the_bridge_uses_has_a_contract() -> None:
    assert sorted(CONTRACTS) == sorted(bridge.INTERNALS)


@pytest.mark.parametrize("internal", sorted(CONTRACTS))
def test_contract(internal: str) -> None:
    try:
        CONTRACTS[internal]()
    except (AssertionError, AttributeError, TypeError, ImportError) as error:
        pytest.fail(
            f"torch {torch.__version__} / torchdata no longer provides what the bridge "
            f"relies on: {internal} ({bridge.INTERNALS[internal]}). Adapt "
            f"reproloader/_runtime/bridge.py. Cause: {error!r}"
        )
