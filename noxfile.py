"""Development sessions: ``nox -s tests lint typecheck docs bench build mutants upstream``."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
# Installed before anything else: a bare `torch` requirement resolved first can pull
# a multi-GB CUDA build; with this CPU build present, the project's range is met.
TORCH = "2.13.0"
# The other releases tested (2.14.1: a CUDA build that runs on the CPU). CI runs the
# integration session on the first: the frameworks and RELEASE_TESTS. docs/install.md
# says which releases were tested and how; docs/testing.md what CI runs where.
OTHER_TORCH = ["2.14.1"]
# What can differ from one torch release to the next: the bridge's contracts (in
# tests/unit), torch's RNGs (golden streams), the state and its stored versions,
# resume, workers and their start methods. The rest of the suite exercises reproloader's
# own code through the same paths and runs on TORCH.
RELEASE_TESTS = (
    "tests/unit",
    "tests/golden",
    "tests/compat",
    "tests/integration/test_resume.py",
    "tests/integration/test_resume_stateful.py",
    "tests/integration/test_workers.py",
    "tests/integration/test_kill_resume.py",
    "tests/integration/test_dataloader_failures.py",
)
# pytest-xdist: one pytest process per core. --dist loadgroup keeps the tests of a
# module that shares an expensive baseline (pytest.mark.xdist_group) on one process,
# so the baseline runs once; every other test goes wherever a process is free.
PARALLEL = ("-n", "auto", "--dist", "loadgroup")


def install(session: nox.Session, *groups: str, project: bool = True, torch: str = TORCH) -> None:
    session.install(f"torch=={torch}")
    requirements = nox.project.dependency_groups(PYPROJECT, *groups) if groups else ()
    if project:
        session.install("-e", ".", *requirements)
    elif requirements:
        session.install(*requirements)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (unit, integration, golden; the slow ones too), on all cores.

    ``nox -s tests -- -n 0 tests/unit`` runs a folder in one process (``-n 0``: pdb, -x).
    """
    install(session, "test")
    session.run("pytest", *PARALLEL, *session.posargs)


@nox.session(name="tests-torch")
@nox.parametrize("torch", OTHER_TORCH)
def tests_torch(session: nox.Session, torch: str) -> None:
    """The whole suite on another supported torch release: ``nox -s tests-torch``.

    Not in CI, which runs RELEASE_TESTS on that release in the integration session;
    run it before admitting a new release (docs/install.md).
    """
    install(session, "test", torch=torch)
    session.run("pytest", *PARALLEL, *session.posargs)


@nox.session
def integration(session: nox.Session) -> None:
    """On the other torch release: tests/frameworks, then RELEASE_TESTS.

    The frameworks (Lightning, accelerate, transformers, the data pipeline packages)
    need torchvision, whose wheels load only beside the torch they were built for:
    OTHER_TORCH[0]. ``nox -s integration -- ARGS`` passes ARGS to the frameworks' run.
    """
    install(session, "integration", torch=OTHER_TORCH[0])
    session.run("pytest", *PARALLEL, "tests/frameworks", *session.posargs)
    # Apart: the frameworks' leftovers (unraisable warnings at exit) must not land on
    # the bridge's contracts, and the frameworks' imports must not change what torch
    # itself does.
    session.run("pytest", *PARALLEL, *RELEASE_TESTS)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint and formatting."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and the typing tests."""
    install(session, "typecheck")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the MkDocs site in strict mode (broken links fail)."""
    install(session, "docs")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Throughput, resume and scale benchmarks against DataLoader, measured in one run."""
    install(session, "bench")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def upstream(session: nox.Session) -> None:
    """PyTorch's and torchdata's own loader tests on ReproLoader: ``-- PATH [--baseline]``.

    PATH is a copy of pytorch/pytorch and/or pytorch/data (or a folder holding both);
    they are not part of this repository. See docs/dropin.md.
    """
    if not session.posargs:
        session.error("give the folder of the upstream checkouts: nox -s upstream -- PATH")
    install(session, "upstream")
    session.run("python", "upstream/run.py", *session.posargs)


