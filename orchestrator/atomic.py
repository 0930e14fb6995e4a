"""Atomic writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically; ``mode`` (e.g. 0o600 for a private key) is set
    before a byte is written, so a secret is never readable by others, not even briefly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes 0600; give the usual mode
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def discard_dir(path: Path) -> None:
    """Remove a large directory without waiting: rename it aside, delete in the background.

    Work trees are hard-link farms of ~85k files: deleting them takes 10-40 s, which the
    user should not wait for. A later call also sweeps trash left by an interrupted run.
    """
    import subprocess

    if not path.exists():
        return
    trash = path.parent / f".trash-{path.name}-{os.getpid()}"
    os.rename(path, trash)
    subprocess.Popen(["rm", "-rf", "--", str(trash)], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


def sweep_trash(parent: Path) -> None:
    import subprocess

    for old in parent.glob(".trash-*"):
        subprocess.Popen(["rm", "-rf", "--", str(old)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)


def sweep_stale_staging(parent: Path) -> list[Path]:
    """Remove ``.staging-*-<pid>`` directories whose process is gone (a SIGKILLed build
    or extraction leaves its staging directory behind); returns what was swept."""
    import shutil

    swept = []
    for d in parent.glob(".staging-*"):
        pid_text = d.name.rsplit("-", 1)[-1]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # still running (or not ours to signal): leave it
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(d, ignore_errors=True)
        swept.append(d)
    return swept


def publish_dir(staging: Path, final: Path) -> Path:
    """Move a fully written staging directory to its final name in one rename.

    If another process published the same content-addressed directory first, keep theirs
    and drop ours (both are complete, by construction).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, final)
    except OSError:
        if final.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            raise
    return final
