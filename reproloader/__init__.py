"""reproloader: a drop-in torch DataLoader whose randomness is a pure function of its position.

The randomness of every batch derives from (seed, epoch, rank, batch) through a
numpy SeedSequence tree, in whichever process makes it, so results do not depend on
``num_workers``, the start method or worker lifetimes, and resuming mid-epoch is
bookkeeping rather than RNG snapshots.
"""

from reproloader._diagnose.audit import AuditReport, audit
from reproloader._diagnose.doctor import DoctorReport, doctor
from reproloader._diagnose.findings import Finding
from reproloader.config import DeterminismConfig, ReproConfig
from reproloader.context import WorkerContext, get_context
from reproloader.determinism import seed_everything
from reproloader.exceptions import (
    BatchUnavailableError,
    CheckpointError,
    ConfigError,
    ContextError,
    ReproError,
    StateError,
    StateMismatchError,
    StateVersionError,
)
from reproloader.ledger import Ledger, LedgerDiff, diff_ledgers
from reproloader.loader import ReproLoader
from reproloader.sampler import SeededRandomSampler
from reproloader.seeding import SeedTree

__version__ = "0.1.0.dev0"

__all__ = [
    "AuditReport",
    "BatchUnavailableError",
    "CheckpointError",
    "ConfigError",
    "ContextError",
    "DeterminismConfig",
    "DoctorReport",
    "Finding",
    "Ledger",
    "LedgerDiff",
    "ReproConfig",
    "ReproError",
    "ReproLoader",
    "SeedTree",
    "SeededRandomSampler",
    "StateError",
    "StateMismatchError",
    "StateVersionError",
    "WorkerContext",
    "__version__",
    "audit",
    "diff_ledgers",
    "doctor",
    "get_context",
    "seed_everything",
]
assert __all__ == sorted(__all__), "keep __all__ sorted"

# Public names repr under the package, not the private module they live in.
for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, str):
        _obj.__module__ = __name__
del _name, _obj
