"""DDP training that checkpoints mid-epoch and resumes, on any number of processes.

    torchrun --standalone --nproc-per-node 2 examples/ddp_resume.py --dir /tmp/ddp
    torchrun --standalone --nproc-per-node 2 examples/ddp_resume.py --dir /tmp/ddp2 --kill-after 17
    torchrun --standalone --nproc-per-node 2 examples/ddp_resume.py --dir /tmp/ddp2 --resume
    python examples/ddp_resume.py --compare /tmp/ddp /tmp/ddp2      # bitwise equal on every rank?

gloo on the CPU, nccl when CUDA is there. The loader shards with ``shard=True``: one
global order per epoch, each rank its part of every step, so a checkpoint taken on N
processes also resumes on M (the rest of the epoch is split over the new ranks; the
training loop's own RNG states are per rank, so then only the data is guaranteed).

Restarts and several nodes: with ``--auto-resume`` the script resumes by itself when a
checkpoint exists, so torchrun's own restarts continue the run (a killed worker makes
torchrun restart the whole group, which then starts from the last checkpoint)::

    torchrun --standalone --nproc-per-node 2 --max-restarts 2 examples/ddp_resume.py \
        --dir /tmp/ddp3 --auto-resume --kill-after 17 --kill-rank 1

``--kill-after`` kills only in the first attempt (``TORCHELASTIC_RESTART_COUNT`` 0), so
the restarted group runs to the end. Two nodes (here both on one machine, loopback
rendezvous; on real nodes use the first node's address and a shared ``--dir``)::

    torchrun --nnodes 2 --nproc-per-node 2 --node-rank 0 --master-addr 127.0.0.1 \
        --master-port 29500 examples/ddp_resume.py --dir /tmp/ddp4 &
    torchrun --nnodes 2 --nproc-per-node 2 --node-rank 1 --master-addr 127.0.0.1 \
        --master-port 29500 examples/ddp_resume.py --dir /tmp/ddp4

Checkpoints (every ``--every`` steps) hold the model, the optimizer, the loader's
state (one for all ranks: positions are global) and every rank's RNG states, written
either by rank 0 with ``torch.save`` or by every rank with torch.distributed.checkpoint
(``--checkpoint dcp``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from reproloader import ReproLoader, get_context
from reproloader.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


class Augmented(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Synthetic regression; each sample gets random noise (its augmentation)."""

    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=generator)
        self.y = self.x @ torch.linspace(-1, 1, 8) + 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        noise = torch.randn(8) * 0.05 + float(np.random.uniform(-0.01, 0.01))
        draw = torch.tensor([float(i), get_context().rng.random()])  # recorded by --record
        return self.x[i] + noise, self.y[i].reshape(1), draw


