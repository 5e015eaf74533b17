"""Train a small conv net with atomics-heavy ops on CUDA; print a digest of the weights.

    python tests/gpu/_train_conv.py deterministic|default

Run in a fresh process per training: CUBLAS_WORKSPACE_CONFIG must be set before CUDA
starts, which is what ReproConfig.apply() does first.
"""

from __future__ import annotations

import hashlib
import sys

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


def main() -> None:
    mode = sys.argv[1]
    if mode == "deterministic":
        ReproConfig().apply()
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = Net().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator(device="cpu").manual_seed(1)
    for _ in range(20):
        x = torch.randn(256, 3, 32, 32, generator=generator).to(device)
        groups = torch.randint(0, 8, (256,), generator=generator).to(device)
        target = torch.randint(0, 10, (8,), generator=generator).to(device)
        loss = nn.functional.cross_entropy(model(x, groups), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    print(digest.hexdigest())


if __name__ == "__main__":
    main()
