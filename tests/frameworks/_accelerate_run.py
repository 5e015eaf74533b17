"""One accelerate run, recording what each step saw (the pattern docs/integrations.md shows).

    python _accelerate_run.py PHASE OUTDIR           # one process
    torchrun --standalone --nproc-per-node 2 _accelerate_run.py PHASE OUTDIR

PHASE: ref | stop_mid / resume_mid (save_state after step 7) | stop_end / resume_end
"""

from __future__ import annotations

import gc
import json
import os
import sys
import warnings
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import Dataset

from reproloader import ReproLoader

warnings.filterwarnings("ignore")
PHASE, OUT = sys.argv[1], sys.argv[2]
EPOCHS = 3


class Noisy(Dataset[torch.Tensor]):
    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i), torch.rand(()).item()])


class Progress:
    """The training loop's own counters, saved by accelerate next to the loader."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]


def main() -> None:
    accelerator = Accelerator(cpu=True)
    try:
        run(accelerator)
    finally:
        # DDP holds the process group in reference cycles; left to interpreter shutdown,
        # gloo's threads can abort the process as it exits. Free them, end the group.
        gc.collect()
        accelerator.end_training()


def run(accelerator: Accelerator) -> None:
    os.makedirs(OUT, exist_ok=True)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    loader = ReproLoader(Noisy(), batch_size=4, shuffle=True, shard=True, num_workers=2, seed=7)
    model, optimizer, prepared = accelerator.prepare(model, optimizer, loader)
    assert prepared is loader, "prepare() keeps a ReproLoader as it is"
    progress = Progress()
    accelerator.register_for_checkpointing(progress)  # the loader is saved as a prepared one
    checkpoint = os.path.join(OUT, "state")
    if PHASE.startswith("resume"):
        accelerator.load_state(checkpoint)
    log = open(os.path.join(OUT, f"{PHASE}_rank{accelerator.process_index}.jsonl"), "a")  # noqa: SIM115
    while True:
        for cpu_batch in loader:
            batch = cpu_batch.to(accelerator.device)
            loss = model(batch).sum()
            accelerator.backward(loss)
            optimizer.step()
            progress.step += 1
            position = loader.state_dict()["position"]
            record = {
                "epoch": loader.epoch,
                "index": position - 1,
                "ids": [int(x) for x in batch[:, 0].tolist()],
                "values": batch[:, 1].tolist(),
            }
            log.write(json.dumps(record) + "\n")
            if PHASE == "stop_mid" and progress.step == 7:
                accelerator.save_state(checkpoint)
                return
        # The pass ended: loader.epoch names the next one.
        if PHASE == "stop_end" and loader.epoch == 1:
            accelerator.save_state(checkpoint)
            return
        if loader.epoch >= EPOCHS:
            return


if __name__ == "__main__":
    main()
