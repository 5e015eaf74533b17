r"""Checkpoints that survive being killed: atomic, verified writes and the RNG states.

A resumable run saves, every few steps, the model, the optimizer, the loader's
``state_dict()`` and the RNG states of the training loop itself (dropout draws from
torch's global RNG). :func:`save_checkpoint` writes the file so that a kill at any
moment leaves either the previous checkpoint or the new one, never half of one, and
:func:`load_checkpoint` refuses a file that is not exactly what was saved.

The file format (version 1) is a 60-byte header, then the ``torch.save`` payload::

    offset  size  field
         0    16  magic: b"\x89REPROLOADER\r\n\x1a\n"
        16     4  format version, unsigned little-endian (1)
        20     8  payload length in bytes, unsigned little-endian
        28    32  SHA-256 of the payload
        60     -  payload: what torch.save writes (a zip archive)

Every header field is checked exactly, so accidental damage anywhere in the file (a
flipped byte, a truncation, bytes appended) is refused with a :class:`CheckpointError`.
Files without the header, as ``torch.save`` and earlier reproloaders'
``save_checkpoint`` wrote them ("format version 0"), still load, with an
:class:`UnverifiedCheckpointWarning`: they carry no digest, so only the damage torch
itself notices is refused.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import socket
import struct
import warnings
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import torch

from reproloader._runtime.rngstate import python_from_plain, python_to_plain, to_plain
from reproloader.exceptions import CheckpointError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "UnverifiedCheckpointWarning",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

MAGIC: Final = b"\x89REPROLOADER\r\n\x1a\n"
"""The first 16 bytes of every checkpoint :func:`save_checkpoint` writes."""

FORMAT_VERSION: Final = 1
"""The checkpoint format this release writes; it reads this one and version 0."""

_HEADER: Final = struct.Struct("<16sIQ32s")  # magic, version, payload length, SHA-256
_ZIP: Final = b"PK\x03\x04"  # how torch.save's payload (and a format-0 file) starts
_FIX_DAMAGED: Final = "load an earlier checkpoint"


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint without a digest (format 0) was loaded: damage may go unnoticed."""


class _HashingWriter:
    # What torch.save writes to: counts and hashes the payload on its way to the file.
    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._hash = hashlib.sha256()
        self.length = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.length += len(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def digest(self) -> bytes:
        return self._hash.digest()


def save_checkpoint(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj)`` to ``path``, atomically, with a digest that ``load_checkpoint`` checks.

    Writes a temporary file next to ``path`` (``.<name>.<host>.<pid>.<random>.tmp``),
    flushes it to disk, renames it over ``path`` (an atomic replace on POSIX and
    Windows) and flushes the directory, so a crash or SIGKILL at any point leaves a
    complete checkpoint behind. Temporary files that killed saves of the same
    checkpoint left behind are removed first (on POSIX, those of this host whose
    process is gone).
    """
    target = Path(path)
    _remove_stale_temporaries(target)
    temporary = target.with_name(
        f".{target.name}.{_host()}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    )
    try:
        with temporary.open("wb") as file:
            _lock(file)  # held until closed: tells other saves this file is live
            file.write(bytes(_HEADER.size))  # the real header, once the digest is known
            writer = _HashingWriter(file)
            torch.save(obj, writer)  # type: ignore[arg-type]  # torch only calls write and flush
            file.seek(0)
            file.write(_HEADER.pack(MAGIC, FORMAT_VERSION, writer.length, writer.digest()))
            file.flush()
            os.fsync(file.fileno())
            if os.name == "posix":  # rename while the lock is held
                os.replace(temporary, target)
        if os.name != "posix":  # Windows renames no open file
            os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def load_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Read a checkpoint :func:`save_checkpoint` wrote; tensors and plain data only.

    The digest is checked before anything is unpickled, then the payload is read
    with ``torch.load(weights_only=True)``. The whole file is read into memory.

    A file without the header (format version 0: written by ``torch.save`` or by
    an earlier reproloader's ``save_checkpoint``) is still read, with an
    :class:`UnverifiedCheckpointWarning`: only damage that torch notices is refused.
    Save it again with :func:`save_checkpoint` to give it a digest.

    Raises:
        CheckpointError: the file is empty, truncated, damaged, of an unknown format
            version, or not a checkpoint at all; the message names the path.
        FileNotFoundError: there is no file at ``path``.
    """
    source = Path(path)
    with source.open("rb") as file:
        head = file.read(_HEADER.size)
        if MAGIC.startswith(head[: len(MAGIC)]) and head:
            return _load_verified(source, head, file)
        if head.startswith(_ZIP):
            file.seek(0)
            return _load_unverified(source, file.read())
    if not head:
        raise CheckpointError(
            f"cannot load checkpoint {source}: the file is empty (0 bytes); "
            f"save_checkpoint never leaves an empty file, so something else wrote or "
            f"truncated it; {_FIX_DAMAGED}"
        )
    raise CheckpointError(
        f"cannot load checkpoint {source}: it is not a checkpoint: it starts with "
        f"{head[:16]!r}, expected {MAGIC!r} (save_checkpoint) or {_ZIP!r} (torch.save); "
        "check the path"
    )


def _load_verified(source: Path, head: bytes, file: IO[bytes]) -> Any:
    if len(head) < _HEADER.size:
        raise CheckpointError(
            f"cannot load checkpoint {source}: the file is truncated: it has {len(head)} "
            f"bytes, fewer than the {_HEADER.size}-byte header; {_FIX_DAMAGED}"
        )
    _, version, length, digest = _HEADER.unpack(head)  # the magic matched
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"cannot load checkpoint {source}: its format version is {version}, this "
            f"reproloader reads versions 0 and {FORMAT_VERSION}; if a newer reproloader "
            f"wrote it, upgrade reproloader, else the header is damaged: {_FIX_DAMAGED}"
        )
    payload = file.read()
    if len(payload) != length:
        raise CheckpointError(
            f"cannot load checkpoint {source}: its header announces {length} bytes of "
            f"payload, the file holds {len(payload)}: it is "
            f"{'truncated' if len(payload) < length else 'damaged'}; {_FIX_DAMAGED}"
        )
    actual = hashlib.sha256(payload).digest()
    if actual != digest:
        raise CheckpointError(
            f"cannot load checkpoint {source}: it is damaged: the SHA-256 of its payload "
            f"is {actual.hex()}, its header records {digest.hex()}; {_FIX_DAMAGED}"
        )
    # Verified: the bytes are what save_checkpoint wrote, so an error from here on
    # (an object weights_only refuses, say) is about the content, and torch's own.
    return torch.load(io.BytesIO(payload), weights_only=True)


