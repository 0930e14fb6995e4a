"""Host tools: what each stage needs, what is missing, and installing it.

The table is data (``host_tools.toml``): tool, how to check for it, the Debian package that
provides it, and the stages that need it. Besides packages from the host's architecture,
mmlab fetches a few things itself (arm64 packages such as busybox-static, the QEMU plugin
header from Debian's qemu source package); those are "fetches", also run by
``mmlab doctor --install``.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click

from orchestrator import progress
from orchestrator.errors import MissingToolError, MmlabError

TABLE = Path(__file__).with_name("host_tools.toml")

# Things mmlab fetches itself (not apt packages of the host architecture):
# (label, "module:function", stages). The function takes install: bool and returns a Path;
# with install=False it raises MissingToolError when the thing is absent.
FETCHES: list[tuple[str, str, list[str]]] = [
    ("busybox-static for arm64 (Debian package, private apt state)",
     "orchestrator.kernel.debpkg:ensure_busybox", ["image"]),
    ("QEMU plugin header (qemu-plugin.h, from Debian's qemu source package)",
     "orchestrator.barriers.plugin:ensure_plugin_header", ["plugin"]),
]


@dataclass(frozen=True)
class Tool:
    name: str
    check: str
    package: str
    stages: tuple[str, ...]

    def present(self) -> bool:
        kind, _, what = self.check.partition(":")
        if kind == "cmd":
            return shutil.which(what) is not None
        if kind == "file":
            return Path(what).exists()
        raise ValueError(f"bad check {self.check!r} in {TABLE}")


def tools() -> list[Tool]:
    data = tomllib.loads(TABLE.read_text())
    return [Tool(t["name"], t["check"], t["package"], tuple(t["stages"])) for t in data["tool"]]


def missing(stages: set[str] | None = None) -> list[Tool]:
    return [t for t in tools() if (stages is None or stages & set(t.stages)) and not t.present()]


def require_stage(stage: str) -> None:
    """Raise one clear error if any tool the stage needs is missing."""
    gone = missing({stage})
    if gone:
        pkgs = " ".join(sorted({t.package for t in gone}))
        names = ", ".join(t.name for t in gone)
        raise MissingToolError(
            f"{stage} needs {names}, which {'is' if len(gone) == 1 else 'are'} missing",
            hint=f"run `mmlab doctor --install` (or: apt-get install {pkgs})",
        )


def require_command(cmd: str, package: str) -> str:
    path = shutil.which(cmd)
    if path is None:
        raise MissingToolError(
            f"`{cmd}` is not installed",
            hint=f"run `mmlab doctor --install` (or: apt-get install {package})",
        )
    return path


def _root_prefix() -> list[str]:
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        return ["sudo", "-n"]
    raise MmlabError(
        "installing host packages needs root and there is no sudo",
        hint="run `mmlab doctor --install` as root",
    )


def apt_install(packages: list[str]) -> None:
    if not packages:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    prefix = _root_prefix()
    with progress.phase("doctor", f"apt-get install {' '.join(packages)}") as ph:
        for argv in (
            prefix + ["apt-get", "update", "-q"],
            prefix + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        ):
            ph.update(argv[len(prefix)] + " " + argv[len(prefix) + 1])
            proc = subprocess.run(argv, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
                raise MmlabError(
                    f"`{' '.join(argv)}` failed: {tail[0]}",
                    hint="check the apt sources of this machine, then run it again",
                )


def _fetch_fn(target: str):
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def fetch_status() -> list[tuple[str, list[str], str | None, str | None]]:
    """[(label, stages, path-or-None, hint-or-None)] for the things mmlab fetches itself."""
    out = []
    for label, target, stages in FETCHES:
        try:
            path = _fetch_fn(target)(install=False)
            out.append((label, stages, str(path), None))
        except MmlabError as exc:
            out.append((label, stages, None, exc.hint or str(exc)))
    return out


def ensure(stages: set[str], *, install: bool, why: str) -> None:
    """Check, before long work starts, everything ``stages`` need.

    What mmlab fetches itself into its cache (arm64 busybox, the QEMU plugin header: no root
    needed) is fetched now. Missing apt packages are installed with ``install`` (apt-get, as
    root or through ``sudo -n``), each named on the progress line; without it, one error
    names them all. Nothing is left to fail half an hour later, after the kernel builds.
    """
    gone = missing(stages)
    if gone and not install:
        pkgs = " ".join(sorted({t.package for t in gone}))
        names = ", ".join(t.name for t in gone)
        raise MissingToolError(
            f"{why} needs {names}, which {'is' if len(gone) == 1 else 'are'} missing",
            hint=f"run `mmlab doctor --install` (or: apt-get install {pkgs})")
    if gone:
        progress.info(f"{why}: installing missing host tools first: "
                      f"{', '.join(t.name for t in gone)}")
        apt_install(sorted({t.package for t in gone}))
        still = missing(stages)
        if still:
            raise MissingToolError(
                f"{', '.join(t.name for t in still)} still missing after apt-get install",
                hint="check the apt sources of this machine (packages: " + " ".join(
                    sorted({t.package for t in still})) + ")")
    for label, target, fstages in FETCHES:
        if not stages & set(fstages):
            continue
        try:
            _fetch_fn(target)(install=False)
        except MissingToolError:
            with progress.phase("doctor", f"fetch {label}"):
                _fetch_fn(target)(install=True)


@click.command("doctor")
@click.option("--install", is_flag=True, help="Install missing packages (apt-get) and fetch "
              "what mmlab fetches itself (arm64 packages, the QEMU plugin header).")
@click.option("--stage", "stages", multiple=True,
              help="Only check the tools of these stages (build, image, boot, plugin, boards, "
              "report). Default: all.")
def doctor_command(install: bool, stages: tuple[str, ...]) -> None:
    """List the host tools each stage needs and which are missing."""
    wanted = set(stages) or None
    if install:
        gone = missing(wanted)
        apt_install(sorted({t.package for t in gone}))
        for label, target, fstages in FETCHES:
            if wanted is None or wanted & set(fstages):
                with progress.phase("doctor", f"fetch {label}"):
                    _fetch_fn(target)(install=True)
    problems = 0
    for t in tools():
        if wanted and not wanted & set(t.stages):
            continue
        ok = t.present()
        problems += not ok
        mark = "ok     " if ok else "MISSING"
        extra = "" if ok else f"  -> apt-get install {t.package}"
        click.echo(f"{mark} {t.name:<58} [{','.join(t.stages)}]{extra}")
    for label, fstages, path, hint in fetch_status():
        if wanted and not wanted & set(fstages):
            continue
        problems += path is None
        mark = "ok     " if path else "MISSING"
        extra = f"  {path}" if path else f"  -> {hint}"
        click.echo(f"{mark} {label:<58} [{','.join(fstages)}]{extra}")
    if problems:
        click.echo(f"{problems} missing; `mmlab doctor --install` installs them", err=True)
        sys.exit(1)
    click.echo("all host tools present")
