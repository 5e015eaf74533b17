"""Put ReproLoader in place of DataLoader at interpreter start, for upstream test runs only.

``upstream/run.py`` puts this folder first on ``PYTHONPATH`` and names the classes to
replace in ``REPROLOADER_SUBSTITUTE`` (``module:attribute`` pairs, comma-separated). Python
imports ``sitecustomize`` in every interpreter it starts, so the substitution happens before
any test code runs in the pytest process, in spawned and forkserver workers, and in
``subprocess`` children (forked workers inherit it). Without the variable this file only
hands over to the ``sitecustomize`` it shadows, if there is one.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from importlib.machinery import PathFinder

ENV = "REPROLOADER_SUBSTITUTE"


def _chain() -> None:
    """Run the ``sitecustomize`` this one shadows, so the interpreter's own set-up still happens."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


def _substitute(targets: str) -> None:
    # reproloader is imported before any name is replaced: ReproLoader's bases
    # (torchdata's StatefulDataLoader, which subclasses torch's DataLoader) are bound to
    # the real classes, so replacing torch.utils.data.DataLoader cannot make
    # ReproLoader inherit from itself. Code imported later (the tests) sees ReproLoader,
    # and a test's `class MyLoader(DataLoader)` subclasses ReproLoader.
    from reproloader import ReproLoader

    for target in filter(None, (t.strip() for t in targets.split(","))):
        module_name, _, attribute = target.partition(":")
        module = importlib.import_module(module_name)
        if not attribute or not hasattr(module, attribute):
            raise AttributeError(
                f"{ENV}: {target!r} names no attribute of {module_name}; "
                "expected 'module:attribute', e.g. 'torch.utils.data:DataLoader'"
            )
        setattr(module, attribute, ReproLoader)


_chain()
if os.environ.get(ENV):
    _substitute(os.environ[ENV])
