"""Train a small conv net with atomics-heavy ops; print a digest of the weights as JSON.

    python -W error tests/gpu/_train_conv.py deterministic|default [--device cuda]
        [--steps 20] [--batch 256] [--probe 4194304]

Run in a fresh process per training: ``ReproConfig().apply()`` comes before anything
starts CUDA, because CUBLAS_WORKSPACE_CONFIG must be set before cuBLAS makes its
handles (else apply() warns with CublasTooLateWarning, an error under ``-W error``).

Besides the digest it prints ``atomics_distinct``: how many distinct results the same
large index_add gave in 5 tries in this process. Without the config CUDA adds with
atomics in whatever order the threads run, so the tries differ (the negative control);
with it they are bitwise equal.
"""

from __future__ import annotations

import argparse
import hashlib
import json

import torch
from torch import nn

from reproloader import ReproConfig


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))  # cuDNN convolutions
        pooled = h.mean(dim=(2, 3))
        # index_add / scatter_add: atomics on CUDA unless deterministic algorithms are on
        summed = torch.zeros(8, 16, device=x.device).index_add(0, groups, pooled)
        scattered = torch.zeros(8, 16, device=x.device).scatter_add(
            0, groups[:, None].expand(-1, 16), pooled
        )
        return self.head(summed + scattered)


def atomics_distinct(device: torch.device, size: int, tries: int = 5) -> int:
    """Distinct results of one sum of ``size`` values into one row by index_add, in ``tries``."""
    generator = torch.Generator(device="cpu").manual_seed(2)
    values = torch.randn(size, generator=generator).to(device)
    index = torch.zeros(len(values), dtype=torch.int64, device=device)
    results = set()
    for _ in range(tries):
        total = torch.zeros(1, device=device).index_add(0, index, values)
        results.add(total.cpu().numpy().tobytes())
    return len(results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["deterministic", "default"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--probe", type=int, default=1 << 22, help="values in the atomics probe")
    args = parser.parse_args()
    if args.mode == "deterministic":
        ReproConfig().apply()  # first: nothing has started CUDA yet
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = Net().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator(device="cpu").manual_seed(1)
    for _ in range(args.steps):
        x = torch.randn(args.batch, 3, 32, 32, generator=generator).to(device)
        groups = torch.randint(0, 8, (args.batch,), generator=generator).to(device)
        target = torch.randint(0, 10, (8,), generator=generator).to(device)
        loss = nn.functional.cross_entropy(model(x, groups), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    result = {
        "digest": digest.hexdigest(),
        "atomics_distinct": atomics_distinct(device, args.probe),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
