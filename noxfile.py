"""nox sessions for CI and the lab.

    nox -s tests     the test suite (same as `./mmlab test`, in a nox venv)
    nox -s lint      ruff
    nox -s e2e       a fresh default build + `mmlab compare` on the built-in default
    nox -s bench     benchmarks (build cold/warm/cache-hit, boot, simulator speed, ...)
    nox -s long      the long verification tests (marker `long`)
    nox -s report    re-render HTML/JUnit from a saved results JSON: nox -s report -- RESULTS.json
    nox -s nightly   the lab plan across the boards of an inventory: nox -s nightly -- lab.toml
    nox -s faults    the fault matrix (every test marked `fault`), its table in
                     docs/reliability-table.md
"""

from __future__ import annotations

import os

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]


def _install(session: nox.Session) -> None:
    session.install("-e", ".[test]")


@nox.session
def tests(session: nox.Session) -> None:
    _install(session)
    session.run("mmlab", "test", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "orchestrator", "tests", "benchmarks", "noxfile.py")


@nox.session
def e2e(session: nox.Session) -> None:
    """The README's first command from scratch: build the default kernels and compare."""
    _install(session)
    session.run("mmlab", "doctor", "--install")
    session.run("mmlab", "compare", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Speed and memory targets (see benchmarks/): results in .benchmarks/."""
    _install(session)
    session.run("mmlab", "doctor", "--install")
    session.run("pytest", "benchmarks", "-m", "", "--benchmark-autosave",
                "--benchmark-storage=.benchmarks", *session.posargs,
                env={"MMLAB_PROGRESS": "plain"})


@nox.session
def long(session: nox.Session) -> None:
    """Verification runs too long for every CI run (marker `long`): the simulator checker
    over 10,000 sequences per variant, the comparison report on a lab board."""
    _install(session)
    session.run("mmlab", "doctor", "--install")
    session.run("pytest", "tests", "-m", "long", *session.posargs,
                env={"MMLAB_PROGRESS": "plain"})


@nox.session
def report(session: nox.Session) -> None:
    _install(session)
    if not session.posargs:
        session.error("usage: nox -s report -- RESULTS.json [-o report.html]")
    session.run("mmlab", "report", *session.posargs)


@nox.session
def nightly(session: nox.Session) -> None:
    """Run the lab plan on every board of an inventory and render per-board reports."""
    _install(session)
    inventory = session.posargs[0] if session.posargs else os.environ.get("MMLAB_LAB", "lab.toml")
    session.run("mmlab", "lab", "run", "--inventory", inventory, *session.posargs[1:])


@nox.session
def faults(session: nox.Session) -> None:
    """The fault-injection matrix: every test marked ``fault`` (real faults on real kernels,
    boards and disks; the few fakes are named in the table), long ones included; the table
    of fault, what mmlab did, exit status and results lost goes to
    docs/reliability-table.md (and .json)."""
    _install(session)
    session.run("mmlab", "doctor", "--install")
    table = os.path.join(os.path.dirname(__file__), "docs", "reliability-table.md")
    session.run("pytest", "tests", "-m", "fault", "-p", "no:cacheprovider", *session.posargs,
                env={"MMLAB_PROGRESS": "plain", "MMLAB_FAULT_TABLE": table})
    with open(table) as fh:
        session.log("\n" + fh.read())