def _load_unverified(source: Path, data: bytes) -> Any:
    warnings.warn(
        f"checkpoint {source} has no digest (format version 0, written by torch.save or "
        "an earlier reproloader): damage torch does not notice goes unnoticed; save it again "
        "with save_checkpoint to add one",
        UnverifiedCheckpointWarning,
        stacklevel=3,
    )
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"cannot load checkpoint {source}: it has no digest (format version 0) and "
            f"torch cannot read it ({type(error).__name__}: {error}); it is damaged or was "
            f"not written by save_checkpoint or torch.save; {_FIX_DAMAGED}"
        ) from error


def _host() -> str:
    # Part of the temporary file's name: only saves on this host remove it.
    return re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname()) or "host"


def _lock(file: IO[bytes]) -> bool:
    """Take an exclusive lock without waiting; whether it was taken (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # Windows
        return False
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread's save
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists and belongs to another user
        return True
    return True


def _remove_stale_temporaries(target: Path) -> None:
    """Remove the temporary files that killed saves of ``target`` on this host left.

    A temporary file is stale when the process named in it is gone and no one holds
    its lock. Files of other hosts are left alone (a process id means nothing
    there); so is everything on Windows, where probing a process id could end it.
    Names without a host are those earlier reproloaders wrote (``.<name>.<pid>.tmp``).
    """
    if os.name != "posix":
        return
    prefix, host = f".{target.name}.", _host()
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return  # the directory does not exist (yet): the save will say so
    for candidate in candidates:
        middle = candidate.name[len(prefix) :]
        if not middle.endswith(".tmp"):
            continue
        fields = middle[: -len(".tmp")].rsplit(".", 2)
        if len(fields) == 3 and fields[0] == host and fields[1].isdigit():
            pid = int(fields[1])
        elif len(fields) == 1 and fields[0].isdigit():
            pid = int(fields[0])
        else:
            continue
        if _process_alive(pid):
            continue
        try:
            with candidate.open("rb") as file:
                if _lock(file):
                    candidate.unlink(missing_ok=True)
        except OSError:
            continue  # gone already, or not ours to remove


def capture_rng_state() -> dict[str, Any]:
    """The training process's RNG states, as plain data for a checkpoint.

    python ``random``, numpy's global RNG, torch's CPU generator and, when CUDA is
    initialized, every CUDA device's generator. ReproLoader never changes them, so
    they are the training loop's own.
    """
    state: dict[str, Any] = {
        "random": python_to_plain(random.getstate()),
        "numpy": to_plain(np.random.get_state(legacy=False)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,  # type: ignore[no-untyped-call]
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` returned."""
    random.setstate(python_from_plain(state["random"]))
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {
        "key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32),
        "pos": numpy_state["state"]["pos"],
    }
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
