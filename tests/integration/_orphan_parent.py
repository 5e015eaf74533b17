"""A parent whose two workers are inside a slow ``worker_init_fn``: the test SIGKILLs it.

``python _orphan_parent.py START_METHOD PID_DIR [thread]``: each worker writes its pid
to ``PID_DIR/worker<id>.pid`` and then sleeps in ``worker_init_fn``. With ``thread``,
the iterator is started in a thread that then ends and a second epoch follows (with
persistent workers): it must finish, which it cannot if the workers die with the thread.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from reproloader import ReproLoader

SLEEP = 120  # seconds; far longer than the test waits, short enough to end on its own


class Numbers(Dataset[torch.Tensor]):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([i])


class SlowInit:
    def __init__(self, directory: str, sleep: float) -> None:
        self.directory = directory
        self.sleep = sleep

    def __call__(self, worker_id: int) -> None:
        path = Path(self.directory) / f"worker{worker_id}.pid"
        path.with_suffix(".tmp").write_text(str(os.getpid()))
        path.with_suffix(".tmp").rename(path)  # the test never reads half a pid
        time.sleep(self.sleep)


def main() -> None:
    method, directory = sys.argv[1], sys.argv[2]
    in_thread = sys.argv[3:] == ["thread"]
    loader = ReproLoader(
        Numbers(),
        batch_size=2,
        num_workers=2,
        seed=0,
        worker_init_fn=SlowInit(directory, 0.0 if in_thread else SLEEP),
        multiprocessing_context=method,
        persistent_workers=in_thread,
    )
    if not in_thread:
        next(iter(loader))  # blocks while the workers sleep; the test kills us
        return
    first: list[torch.Tensor] = []
    thread = threading.Thread(target=lambda: first.extend(loader))
    thread.start()
    thread.join()  # the thread that started the workers has ended
    second = list(loader)
    print(len(first), len(second), flush=True)


if __name__ == "__main__":
    main()
