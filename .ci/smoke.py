"""Smoke test of an installed reproloader (run from outside the source tree)."""

import subprocess
import sys

import torch
from torch.utils.data import Dataset

import reproloader
from reproloader import ReproLoader


class Noisy(Dataset):
    """Random augmentation from torch's global RNG."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return torch.tensor([float(i)]) + torch.rand(1)


def main():
    """Same batches across worker counts, exact resume, the CLI entry points."""
    assert "site-packages" in reproloader.__file__, reproloader.__file__
    runs = [
        torch.cat(list(ReproLoader(Noisy(), batch_size=4, shuffle=True, num_workers=n, seed=1)))
        for n in (0, 2)
    ]
    assert torch.equal(*runs), "the same batches with 0 and 2 workers"
    loader = ReproLoader(Noisy(), batch_size=4, seed=1)
    it = iter(loader)
    next(it)
    resumed = ReproLoader(Noisy(), batch_size=4, seed=1)
    resumed.load_state_dict(loader.state_dict())
    assert torch.equal(torch.cat(list(resumed)), torch.cat(list(it)))
    subprocess.run(
        [sys.executable, "-m", "reproloader", "doctor", "--json"], check=True, capture_output=True
    )
    subprocess.run(["reproloader", "doctor"], check=True, capture_output=True)
    print(f"reproloader {reproloader.__version__} from {reproloader.__file__}: smoke test passed")


if __name__ == "__main__":
    main()
