"""Where mmlab keeps things.

Caches live under the user's cache directory so repeat runs are warm:
``$MMLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/mmlab``, else ``~/.cache/mmlab``.
Data shipped with the project (config fragments, guest tests, image recipes, plans,
QEMU profiles, the demo series) is read from the repository checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
KERNEL_CONFIGS = REPO_ROOT / "kernel_configs"
GUEST_TESTS = REPO_ROOT / "guest_tests"
IMAGES = REPO_ROOT / "images"
PLANS = REPO_ROOT / "plans"
QEMU_PROFILES = REPO_ROOT / "qemu_profiles"
SERIES = REPO_ROOT / "series"


def cache_root() -> Path:
    env = os.environ.get("MMLAB_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "mmlab").resolve()


def cache_dir(kind: str) -> Path:
    """A named cache sub-directory, created on first use.

    Kinds in use: ``ccache``, ``artifacts`` (kernel builds), ``trees`` (pristine
    extracted sources), ``work`` (per-build work trees), ``downloads`` (Debian packages,
    source packages), ``images`` (initramfs), ``plugins`` (QEMU plugins), ``sim``
    (the cost model's checks against published figures), ``tmp``.
    """
    path = cache_root() / kind
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from orchestrator.errors import InputError

        raise InputError(f"cannot use the cache directory {cache_root()}: {exc.strerror}",
                         hint="set MMLAB_CACHE to a writable directory (or unset it: "
                              "~/.cache/mmlab)") from None
    return path