def say(text: str) -> None:
    """Print one whole line in one write, so lines of different ranks never interleave."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def save(
    args: argparse.Namespace, step: int, model: nn.Module, optimizer: Any, loader: Any
) -> None:
    rngs: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(rngs, capture_rng_state())  # every rank's own stream
    rng = {f"rank_{r}": s for r, s in enumerate(rngs)}
    if args.checkpoint == "dcp":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {
            "model": model_state,
            "optimizer": optimizer_state,
            "loader": loader,  # Stateful: DCP calls loader.state_dict() on every rank
            "rng": rng,
            "step": step,
            "world_size": dist.get_world_size(),
        }
        # One directory per checkpoint, then an atomic pointer to it: a kill during a
        # save leaves the previous checkpoint intact.
        target = args.dir / "dcp" / f"step_{step:06d}"
        dcp.save(state, checkpoint_id=str(target))
        if dist.get_rank() == 0:
            pointer = args.dir / "dcp" / "latest.tmp"
            pointer.write_text(target.name)
            os.replace(pointer, args.dir / "dcp" / "latest")
    elif dist.get_rank() == 0:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "loader": loader.state_dict(),  # rank-independent: a global position
            "rng": rng,
            "step": step,
            "world_size": dist.get_world_size(),
        }
        save_checkpoint(state, args.dir / "checkpoint.pt")
    dist.barrier()


def restore(args: argparse.Namespace, model: nn.Module, optimizer: Any, loader: Any) -> int:
    if args.checkpoint == "dcp":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        path = str(args.dir / "dcp" / (args.dir / "dcp" / "latest").read_text())
        # DCP loads into a template of the same structure: this run's objects, and
        # one RNG entry per rank that saved (the checkpoint's metadata lists them).
        saved = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
        ranks = sorted({key.split(".")[1] for key in saved if key.startswith("rng.")})
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state: dict[str, Any] = {
            "model": model_state,
            "optimizer": optimizer_state,
            "loader": loader,  # DCP calls loader.load_state_dict with what it read
            "rng": {name: capture_rng_state() for name in ranks},
            "step": 0,
            "world_size": 0,
        }
        dcp.load(state, checkpoint_id=path)
        set_state_dict(
            model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
        )
    else:
        state = load_checkpoint(args.dir / "checkpoint.pt")
        loader.load_state_dict(state["loader"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    if state["world_size"] == dist.get_world_size():
        restore_rng_state(state["rng"][f"rank_{dist.get_rank()}"])
    return int(state["step"])


def init_process_group(backend: str) -> None:
    """``dist.init_process_group``, with keys of its own in each of torchrun's attempts.

    torchrun's restarted workers meet in the agent's store again, where the keys of the
    attempt before (the peers' old addresses) still are; gloo would connect to the dead
    ones. A prefix per attempt keeps them apart.
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if attempt == "0" or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend)
        return
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False
    )
    dist.init_process_group(
        backend,
        store=dist.PrefixStore(f"attempt_{attempt}", store),
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
    )


def start(
    args: argparse.Namespace, model: nn.Module, optimizer: Any, loader: Any
) -> tuple[int, int | None, str]:
    """Resume if asked (or, with --auto-resume, if a checkpoint is there); announce a kill.

    Returns the step to start from, the step after which to kill (None: no kill) and who dies.
    """
    rank = dist.get_rank()
    if args.auto_resume:  # torchrun's restarts start the script again: pick up where it was
        args.resume = checkpoint_exists(args)
    step = restore(args, model, optimizer, loader) if args.resume else 0
    if args.resume:
        say(f"rank {rank} resumed at step {step}, epoch {loader.epoch}")
    # torchrun counts its restarts of the group; a kill happens only in the first attempt.
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    kill_after = args.kill_after if first_attempt else None
    victims = "every rank" if args.kill_rank is None else f"rank {args.kill_rank}"
    if kill_after is not None and rank == 0:
        say(
            f"--kill-after {kill_after}: {victims} SIGKILLs itself after step "
            f"{kill_after}, like a crash. torchrun then reports the workers as failed "
            "(ChildFailedError, exitcode -9, SIGKILL): that is the point. Run the same "
            "command with --resume instead of --kill-after to continue from the last checkpoint."
        )
    return step, kill_after, victims


def checkpoint_exists(args: argparse.Namespace) -> bool:
    """Whether a checkpoint of this run is there to resume from."""
    if args.checkpoint == "dcp":
        return (args.dir / "dcp" / "latest").exists()
    return (args.dir / "checkpoint.pt").exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps in all")
    parser.add_argument("--every", type=int, default=4, help="checkpoint every N steps")
    parser.add_argument("--samples", type=int, default=160)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per rank")
    parser.add_argument("--scope", default="batch", choices=["batch", "sample", "worker"])
    parser.add_argument("--checkpoint", default="torch", choices=["torch", "dcp"])
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--auto-resume", action="store_true", help="resume if a checkpoint exists (restarts)"
    )
    parser.add_argument(
        "--kill-after",
        type=int,
        help="every rank (or --kill-rank) SIGKILLs itself after step N, in the first attempt",
    )
    parser.add_argument("--kill-rank", type=int, help="only this rank SIGKILLs itself")
    parser.add_argument("--stop-after", type=int, help="checkpoint after step N and exit cleanly")
    parser.add_argument("--epochs", type=int, help="stop at the end of this many epochs")
    parser.add_argument(
        "--record", action="store_true", help="write the samples each rank consumed"
    )
    parser.add_argument("--compare", type=Path, nargs=2, metavar="DIR")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if args.dir is None:
        parser.error("--dir is required unless --compare is given")
    train(args)
    return 0


