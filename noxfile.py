"""Development sessions: ``nox -s tests lint typecheck docs bench build``."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
# Installed before anything else: a bare `torch` requirement resolved first can pull
# a multi-GB CUDA build; with this CPU build present, the project's range is met.
TORCH = "2.13.0"
# The other releases CI runs the suite on (2.14.1: a CUDA build that runs on the CPU).
# docs/install.md says which releases were tested and how.
OTHER_TORCH = ["2.14.1"]


def install(session: nox.Session, *groups: str, project: bool = True, torch: str = TORCH) -> None:
    session.install(f"torch=={torch}")
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


@nox.session(name="tests-torch")
@nox.parametrize("torch", OTHER_TORCH)
def tests_torch(session: nox.Session, torch: str) -> None:
    """The test suite on another supported torch release: ``nox -s tests-torch``."""
    install(session, "test", torch=torch)
    session.run("pytest", *session.posargs)


@nox.session
def integration(session: nox.Session) -> None:
    """tests/frameworks (Lightning, accelerate, the data pipeline packages) and the bridge's contracts."""
    install(session, "integration")
    session.run("pytest", "tests/frameworks", "tests/unit/test_bridge.py", *session.posargs)


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
def build(session: nox.Session) -> None:
    """Build wheel and sdist, install the wheel in a fresh venv, smoke-test it."""
    session.install("build")
    session.run("python", "-c", "import shutil; shutil.rmtree('dist', ignore_errors=True)")
    session.run("python", "-m", "build")
    session.run("bash", ".ci/smoke-wheel", external=True)
