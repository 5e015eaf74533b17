"""ReproTrainer runs for tests/frameworks/test_transformers.py, recording every micro-batch.

    python _transformers_run.py OUT PHASE CONFIG [CONFIG ...]
    torchrun --standalone --nproc-per-node 2 _transformers_run.py OUT PHASE CONFIG ...

CONFIG: ``map-w0``, ``map-w2``, ``iterable-w0``, ``iterable-w2`` (dataset kind and
num_workers); each runs in OUT/CONFIG. PHASE: ``straight`` (every CONFIG, one after the
other), ``kill`` (one CONFIG: SIGKILL every process one step after the checkpoint at
step KILL_AFTER), ``resume`` (one CONFIG: ``train(resume_from_checkpoint=True)``).

A tiny GPT-2 built from a config (one layer, width 16, dropout on) trains MAX_STEPS
optimizer steps with gradient accumulation 2 over several epochs; the map-style data
are augmented with torch's global RNG in ``__getitem__``, the iterable data with the
unit's own generator. Each rank appends one line per micro-batch to
OUT/CONFIG/PHASE_rank<r>.jsonl: the global step, the exact loss, the batch's tokens.
Rank 0 saves the final weights to OUT/CONFIG/final.pt.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from transformers import GPT2Config, GPT2LMHeadModel, TrainerCallback, TrainingArguments
from transformers import set_seed as hf_set_seed

from reproloader import get_context
from reproloader.trainer import ReproTrainer

SAMPLES = 40  # per rank for the iterable data; in all for the map-style data
LENGTH, VOCAB = 8, 32
BATCH, ACCUMULATE = 4, 2
MAX_STEPS, SAVE_STEPS, KILL_AFTER = 12, 4, 8


class Augmented(Dataset[dict[str, torch.Tensor]]):
    """Token rows with a random token swapped in, drawn from torch's global RNG."""

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = (torch.arange(LENGTH) * (i + 1)) % VOCAB
        ids[int(torch.randint(LENGTH, ()))] = int(torch.randint(VOCAB, ()))
        return {"input_ids": ids, "labels": ids.clone()}


class Stream(IterableDataset[dict[str, torch.Tensor]]):
    """Each rank and worker reads its own share; augmentation from the unit's generator."""

    def __len__(self) -> int:  # per rank: the Trainer counts epochs from it
        return SAMPLES

    def __iter__(self) -> Any:
        context = get_context()
        workers = max(context.num_workers, 1)
        for i in range(context.worker_id, SAMPLES, workers):
            row = SAMPLES * context.rank + i
            ids = (torch.arange(LENGTH) * (row + 1) + 1) % VOCAB
            ids[int(context.rng.integers(LENGTH))] = int(context.rng.integers(VOCAB))
            yield {"input_ids": ids, "labels": ids.clone()}


class Recording(ReproTrainer):
    """Appends each micro-batch's exact loss and tokens to a file, as it trains."""

    record: Any

    def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        loss = super().compute_loss(model, inputs, *args, **kwargs)
        value = (loss[0] if isinstance(loss, tuple) else loss).item()
        row = {
            "step": self.state.global_step,
            "loss": value.hex(),
            "ids": inputs["input_ids"].tolist(),
        }
        self.record.write(json.dumps(row) + "\n")
        self.record.flush()
        return loss


class KillAfterCheckpoint(TrainerCallback):  # type: ignore[misc]
    """SIGKILL this process at the end of the step after the checkpoint KILL_AFTER."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == KILL_AFTER + 1:
            os.kill(os.getpid(), signal.SIGKILL)


def run(out: Path, phase: str, config: str) -> None:
    kind, workers = config.split("-w")
    directory = out / config
    rank = int(os.environ.get("RANK", "0"))
    directory.mkdir(parents=True, exist_ok=True)
    args = TrainingArguments(
        output_dir=str(directory / "checkpoints"),
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=ACCUMULATE,
        max_steps=MAX_STEPS,
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        learning_rate=0.05,
        dataloader_num_workers=int(workers),
        seed=0,
        data_seed=2024,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        logging_strategy="no",
    )
    hf_set_seed(0)  # the same initial weights in every run and process
    model = GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=VOCAB, n_positions=LENGTH)
    )
    trainer = Recording(
        model=model,
        args=args,
        train_dataset=Augmented() if kind == "map" else Stream(),
        callbacks=[KillAfterCheckpoint()] if phase == "kill" else [],
    )
    with (directory / f"{phase}_rank{rank}.jsonl").open("a") as trainer.record:
        trainer.train(resume_from_checkpoint=phase == "resume" or None)
    if rank == 0:
        torch.save(
            {k: v.detach().clone() for k, v in model.state_dict().items()}, directory / "final.pt"
        )


def main() -> None:
    out, phase, configs = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    for config in configs:
        run(out, phase, config)
    if torch.distributed.is_initialized():
        # The Trainer's DDP wrapper holds the process group in reference cycles: left to
        # interpreter shutdown, gloo's threads are torn down after Python and abort the
        # process as it exits ("terminate called without an active exception"; 2 in 12
        # runs here). Free them, then destroy the group, as examples/ddp_resume.py does.
        gc.collect()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
