"""transformers' Trainer with a ReproLoader (ReproTrainer), resumable mid-epoch from its checkpoints.

Needs transformers 5.25 or later: ``pip install 'reproloader[transformers]'`` (from a
clone: ``pip install -e '.[transformers]'``).

    python examples/transformers_train.py --dir /tmp/hf                   # 20 steps
    python examples/transformers_train.py --dir /tmp/hf2 --stop-after 13  # checkpoint, stop
    python examples/transformers_train.py --dir /tmp/hf2 --resume         # continue to 20
    python examples/transformers_train.py --compare /tmp/hf /tmp/hf2      # bitwise equal?
    torchrun --standalone --nproc-per-node 2 examples/transformers_train.py --dir /tmp/hf3

A tiny GPT-2 built from a config (no download) trains with gradient accumulation 2
over several epochs of token rows with random augmentation, loaded by 2 workers.
``ReproTrainer`` builds its training loader as a ReproLoader from the
``TrainingArguments``, writes the loader's state into every checkpoint folder, and
``train(resume_from_checkpoint=True)`` continues at the saved batch: no skipping.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

try:
    from transformers import GPT2Config, GPT2LMHeadModel, TrainerCallback, TrainingArguments
    from transformers import set_seed as hf_set_seed

    from reproloader.trainer import ReproTrainer
except ModuleNotFoundError as missing:
    if missing.name is None or missing.name.partition(".")[0] != "transformers":
        raise
    sys.exit(
        "transformers_train.py needs transformers, which is not installed: "
        "pip install 'reproloader[transformers]' (from a clone: pip install -e '.[transformers]')"
    )

LENGTH, VOCAB = 16, 64


class Tokens(Dataset[dict[str, torch.Tensor]]):
    """Token rows; each read replaces two tokens at random (an augmentation)."""

    def __len__(self) -> int:
        return 48

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = (torch.arange(LENGTH) * (i % 7 + 1) + i) % VOCAB
        ids[torch.randint(LENGTH, (2,))] = torch.randint(VOCAB, (2,))
        return {"input_ids": ids, "labels": ids.clone()}


class StopAfter(TrainerCallback):  # type: ignore[misc]
    """Checkpoint at step N and stop there: a run cut short."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True


def train(directory: Path, steps: int, stop_after: int | None, resume: bool) -> None:
    args = TrainingArguments(
        output_dir=str(directory / "checkpoints"),
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        max_steps=steps,
        learning_rate=0.01,
        save_strategy="steps",
        save_steps=10,
        dataloader_num_workers=2,
        dataloader_persistent_workers=True,
        seed=0,  # the model's initialization and the loader's seed (data_seed, if set)
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        disable_tqdm=True,
        logging_strategy="no",
        ddp_find_unused_parameters=False,  # under torchrun: every parameter is used
    )
    hf_set_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=LENGTH)
    )
    trainer = ReproTrainer(
        model=model,
        args=args,
        train_dataset=Tokens(),
        callbacks=[StopAfter(stop_after)] if stop_after else [],
    )
    trainer.train(resume_from_checkpoint=True if resume else None)
    loader = trainer.repro_loader
    if stop_after is not None and trainer.state.global_step == stop_after:
        if trainer.is_world_process_zero():
            print(
                f"stopped after step {stop_after}, epoch {loader.epoch}, as asked (--stop-after); "
                f"checkpoint in {args.output_dir}/checkpoint-{stop_after}\n"
                f"continue with: python examples/transformers_train.py --dir {directory} --resume"
            )
        return
    if trainer.is_world_process_zero():
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        torch.save(weights, directory / "final.pt")
        print(
            f"trained {trainer.state.global_step} steps on {args.world_size} process(es), "
            f"epoch {loader.epoch}; final weights in {directory / 'final.pt'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--stop-after", type=int, help="checkpoint after step N and stop")
    parser.add_argument("--resume", action="store_true", help="resume from DIR's last checkpoint")
    parser.add_argument("--compare", type=Path, nargs=2, metavar="DIR")
    args = parser.parse_args(argv)
    if args.compare:
        a, b = (torch.load(d / "final.pt", weights_only=True) for d in args.compare)
        equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        print("final weights bitwise equal" if equal else "final weights DIFFER")
        return 0 if equal else 1
    if args.dir is None:
        parser.error("--dir is required unless --compare is given")
    args.dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", module="transformers")
    train(args.dir, args.steps, args.stop_after, args.resume)
    if torch.distributed.is_initialized():  # under torchrun
        # The Trainer's DDP wrapper holds the process group in reference cycles; left to
        # interpreter shutdown, gloo's threads can abort the process as it exits
        # ("terminate called without an active exception"). Free them, then end the group.
        gc.collect()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