@nox.session
def build(session: nox.Session) -> None:
    """Build wheel and sdist, install the wheel in a fresh venv, smoke-test it."""
    session.install("build")
    session.run("python", "-c", "import shutil; shutil.rmtree('dist', ignore_errors=True)")
    session.run("python", "-m", "build")
    session.run("bash", ".ci/smoke-wheel", external=True)


# The modules whose mistakes change users' numbers silently, by short name.
MUTATION_TARGETS = {
    "seeding": "reproloader/seeding.py",
    "sampler": "reproloader/sampler.py",
    "rngs": "reproloader/_runtime/rngs.py",
    "isolation": "reproloader/_runtime/isolation.py",
    "cursor": "reproloader/_runtime/cursor.py",
    "state": "reproloader/state.py",
}
# Fast tests only (tests/compat: the stored states every check of state.py meets); mutmut
# runs, for each mutant, those of them that reach its function.
MUTATION_TESTS = ("tests/unit", "tests/golden", "tests/compat")


@nox.session
def mutants(session: nox.Session) -> None:
    """Mutation testing (mutmut) of the core; not in CI: minutes per module.

    ``nox -s mutants`` mutates every module of MUTATION_TARGETS; ``nox -s mutants --
    seeding rngs`` (short names or paths) only those. It runs on a copy of the working
    tree (mutmut writes a ``mutants/`` folder), prints each survivor and the score per
    module: killed / mutants. docs/testing.md lists the survivors judged equivalent.
    """
    install(session, "mutants")
    names = session.posargs or list(MUTATION_TARGETS)
    paths = [MUTATION_TARGETS.get(name, name) for name in names]
    for path in paths:
        if not Path(path).is_file():
            session.error(f"no module {path!r}; name one of {sorted(MUTATION_TARGETS)} or a path")
    copy = Path(session.create_tmp()) / "mutation"
    shutil.rmtree(copy, ignore_errors=True)
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        if Path(name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(name, copy / name)
    lines = "".join(f"\n    {line}" for line in paths)
    tests = "".join(f"\n    {line}" for line in MUTATION_TESTS)
    (copy / "setup.cfg").write_text(
        "[mutmut]\nsource_paths=reproloader\n"
        f"only_mutate={lines}\n"
        f"pytest_add_cli_args_test_selection={tests}\n"
        # The bridge's contracts count calls into torch's internals, which mutmut's
        # trampolines double; they test torch, not the mutated modules.
        "pytest_add_cli_args=\n    -p\n    no:cacheprovider\n    -x\n    -q\n"
        "    --ignore=tests/unit/test_bridge.py\n"
    )
    with session.chdir(copy):
        # The copy, not an installed reproloader, must be what the tests import.
        env = {"PYTHONPATH": str(copy / "mutants")}
        session.run("mutmut", "run", env=env)
        results = session.run("mutmut", "results", "--all", "true", env=env, silent=True)
    statuses: dict[str, Counter[str]] = {path: Counter() for path in paths}
    pattern = re.compile(r"^\s*((reproloader\.[\w.]+?)\.x\S*): (.+)$", re.MULTILINE)
    for name, module, status in pattern.findall(str(results)):
        path = module.replace(".", "/") + ".py"
        if path in statuses:
            statuses[path][status.strip()] += 1
        if status.strip() != "killed":
            session.log(f"{status.strip()}: {name}")
    for path, counts in statuses.items():
        total = sum(counts.values())
        killed = counts["killed"] + counts["timeout"]
        score = f"{100 * killed / total:.1f}%" if total else "no mutants"
        session.log(f"{path}: {score} ({killed} of {total} killed; {dict(counts)})")
    session.log(f"see a mutant: cd {copy} && mutmut show NAME")
