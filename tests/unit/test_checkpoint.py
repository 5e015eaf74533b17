from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from reproloader import CheckpointError
from reproloader.checkpoint import (
    FORMAT_VERSION,
    MAGIC,
    UnverifiedCheckpointWarning,
    _host,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from tests.helpers import ROOT

HEADER = 60


def checkpoint() -> dict[str, object]:
    """What a training loop saves: weights, a step count, RNG states, a loader state."""
    torch.manual_seed(0)
    return {
        "model": torch.nn.Linear(4, 3).state_dict(),
        "step": 7,
        "rng": capture_rng_state(),
        "loader": {"format": "reproloader.ReproLoader", "epoch": 1, "position": 5},
    }


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(checkpoint(), path)
    return path


def test_save_then_load_round_trips_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    state = {"weights": torch.arange(3.0), "step": 7, "rng": capture_rng_state()}
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["weights"], state["weights"])
    assert loaded["step"] == 7
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_the_file_is_a_header_with_the_payloads_digest_then_torch_saves_payload(
    saved: Path,
) -> None:
    data = saved.read_bytes()
    payload = data[HEADER:]
    assert data[:16] == MAGIC
    assert int.from_bytes(data[16:20], "little") == FORMAT_VERSION == 1
    assert int.from_bytes(data[20:28], "little") == len(payload)
    assert data[28:60] == hashlib.sha256(payload).digest()
    assert payload[:4] == b"PK\x03\x04"  # torch.save's zip archive, untouched


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self) -> tuple[object, ...]:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"step": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path) == {"step": 1}
    assert list(tmp_path.iterdir()) == [path]


def test_200_random_single_byte_flips_are_all_refused_naming_the_path(
    saved: Path, tmp_path: Path
) -> None:
    data = saved.read_bytes()
    rng = random.Random(12)
    damaged = tmp_path / "damaged.pt"
    for _ in range(200):
        position, mask = rng.randrange(len(data)), rng.randrange(1, 256)
        flipped = bytearray(data)
        flipped[position] ^= mask
        damaged.write_bytes(flipped)
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(damaged)
        assert f"cannot load checkpoint {damaged}: " in str(caught.value), (position, mask)


def test_a_flip_in_every_header_byte_is_refused(saved: Path, tmp_path: Path) -> None:
    data = saved.read_bytes()
    damaged = tmp_path / "damaged.pt"
    for position in range(HEADER):
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        damaged.write_bytes(flipped)
        with pytest.raises(CheckpointError, match="cannot load checkpoint"):
            load_checkpoint(damaged)


def test_a_damaged_payload_names_both_digests(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[-1] ^= 0xFF
    saved.write_bytes(data)
    actual = hashlib.sha256(data[HEADER:]).hexdigest()
    recorded = bytes(data[28:60]).hex()
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(saved)
    assert str(caught.value) == (
        f"cannot load checkpoint {saved}: it is damaged: the SHA-256 of its payload is "
        f"{actual}, its header records {recorded}; load an earlier checkpoint"
    )


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.touch()
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (
        f"cannot load checkpoint {path}: the file is empty (0 bytes); save_checkpoint never "
        "leaves an empty file, so something else wrote or truncated it; load an earlier "
        "checkpoint"
    )


@pytest.mark.parametrize("keep", [1, 10, 16, 59, 60, 61, -1])
def test_a_truncated_file_is_refused(saved: Path, keep: int) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match="truncated") as caught:
        load_checkpoint(saved)
    assert str(saved) in str(caught.value)


def test_truncation_names_both_lengths(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:100])
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(saved)
    assert str(caught.value) == (
        f"cannot load checkpoint {saved}: its header announces {len(data) - HEADER} bytes of "
        "payload, the file holds 40: it is truncated; load an earlier checkpoint"
    )


def test_bytes_appended_are_refused(saved: Path) -> None:
    with saved.open("ab") as file:
        file.write(b"\0")
    with pytest.raises(CheckpointError, match=r"the file holds \d+: it is damaged"):
        load_checkpoint(saved)


def test_a_newer_format_version_says_to_upgrade(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[16:20] = (2).to_bytes(4, "little")
    saved.write_bytes(data)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(saved)
    assert str(caught.value) == (
        f"cannot load checkpoint {saved}: its format version is 2, this reproloader reads "
        "versions 0 and 1; if a newer reproloader wrote it, upgrade reproloader, else the "
        "header is damaged: load an earlier checkpoint"
    )


def legacy_torch_file(path: Path) -> None:
    torch.save({"step": 1}, path, _use_new_zipfile_serialization=False)


@pytest.mark.parametrize(
    "write",
    [
        lambda p: p.write_text("step = 7\nweights = [1, 2, 3]\n"),
        lambda p: p.write_bytes(random.Random(3).randbytes(4096)),
        lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100)),
        legacy_torch_file,
    ],
    ids=["text", "random bytes", "png", "torch legacy format"],
)
def test_a_foreign_file_is_refused_naming_what_it_starts_with(
    tmp_path: Path, write: object
) -> None:
    path = tmp_path / "foreign.pt"
    write(path)  # type: ignore[operator]
    start = path.read_bytes()[:16]
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (
        f"cannot load checkpoint {path}: it is not a checkpoint: it starts with {start!r}, "
        f"expected {MAGIC!r} (save_checkpoint) or b'PK\\x03\\x04' (torch.save); check the path"
    )


