"""transformers' Trainer: time from train(resume_from_checkpoint=...) to the first step, and exactness.

One epoch of ``--n`` tiny samples (``--batch`` 128) with random augmentation (torch's global
RNG, in ``__getitem__`` or ``__iter__``) and dropout; a map-style and an iterable
dataset. For ReproTrainer (``reproloader.trainer``) and the plain Trainer, a straight
run saves checkpoints at 10 %, 50 % and 90 % of the epoch and records every step's
loss; each checkpoint is then resumed in a fresh Trainer, timing ``train()`` up to its
first training step, and its next ``--steps`` losses are compared with the straight
run's. "fresh" is the time to the first step of a run that does not resume. Each time
is the median of ``--reps`` runs; all of them include the Trainer's own start (accelerate's
``free_memory`` runs a full ``gc.collect()``, loading the model and optimizer states).

Needs transformers (``pip install -e '.[transformers]'``); not part of ``nox -s bench``:

    python benchmarks/trainer_resume.py                  # 200,000 samples, 0 workers
    python benchmarks/trainer_resume.py --n 1000000 --workers 2
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from transformers import Trainer, TrainerCallback, TrainingArguments

from reproloader.trainer import ReproTrainer

POSITIONS = (0.10, 0.50, 0.90)


class Augmented(Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = torch.full((8,), float(i % 97) / 97) + 0.1 * torch.randn(8)
        return {"x": x, "labels": x.sum().reshape(1)}


class Stream(IterableDataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        for i in range(self.n):
            x = torch.full((8,), float(i % 97) / 97) + 0.1 * torch.randn(8)
            yield {"x": x, "labels": x.sum().reshape(1)}


class StatefulStream(Stream):
    """A stream that says where it is: a ReproLoader resumes it without replaying."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.position = 0

    def __iter__(self) -> Any:
        start, self.position = self.position, 0
        for i in range(start, self.n):
            self.position = i + 1
            x = torch.full((8,), float(i % 97) / 97) + 0.1 * torch.randn(8)
            yield {"x": x, "labels": x.sum().reshape(1)}

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = state["position"]


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.mse_loss(self.net(x), labels)}


class Control(TrainerCallback):  # type: ignore[misc]
    """Saves at the given steps and stops at ``stop``."""

    def __init__(self, saves: set[int], stop: int) -> None:
        self.saves, self.stop = saves, stop

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step in self.saves:
            control.should_save = True
        if state.global_step >= self.stop:
            control.should_training_stop = True


def recording(base: type[Trainer]) -> type[Trainer]:
    class Recording(base):  # type: ignore[misc, valid-type]
        losses: list[tuple[int, float]]
        first_step: float | None = None

        def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            if self.first_step is None:
                self.first_step = time.perf_counter()
            loss = super().compute_loss(model, inputs, *args, **kwargs)
            self.losses.append((self.state.global_step, loss.item()))
            return loss

    return Recording


def run(
    base: type[Trainer],
    dataset: Any,
    directory: Path,
    *,
    batch: int,
    epoch_steps: int,
    workers: int,
    saves: set[int],
    stop: int,
    resume: str | None,
) -> tuple[float, list[tuple[int, float]]]:
    args = TrainingArguments(
        output_dir=str(directory),
        per_device_train_batch_size=batch,
        max_steps=epoch_steps,
        lr_scheduler_type="constant",
        learning_rate=0.01,
        save_strategy="steps",
        save_steps=10**9,
        dataloader_num_workers=workers,
        seed=0,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        logging_strategy="no",
    )
    torch.manual_seed(0)
    trainer = recording(base)(
        model=Regressor(), args=args, train_dataset=dataset, callbacks=[Control(saves, stop)]
    )
    trainer.losses = []
    gc.collect()  # the last run's garbage: accelerate's free_memory() collects at the start
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    assert trainer.first_step is not None
    return trainer.first_step - start, trainer.losses


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="losses compared after resuming")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    epoch_steps = args.n // args.batch
    saves = {int(p * epoch_steps) for p in POSITIONS}
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="trainer_resume_"))
    try:
        kinds = {
            "map-style": Augmented,
            "iterable": Stream,
            "iterable, state_dict": StatefulStream,
        }
        for kind, make in kinds.items():
            for name, base in (("ReproTrainer", ReproTrainer), ("Trainer", Trainer)):
                directory = scratch / f"{kind}-{name}"
                common = {"batch": args.batch, "epoch_steps": epoch_steps, "workers": args.workers}
                _, straight = run(
                    base,
                    make(args.n),
                    directory,
                    saves=saves,
                    stop=max(saves) + args.steps,
                    resume=None,
                    **common,
                )
                fresh = [
                    run(
                        base,
                        make(args.n),
                        scratch / "fresh",
                        saves=set(),
                        stop=1,
                        resume=None,
                        **common,
                    )[0]
                    for _ in range(args.reps)
                ]
                shutil.rmtree(scratch / "fresh")
                row: dict[str, Any] = {
                    "dataset": kind,
                    "trainer": name,
                    "fresh_s": statistics.median(fresh),
                }
                for position, step in zip(POSITIONS, sorted(saves), strict=True):
                    seconds, exact, same = [], [], []
                    for _ in range(args.reps):
                        elapsed, losses = run(
                            base,
                            make(args.n),
                            scratch / "resumed",
                            saves=set(),
                            stop=step + args.steps,
                            resume=str(directory / f"checkpoint-{step}"),
                            **common,
                        )
                        expected = [r for r in straight if step <= r[0] < step + args.steps]
                        seconds.append(elapsed)
                        exact.append(losses == expected)
                        same.append(sum(a == b for a, b in zip(losses, expected, strict=False)))
                        shutil.rmtree(scratch / "resumed")
                    row[f"{position:.0%}_s"] = statistics.median(seconds)
                    row[f"{position:.0%}_exact"] = all(exact)
                    row[f"{position:.0%}_same"] = min(same)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"\n{args.n:,} samples, batch {args.batch}, {args.workers} workers; seconds from "
        f"train(resume_from_checkpoint=...) to the first step (median of {args.reps}); of the next {args.steps} "
        "losses: how many equal the straight run's\n"
    )
    header = "| dataset | trainer | fresh | " + " | ".join(
        f"{p:.0%} (same losses)" for p in POSITIONS
    )
    print(header + " |\n|" + "---|" * (3 + len(POSITIONS)))
    for row in rows:
        cells = [
            f"{row[f'{p:.0%}_s']:.2f} s ({row[f'{p:.0%}_same']}/{args.steps})" for p in POSITIONS
        ]
        print(
            f"| {row['dataset']} | {row['trainer']} | {row['fresh_s']:.2f} s | "
            + " | ".join(cells)
            + " |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
