"""Golden ledger digests: the content and indices digests a ledger records, pinned.

A failure here means ledgers written before and after a change no longer compare:
``reproloader diff`` would report every batch as changed. If that is intended, bump
the ledger format's ``VERSION``, update the digests and add a changelog fragment.
"""

from __future__ import annotations

import torch

from reproloader._runtime.ledger import digest_batch, digest_indices


def test_a_small_batch_digests_every_byte_in_both_modes() -> None:
    batch = {"x": torch.arange(12, dtype=torch.float32).reshape(3, 4), "y": [1, "a", (2.5, None)]}
    assert digest_batch(batch, "full") == "9746a1dfc201deae084c92d1885db15f"
    assert digest_batch(batch, "sampled") == "9746a1dfc201deae084c92d1885db15f"


def test_a_large_strided_tensors_sampled_and_full_digests_are_pinned() -> None:
    # 1.5 MiB of int32 from a strided view: over FULL_BYTES, so "sampled" takes blocks.
    big = torch.arange(3 * (1 << 18), dtype=torch.int32).reshape(3, -1)[:, ::2]
    assert digest_batch(big, "sampled") == "b6d03503ab3d8d31513e07620bb2ba75"
    assert digest_batch(big, "full") == "90110cb9e0909671fce08df12ac23239"


def test_indices_digests_are_pinned() -> None:
    assert digest_indices([3, 1, 2]) == ("eb844a7c8fde85fc1f1be226f4246dd2", "[3,1,2]")
    assert digest_indices([[0, 1], [True, 7]]) == (
        "2ab0f9c0348761665bee951f0e40e827",
        "[[0,1],[true,7]]",
    )
