"""Run ``torch.histc`` (no deterministic CUDA implementation) under a config; print JSON.

    python -W error tests/gpu/_histc.py deterministic|warn_only|default [--device cuda]

The config is applied first, before anything starts CUDA (see _train_conv.py). The
output says whether the op raised, warned or ran, with the message.
"""

from __future__ import annotations

import argparse
import json
import warnings

import torch

from reproloader import ReproConfig

NOT_DETERMINISTIC = "does not have a deterministic implementation"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["deterministic", "warn_only", "default"])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.mode != "default":
        ReproConfig(determinism={"warn_only": args.mode == "warn_only"}).apply()
    values = torch.rand(1000, device=args.device)
    outcome, message = "ran", ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.histc(values, bins=10)
        except RuntimeError as error:
            outcome, message = "raised", str(error)
    alerts = [str(w.message) for w in caught if NOT_DETERMINISTIC in str(w.message)]
    if outcome == "ran" and alerts:
        outcome, message = "warned", alerts[0]
    print(json.dumps({"outcome": outcome, "message": message}))


if __name__ == "__main__":
    main()
