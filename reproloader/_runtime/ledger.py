"""The run ledger's writing side: digests made where a batch is made, lines written as it is handed out.

When a loader has a ledger, its iterators get a :class:`LedgerCollate` in place of
the collate function: in the process that makes the batch (a worker, or the main
process with ``num_workers=0``) it collates as before, then digests the batch and the
unit's indices and sends both along with the batch as a :class:`Recorded`. In the
main process, the iterator hands the batch to :class:`LedgerWriter`, which writes one
JSON line (epoch, batch, step, digests, indices) and returns the user's batch. So
the hashing runs in parallel in the workers, and the file is written in the order the
user receives batches, whatever ``num_workers``.

Digest: xxh3-128 (``xxhash``) over each tensor's and array's dtype, shape and bytes,
and over the ``repr`` of other leaves, walking mappings and sequences in order. With
``content="sampled"`` (the default) a tensor of more than :data:`FULL_BYTES` bytes
gives :data:`BLOCKS` blocks of 256 bytes spread evenly over it (and its last block)
instead of every byte: hashing 19 MB takes about 0.5 ms, 5 % of an image batch's
time here, above the 1 % budget (``benchmarks/ledger.py``). Hashing never draws a
random number.

Without a ledger nothing here runs: the collate function is the user's and the
iterator's hook is None.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import torch

from reproloader._runtime.bridge import pin_batch

__all__ = [
    "DIGEST",
    "FORMAT",
    "VERSION",
    "Ledger",
    "LedgerCollate",
    "LedgerWriter",
    "Recorded",
    "digest_batch",
    "digest_indices",
    "rank_file",
]

FORMAT: Final = "reproloader-ledger"
VERSION: Final = 1
DIGEST: Final = "xxh3_128"
"""The digest of both the indices and the content; named in each header."""
FULL_BYTES: Final = 1 << 20
"""With ``content="sampled"``, tensors up to this size are digested whole."""
BLOCKS: Final = 256
"""With ``content="sampled"``, about how many 256-byte blocks of a larger tensor are digested.

Few and large: each block of a batch just made is a cache miss (about 0.2 us here).
"""
_BLOCK: Final = 256
Content = Literal["sampled", "full"]


def rank_file(directory: Path, rank: int) -> Path:
    """The ledger file of ``rank`` in ``directory``: ``rank-00005.jsonl``."""
    return directory / f"rank-{rank:05d}.jsonl"


@dataclass(frozen=True)
class Ledger:
    """Where a loader records what it hands out: one JSON-lines file per rank in ``directory``.

    Give ``ledger=Ledger("runs/today/ledger")`` (or just the path) to a
    :class:`~reproloader.ReproLoader`. Each rank appends to
    ``directory/rank-NNNNN.jsonl``: a header (seed, scope, config, versions, world
    size, ``num_workers``, dataset, sampler...) and then one line per batch handed
    out (epoch, batch index, step, a digest of the indices, a digest of the content,
    and the indices). A run resumed with ``load_state_dict`` appends to the same file,
    after a header that records the resume point. ``reproloader diff`` compares two
    ledgers, ``reproloader ledger`` prints steps of one.

    Args:
        directory: the folder of the per-rank files; created if missing.
        indices: also write each batch's dataset indices (not only their digest), so
            ``reproloader ledger --steps`` can print them. About 6 bytes per index.
        content: ``"sampled"`` digests every byte of tensors and arrays up to 1 MiB
            and, of larger ones, 256 blocks of 256 bytes spread evenly (plus dtype
            and shape): a change to a few values of a large tensor can go unseen.
            ``"full"`` digests every byte, about 0.03 ms per MB in the process that
            makes the batch (5 % of the throughput of 19 MB image batches made in
            12 ms).

    .. versionadded:: 0.2
    """

    directory: Path
    indices: bool = True
    content: Content = "sampled"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        indices: bool = True,
        content: Content = "sampled",
    ) -> None:
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(
                f"Ledger(directory) takes a path (str or os.PathLike), got {directory!r} "
                f"of type {type(directory).__name__}"
            )
        if not isinstance(indices, bool):
            raise TypeError(f"Ledger(indices=) takes True or False, got {indices!r}")
        if content not in ("sampled", "full"):
            raise ValueError(f"Ledger(content=) takes 'sampled' or 'full', got {content!r}")
        object.__setattr__(self, "directory", Path(directory))
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "content", content)

    @classmethod
    def of(cls, value: Ledger | str | os.PathLike[str] | None) -> Ledger | None:
        """A ledger from what a loader's ``ledger=`` argument takes (None: no ledger)."""
        if value is None or isinstance(value, Ledger):
            return value
        if isinstance(value, (str, os.PathLike)):
            return cls(value)
        raise TypeError(
            f"ledger= takes a directory path or a reproloader.Ledger, got {value!r} of "
            f"type {type(value).__name__}"
        )


