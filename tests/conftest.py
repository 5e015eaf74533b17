from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_globals() -> None:
    """Start each test from known global RNG states (the loader must not need it)."""
    random.seed(1234)
    np.random.seed(1234)
    torch.manual_seed(1234)