def train(args: argparse.Namespace) -> None:
    cuda = torch.cuda.is_available()
    init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = (
        torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if cuda
        else torch.device("cpu")
    )
    if cuda:
        torch.cuda.set_device(device)
    args.dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)  # the same initial weights on every rank
    # DDP reorders its gradient buckets after its first step, and from 3 ranks on the
    # all-reduce's sums depend on that layout: a resumed process (whose first step is a
    # later one) would round differently. find_unused_parameters=True keeps the first layout.
    model = DistributedDataParallel(
        nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 1)).to(device),
        find_unused_parameters=True,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = ReproLoader(
        Augmented(args.samples),
        batch_size=4,
        shuffle=True,
        shard=True,
        num_workers=args.workers,
        seed=2026,
        config={"rng_scope": args.scope},
    )
    step, kill_after, victims = start(args, model, optimizer, loader)
    first_step = step
    records: list[list[float]] = []

    while step < args.steps and (args.epochs is None or loader.epoch < args.epochs):
        for x, y, draw in loader:
            records += [[loader.epoch, *d] for d in draw.tolist()]
            loss = nn.functional.mse_loss(model(x.to(device)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if rank == 0:  # one line per step; every rank's loss differs, rank 0's stands in
                say(f"step {step} epoch {loader.epoch} loss {loss.item():.6f} (rank 0)")
            if step % args.every == 0 or step == args.stop_after:
                save(args, step, model, optimizer, loader)
            if step == kill_after and args.kill_rank in (None, rank):
                if rank == (args.kill_rank or 0):
                    say(f"killing {victims} now, after step {step}, as announced")
                os.kill(os.getpid(), signal.SIGKILL)
            if step in (args.stop_after, args.steps):
                break
        if step == args.stop_after:
            break

    if args.record:
        name = f"record_rank{rank}_{'resumed' if args.resume else 'first'}.json"
        (args.dir / name).write_text(json.dumps(records))
    if step == args.steps:
        weights = {k: v.cpu() for k, v in model.module.state_dict().items()}
        torch.save(weights, args.dir / f"final_rank{rank}.pt")
    dist.barrier()
    if rank == 0:
        say(summary(args, first_step, step, loader.epoch))
    # DDP's reducer holds the process group in reference cycles: left to interpreter
    # shutdown, gloo's threads are torn down after Python and can abort the process
    # as it exits. Free them now, then destroy the group.
    del model, optimizer
    gc.collect()
    dist.destroy_process_group()


def summary(args: argparse.Namespace, first: int, last: int, epoch: int) -> str:
    """What the run did, in one line, for rank 0 to print at the end."""
    what = f"trained steps {first + 1}-{last}" if last > first else "trained no step"
    where = f"{dist.get_world_size()} processes ({dist.get_backend()})"
    files = f"checkpoints in {args.dir}"
    if last == args.steps:
        files += f", final weights in {args.dir}/final_rank*.pt"
        nxt = f"compare two runs with: python examples/ddp_resume.py --compare {args.dir} OTHER_DIR"
    else:
        nxt = "continue with --resume"
    return f"done: {what} on {where}, now in epoch {epoch}; {files}; {nxt}"


def compare(a: Path, b: Path) -> int:
    ranks = sorted(p.name for p in a.glob("final_rank*.pt"))
    equal = bool(ranks) and all(
        all(
            torch.equal(x, y)
            for x, y in zip(
                torch.load(a / r, weights_only=True).values(),
                torch.load(b / r, weights_only=True).values(),
                strict=True,
            )
        )
        for r in ranks
    )
    print(f"{len(ranks)} ranks: final weights {'bitwise equal' if equal else 'DIFFER'}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