# -- digests ------------------------------------------------------------------------


_XXHASH: Any = None


def _xxhash() -> Any:
    global _XXHASH  # noqa: PLW0603 - imported once, on the first digest
    if _XXHASH is None:
        try:
            import xxhash
        except ImportError as error:  # pragma: no cover - xxhash is a dependency
            raise ImportError(
                "the run ledger digests batches with xxhash, which is not installed: "
                "pip install xxhash"
            ) from error
        _XXHASH = xxhash
    return _XXHASH


def _hasher() -> Any:
    return _xxhash().xxh3_128()


def _bytes(h: Any, array: np.ndarray[Any, Any], sampled: bool) -> None:
    # Sampled: evenly spaced blocks and the tail of a large array.
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    if not sampled or array.nbytes <= FULL_BYTES:
        h.update(array)  # its memory, through the buffer protocol
        return
    data = np.frombuffer(array, np.uint8)  # its bytes, as one view
    rows = data.size // _BLOCK
    h.update(data[: rows * _BLOCK].reshape(rows, _BLOCK)[:: rows // BLOCKS].copy())
    h.update(data[(rows - 1) * _BLOCK :])


def _tensor_bytes(value: torch.Tensor) -> np.ndarray[Any, Any]:
    # The slow path: on another device, with grad, a conjugate or negative view, or a
    # dtype numpy lacks (bfloat16): the values as bytes.
    tensor = value.detach().cpu().resolve_conj().resolve_neg().contiguous()
    if not tensor.numel():
        return np.zeros(0, np.uint8)
    return tensor.reshape(-1).view(torch.uint8).numpy()


@lru_cache(maxsize=256)
def _tensor_tag(dtype: torch.dtype, shape: torch.Size) -> bytes:
    # Formatting a dtype and a shape costs more than the lookup on a batch's cold
    # caches; a run's batches have a few shapes.
    return f"T{dtype}{tuple(shape)}".encode()


def _feed(h: Any, value: Any, sampled: bool) -> None:
    # Tags keep structures apart: [a, b] and (a, b) and {0: a, 1: b} digest differently.
    if isinstance(value, torch.Tensor):
        h.update(_tensor_tag(value.dtype, value.shape))
        try:  # a CPU tensor of a numpy dtype, without grad: its memory, no copy
            array = value.numpy()
        except (TypeError, RuntimeError):
            array = _tensor_bytes(value)
        if array.size:
            _bytes(h, array, sampled)
    elif isinstance(value, np.ndarray) and value.dtype != object:
        h.update(f"A{value.dtype.str}{value.shape}".encode())
        if value.size:
            _bytes(h, value, sampled)
    elif isinstance(value, Mapping):
        h.update(f"M{len(value)}".encode())
        for key, item in value.items():
            _feed(h, key, sampled)
            _feed(h, item, sampled)
    elif isinstance(value, (list, tuple)):
        h.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}".encode())
        for item in value:
            _feed(h, item, sampled)
    elif isinstance(value, (str, bytes)):
        data = value.encode() if isinstance(value, str) else value
        h.update(f"{'S' if isinstance(value, str) else 'B'}{len(data)}:".encode())
        h.update(data)
    else:
        text = repr(value).encode()
        h.update(f"R{type(value).__qualname__}{len(text)}:".encode())
        h.update(text)


def digest_batch(batch: Any, content: Content = "full") -> str:
    """The content digest of a batch: hex xxh3-128 over dtypes, shapes and bytes (see ``content``)."""
    h = _hasher()
    _feed(h, batch, content == "sampled")
    return str(h.hexdigest())


def _plain(index: Any) -> Any:
    if isinstance(index, (bool, int, float, str)) or index is None:
        return index
    if isinstance(index, (np.integer, torch.Tensor)) and getattr(index, "ndim", 0) == 0:
        return int(index)
    if isinstance(index, (list, tuple)):
        return [_plain(i) for i in index]
    return repr(index)


_INT: Final = frozenset({int})


def digest_indices(indices: Any) -> tuple[str, str]:
    """``(digest, json)`` of a unit's indices: the digest is of that JSON text."""
    if type(indices) is list and set(map(type, indices)) <= _INT:
        # A list of plain ints (the usual case): json.dumps's text, without its
        # encoder's set-up, which costs more than the text on a batch's cold caches.
        text = f"[{','.join(map(str, indices))}]"
    else:
        try:
            text = json.dumps(indices, separators=(",", ":"))
        except TypeError:  # numpy integers, tensors, other keys
            text = json.dumps(_plain(indices), separators=(",", ":"))
    return str(_xxhash().xxh3_128_hexdigest(text.encode())), text


# -- the producing side ---------------------------------------------------------------


class Recorded:
    """A batch on its way to the main process, with its digests.

    ``position`` is the unit's batch index (map-style), or None (iterable: the main
    process counts). ``fields`` is the JSON text of the digests (and indices) for
    the ledger line.
    """

    __slots__ = ("batch", "fields", "position")

    def __init__(self, batch: Any, position: int | None, fields: str) -> None:
        self.batch = batch
        self.position = position
        self.fields = fields

    def __reduce__(self) -> tuple[Any, ...]:
        return (Recorded, (self.batch, self.position, self.fields))

    def pin_memory(self, device: Any = None) -> Recorded:
        """Pin the batch (torch's pin-memory thread calls this on objects it does not know)."""
        return Recorded(pin_batch(self.batch, device), self.position, self.fields)


class LedgerCollate:
    """The collate function of a ledgered loader's iterators: collate, then digest.

    Args:
        collate_fn: the loader's collate function.
        wrapper: the dataset wrapper; a map-style one keeps the unit it fetched last
            (``last_unit``), whose position and indices go with the batch.
        indices: whether to send the indices themselves, not only their digest.
    """

    def __init__(
        self, collate_fn: Callable[[Any], Any], wrapper: Any, *, indices: bool, content: Content
    ) -> None:
        self.collate_fn = collate_fn
        self.wrapper = wrapper
        self.indices = indices
        self.content = content

    def __call__(self, samples: Any) -> Recorded:
        batch = self.collate_fn(samples)
        unit = getattr(self.wrapper, "last_unit", None)
        content = digest_batch(batch, self.content)
        if unit is None:
            return Recorded(batch, None, f'"indices_digest":null,"content_digest":"{content}"')
        position, indices = unit
        digest, text = digest_indices(indices)
        fields = f'"indices_digest":"{digest}","content_digest":"{content}"'
        if self.indices:
            fields += f',"indices":{text}'
        return Recorded(batch, position, fields)


# -- the main process -------------------------------------------------------------------


def versions() -> dict[str, str | None]:
    """The versions a header records."""
    import importlib.metadata

    try:
        own: str | None = importlib.metadata.version("reproloader")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - always installed
        own = None
    return {
        "reproloader": own,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


class LedgerWriter:
    """One rank's ledger file, written by the main process as batches are handed out.

    The file is opened at the loader's first pass (one write per line, appended to: a
    resumed run continues it). A fresh run refuses a file that already holds lines,
    so two runs or two loaders never mix in one file.

    Args:
        ledger: where and what to write.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._fd: int | None = None
        self._closer: weakref.finalize[Any, Any] | None = None
        # What writes a line's bytes: one write() call on a file opened for append.
        self.write: Callable[[bytes], int] = _no_file
        self._path: Path | None = None
        self.step = 0
        # Set by load_state_dict: the next pass's header records its start as the
        # resume point, and the step goes on from the batches recorded before it.
        self.resumed = False
        self._epoch = 0
        self._count = 0  # iterable datasets: the batch index the main process counts
        self._per_epoch: int | None = None

    @property
    def path(self) -> Path | None:
        """The file written to, once the first pass opened it."""
        return self._path

    def begin_pass(
        self, header: dict[str, Any], epoch: int, start: int, per_epoch: int | None = None
    ) -> None:
        """Before a pass's first batch: open the file (writing the header) if not yet.

        Args:
            header: the loader's header fields.
            epoch: the pass's epoch.
            start: its first batch index (after a mid-epoch resume, not 0).
            per_epoch: the batches of an epoch on this rank, where known: then a
                batch's step is ``epoch * per_epoch + batch`` (the numbering
                ``skip_steps`` and a loop over epochs use); otherwise steps count the
                batches recorded.
        """
        self._epoch, self._count, self._per_epoch = epoch, start, per_epoch
        resumed = self.resumed
        if self._fd is not None and not resumed:
            return
        path = rank_file(self.ledger.directory, header["rank"])
        held = path.exists() and path.stat().st_size > 0
        if self._fd is None and held and not resumed:
            raise FileExistsError(
                f"ledger {path} already holds a run; a fresh run (no load_state_dict) "
                "writes a new ledger: remove that file or give the loader another "
                "ledger directory (a run resumed with load_state_dict continues it)"
            )
        resumed_at = None
        if resumed:
            if per_epoch is not None:
                self.step = epoch * per_epoch + start
            else:
                self.step = _steps_before(path, (epoch, start)) if held else 0
            resumed_at = {"epoch": epoch, "batch": start, "step": self.step}
            self.resumed = False
        if self._fd is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torn = held and not _ends_with_newline(path)
            # One os.write per line, in append mode: a line reaches the file whole as
            # the batch is handed out, with no buffer a killed process could lose.
            fd = self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.write = partial(os.write, fd)
            # Closed when the loader goes (or the interpreter exits).
            self._closer = weakref.finalize(self, os.close, fd)
            self._path = path
            if torn:  # a killed writer's last line: the next line starts on its own
                self.write(b"\n")
        line = {
            "kind": "header",
            "format": FORMAT,
            "version": VERSION,
            "digest": DIGEST,
            "content": self.ledger.content,
            **header,
            "versions": versions(),
            "resumed_at": resumed_at,
            "written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
        }
        self.write((json.dumps(line) + "\n").encode())

    def __call__(self, data: Any) -> Any:
        """Write the line of a batch handed out, and return the user's batch."""
        if type(data) is not Recorded:  # pragma: no cover - every batch is Recorded
            return data
        position = data.position
        if position is None:
            position = self._count
            self._count += 1
        per_epoch = self._per_epoch
        step = self.step if per_epoch is None else self._epoch * per_epoch + position
        self.step = step + 1
        self.write(
            f'{{"kind":"batch","epoch":{self._epoch},"batch":{position},"step":{step},'
            f"{data.fields}}}\n".encode()
        )
        return data.batch

    def close(self) -> None:
        """Close the file (the loader's end; a new pass reopens nothing: use a new loader)."""
        if self._closer is not None:
            self._closer()
            self._fd = self._closer = None
            self.write = _no_file


def _no_file(data: bytes) -> int:
    raise ValueError("the ledger file is closed (or not opened yet)")


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _steps_before(path: Path, resume: tuple[int, int]) -> int:
    """How many distinct batches the ledger recorded before ``(epoch, batch)``: the step to go on from."""
    seen: set[tuple[int, int]] = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith('{"kind":"batch"'):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line
            key = (record["epoch"], record["batch"])
            if key < resume:
                seen.add(key)
    return len(seen)
