"""``mmlab test``: install what the tests need, then run the whole test suite.

This is the README's test command and exactly what CI runs (``.ci/run``). The suite
includes real kernel builds and real QEMU boots (markers ``kernel`` and ``boot``); the
first run on a machine builds the default kernel cold (~8.5 min on 2 cores), later runs
hit the caches in ~/.cache/mmlab.
"""

from __future__ import annotations

import subprocess
import sys

import click

from orchestrator import hosttools, progress
from orchestrator.paths import REPO_ROOT


@click.command("test", context_settings={"ignore_unknown_options": True})
@click.option("--no-install", is_flag=True, help="Do not install missing host packages.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def test_command(no_install: bool, pytest_args: tuple[str, ...]) -> None:
    """Run mmlab's tests (pytest); extra arguments go to pytest, e.g. -m 'not boot'."""
    if not no_install and (hosttools.missing() or _fetches_missing()):
        progress.info("installing missing host tools (mmlab doctor --install)")
        hosttools.apt_install(sorted({t.package for t in hosttools.missing()}))
        for label, target, _stages in hosttools.FETCHES:
            with progress.phase("doctor", f"fetch {label}"):
                hosttools._fetch_fn(target)(install=True)
    argv = [sys.executable, "-m", "pytest", *pytest_args]
    progress.info("running " + " ".join(argv[2:]))
    rc = subprocess.run(argv, cwd=REPO_ROOT).returncode
    if rc == 5:  # pytest: no tests collected; a test command that tests nothing fails
        print("mmlab: error: pytest collected no tests", file=sys.stderr)
        rc = 1
    sys.exit(rc)


def _fetches_missing() -> bool:
    return any(path is None for _label, _stages, path, _hint in hosttools.fetch_status())
