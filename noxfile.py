"""Development sessions: ``nox -s tests lint typecheck docs bench build upstream``."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
# Installed before anything else: a bare `torch` requirement resolved first can pull
# a multi-GB CUDA build; with this CPU build present, the project's range is met.
TORCH = "torch==2.13.0"


def install(session: nox.Session, *groups: str, project: bool = True) -> None:
    session.install(TORCH)
    requirements = nox.project.dependency_groups(PYPROJECT, *groups) if groups else ()
    if project:
        session.install("-e", ".", *requirements)
    elif requirements:
        session.install(*requirements)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (unit, integration, golden; the slow ones too)."""
    install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session
def integration(session: nox.Session) -> None:
    """Lightning and accelerate: tests/frameworks and their examples."""
    install(session, "integration")
    session.run("pytest", "tests/frameworks", *session.posargs)


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
    """Throughput and resume benchmarks against DataLoader, measured in one run."""
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