def test_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_plain_torch_save_file_loads_as_format_0_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    state = checkpoint()
    torch.save(state, path)  # what save_checkpoint wrote before the header
    with pytest.warns(UnverifiedCheckpointWarning, match=re.escape(f"checkpoint {path} has no")):
        loaded = load_checkpoint(path)
    assert loaded["step"] == 7
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"])  # type: ignore[index]


def test_a_format_0_file_torch_cannot_read_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save(checkpoint(), path)
    path.write_bytes(path.read_bytes()[:-30])  # the zip's directory is gone
    with (
        pytest.warns(UnverifiedCheckpointWarning),
        pytest.raises(
            CheckpointError, match=re.escape(f"cannot load checkpoint {path}: it has no")
        ),
    ):
        load_checkpoint(path)


def test_rng_state_round_trips_every_global_rng(tmp_path: Path) -> None:
    np.random.standard_normal()  # a cached legacy gauss deviate is part of the state
    state = capture_rng_state()
    expected = (random.random(), np.random.standard_normal(), torch.rand(()).item())
    save_checkpoint(state, tmp_path / "rng.pt")
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt"))
    assert (random.random(), np.random.standard_normal(), torch.rand(()).item()) == expected


# A save that SIGKILLs itself after writing `KILL_AFTER` bytes of the payload.
KILLED_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from reproloader import checkpoint

    path, kill_after = sys.argv[1], int(sys.argv[2])
    print(os.getpid(), flush=True)
    checkpoint.save_checkpoint({"step": 1}, path)
    write = checkpoint._HashingWriter.write

    def write_then_die(self, data):
        written = write(self, data)
        if self.length >= kill_after:
            self._file.flush()  # let the half-written file reach the disk
            os.kill(os.getpid(), signal.SIGKILL)
        return written

    checkpoint._HashingWriter.write = write_then_die
    checkpoint.save_checkpoint({"step": 2, "weights": torch.zeros(100_000)}, path)
    """
)


def killed_save(path: Path, kill_after: int) -> int:
    """Run KILLED_SAVE; the pid of the process that was killed."""
    process = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, str(path), str(kill_after)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    return int(process.stdout)


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and stale-file cleanup are POSIX")
def test_a_save_killed_midway_leaves_the_previous_checkpoint_and_the_next_save_cleans_up(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ckpt.pt"
    pid = killed_save(path, kill_after=200_000)
    (leftover,) = (p for p in tmp_path.iterdir() if p != path)
    assert leftover.name.startswith(f".ckpt.pt.{_host()}.{pid}.")
    assert leftover.stat().st_size > 200_000  # the kill came mid-write
    assert load_checkpoint(path) == {"step": 1}  # the previous checkpoint, intact

    save_checkpoint({"step": 3}, path)
    assert list(tmp_path.iterdir()) == [path]
    assert load_checkpoint(path) == {"step": 3}


@pytest.mark.skipif(os.name != "posix", reason="stale-file cleanup is POSIX only")
def test_cleanup_keeps_temporary_files_that_may_be_live(tmp_path: Path) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    gone = finished.pid
    host = _host()
    path = tmp_path / "ckpt.pt"
    stale = [
        tmp_path / f".ckpt.pt.{host}.{gone}.0a1b2c3d.tmp",
        tmp_path / f".ckpt.pt.{gone}.tmp",  # an earlier reproloader's name
    ]
    kept = [
        tmp_path / f".ckpt.pt.{host}.{os.getppid()}.0a1b2c3d.tmp",  # its process is alive
        tmp_path / f".ckpt.pt.{host}.{os.getpid()}.0a1b2c3d.tmp",  # this process's own
        tmp_path / f".ckpt.pt.otherhost.{gone}.0a1b2c3d.tmp",  # a pid of another host
        tmp_path / f".other.pt.{host}.{gone}.0a1b2c3d.tmp",  # another checkpoint's
        tmp_path / f".ckpt.pt.{host}.{gone}.locked.tmp",  # someone holds its lock
        tmp_path / ".ckpt.pt.notes",
    ]
    for file in stale + kept:
        file.write_bytes(b"partial")
    import fcntl

    with kept[4].open("rb") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        save_checkpoint({"step": 1}, path)
    assert sorted(tmp_path.iterdir()) == sorted([path, *kept])
