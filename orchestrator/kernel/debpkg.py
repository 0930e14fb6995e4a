"""Debian arm64 packages, fetched and unpacked without touching the host's dpkg state.

Guest images and board userlands are assembled from Debian's own arm64 builds (busybox-
static, dropbear, kexec-tools...), so nothing is cross-compiled by hand. The host keeps its
architectures: apt-get runs with ``APT::Architecture=arm64``, its own package lists and
archive cache under ``cache_dir("downloads")/apt`` and ``Dir::State::status=/dev/null``, so
it neither needs ``dpkg --add-architecture`` nor sees the host's installed packages. The
sources are the host's (``/etc/apt/sources.list*``), so a mirror or snapshot pin set up for
the host applies here too.

Downloads are cached by package name: once ``busybox-static_*_arm64.deb`` is in the cache it
is reused without asking the network (delete the file to refresh). Each .deb is unpacked
once with ``dpkg-deb -x`` into ``cache_dir("downloads")/unpacked/<deb name>/`` (published
atomically).

Usage::

    deb = fetch("busybox-static")          # Path of the .deb
    root = unpack("busybox-static")        # directory with the package's files
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from orchestrator import progress
from orchestrator.atomic import publish_dir
from orchestrator.errors import InputError, MissingToolError
from orchestrator.paths import cache_dir

ARCH = "arm64"


def _apt_dirs() -> tuple[Path, Path]:
    base = cache_dir("downloads") / "apt"
    lists = base / "lists"
    archives = base / "cache"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (archives / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    return lists, archives


def apt_options() -> list[str]:
    """apt-get options for a private arm64 view of the host's Debian sources."""
    lists, archives = _apt_dirs()
    return [
        "-o", f"APT::Architecture={ARCH}",
        "-o", f"APT::Architectures={ARCH}",
        "-o", f"Dir::State::Lists={lists}",
        "-o", f"Dir::Cache={archives}",
        "-o", "Dir::State::status=/dev/null",
        # The unprivileged _apt user cannot write into root's home cache.
        "-o", "APT::Sandbox::User=root",
        "-o", "Debug::NoLocking=1",
        "-qq",
    ]


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingToolError(f"{tool} not found", hint=f"apt-get install {package}")
    return path


def _apt(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    apt = _require("apt-get", "apt")
    return subprocess.run([apt, *apt_options(), *args], cwd=cwd, text=True,
                          capture_output=True, check=False)


def update_lists() -> None:
    """Fetch the arm64 package lists of the host's sources into the private lists dir."""
    with progress.phase("debpkg", "apt-get update (arm64 lists)"):
        res = _apt(["update"])
    if res.returncode != 0:
        raise InputError(
            f"apt-get update for arm64 failed: {_first_error(res.stderr)}",
            hint="check network access to the Debian mirror in /etc/apt/sources.list*",
        )


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if line.startswith(("E:", "W:")):
            return line
    return text.strip().splitlines()[-1] if text.strip() else "no output"


def _lists_present() -> bool:
    lists, _ = _apt_dirs()
    return any(p.name.endswith("_Packages") or "_Packages" in p.name
               for p in lists.iterdir() if p.is_file())


def cached_deb(package: str) -> Path | None:
    """The cached .deb of ``package``, if one was downloaded before."""
    found = sorted(cache_dir("downloads").glob(f"{package}_*_{ARCH}.deb"))
    found += sorted(cache_dir("downloads").glob(f"{package}_*_all.deb"))
    return found[-1] if found else None


def fetch(package: str) -> Path:
    """Path of the arm64 .deb of ``package`` (downloaded once, then from the cache)."""
    hit = cached_deb(package)
    if hit is not None:
        return hit
    dest = cache_dir("downloads")
    if not _lists_present():
        update_lists()
    with tempfile.TemporaryDirectory(dir=cache_dir("tmp")) as tmp:
        with progress.phase("debpkg", f"apt-get download {package}:{ARCH}"):
            res = _apt(["download", package], cwd=Path(tmp))
            if res.returncode != 0 and "Unable to locate" not in res.stderr:
                # Stale lists (a mirror moved on): refresh once and retry.
                update_lists()
                res = _apt(["download", package], cwd=Path(tmp))
        if res.returncode != 0:
            raise InputError(
                f"cannot download Debian {ARCH} package {package}: {_first_error(res.stderr)}",
                hint="check the package name (apt-cache policy), and network access to Debian",
            )
        debs = list(Path(tmp).glob("*.deb"))
        if not debs:
            raise InputError(f"apt-get download {package} produced no .deb",
                             hint="check the package name")
        for deb in debs:
            final = dest / deb.name
            shutil.move(str(deb), final)  # same filesystem: an atomic rename
    hit = cached_deb(package)
    assert hit is not None
    return hit


def unpack(package: str) -> Path:
    """Directory holding the files of ``package`` (dpkg-deb -x, cached per .deb)."""
    deb = fetch(package)
    dpkg_deb = _require("dpkg-deb", "dpkg")
    final = cache_dir("downloads") / "unpacked" / deb.stem
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{deb.stem}."))
    res = subprocess.run([dpkg_deb, "-x", str(deb), str(staging)], capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(f"dpkg-deb -x {deb.name} failed: {res.stderr.strip()[:200]}",
                         hint=f"delete {deb} to download it again")
    return publish_dir(staging, final)


def version(package: str) -> str:
    """The Debian version of the cached .deb (from its file name)."""
    deb = fetch(package)
    return deb.name.split("_")[1].replace("%3a", ":")


def ensure_busybox(install: bool) -> Path:
    """busybox-static for arm64, for `mmlab doctor` (fetched on demand by the image builder)."""
    from orchestrator.errors import MissingToolError

    deb = cached_deb("busybox-static")
    if deb is not None:
        return deb
    if not install:
        raise MissingToolError("busybox-static (arm64) has not been fetched yet",
                               hint="run `mmlab doctor --install` (fetches it with a private "
                                    "arm64 apt state; the host's architectures are unchanged)")
    return fetch("busybox-static")
