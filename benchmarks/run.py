"""``nox -s bench``: every benchmark, each measured against DataLoader in one run.

Results go to ``benchmarks/results/`` (JSON and a Markdown table per benchmark).
Pass ``--quick`` for a short smoke run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import batch_at
import discovery
import ledger
import plot  # imported after the path set-up above
import resume
import scale
import throughput
import unit_cost


def main() -> None:
    args = sys.argv[1:]
    quick = "--quick" in args
    throughput.main(args)
    resume.main(["--n", "100000", "--reps", "2"] if quick else [])
    unit_cost.main(["--reps", "3"] if quick else [])
    scale.main(["--quick"] if quick else [])
    discovery.main(["--reps", "3"] if quick else [])
    batch_at.main(["--reps", "2", "--iterate", "200"] if quick else [])
    ledger.main(["--quick"] if quick else [])
    plot.main()


if __name__ == "__main__":
    main()
