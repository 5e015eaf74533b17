"""The run ledger: what each rank of a run consumed, batch by batch, and how two runs compare.

Give a loader a directory (``ReproLoader(..., ledger="runs/today/ledger")``) and
each rank appends ``rank-NNNNN.jsonl`` there: a header saying what makes the run
(seed, scope, config, versions, world size, ``num_workers``, dataset, sampler) and a
line per batch handed out (epoch, batch index, step, digests of the indices and of
the content, the indices). :func:`diff_ledgers` (``reproloader diff A B``) names the
first (epoch, batch, rank) where two runs differ and the header fields that
explain it; :func:`read_ledger` reads one for a script.

.. versionadded:: 0.2
"""

from __future__ import annotations

from reproloader._diagnose.ledger import (
    Divergence,
    HeaderChange,
    LedgerDiff,
    LedgerReadError,
    RankLedger,
    diff_ledgers,
    read_ledger,
)
from reproloader._runtime.ledger import Ledger

__all__ = [
    "Divergence",
    "HeaderChange",
    "Ledger",
    "LedgerDiff",
    "LedgerReadError",
    "RankLedger",
    "diff_ledgers",
    "read_ledger",
]
