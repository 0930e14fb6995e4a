"""Results on disk, written as they arrive.

A run directory (``--out``, default ``./mmlab-results/<run-id>``) holds::

    run.json                         what ran: plan, kernels (artifact metadata), target,
                                     host, mmlab version and revision, the command line
    results/<kernel>/<entry>/r<N>.json   one result per (kernel, plan entry, repeat),
                                     written atomically the moment it is known
    logs/<kernel>/boot-r<N>.log      full console log of each boot
    logs/<kernel>/<entry>-r<N>.out   the entry's output

A killed run leaves every finished result readable; ``--resume`` skips the results that
are complete and valid and runs the rest: a placeholder (``not-run``: the boot ended before
the entry; ``boot-failed``) or a result file that does not parse is run again.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator import __version__
from orchestrator.atomic import atomic_write_json
from orchestrator.errors import InputError


def new_run_id(prefix: str = "run") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def host_info() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(),
            "python": sys.version.split()[0], "mmlab": __version__,
            "argv": sys.argv}


# Verdicts written as placeholders: the entry did not really run, so a resume runs it.
RETRY_VERDICTS = ("not-run", "boot-failed")
RESULT_KEYS = ("kernel", "entry", "repeat", "verdict")


def _read_result(path: Path) -> dict | None:
    """The result in ``path`` when it is whole (valid JSON with the keys every result has)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or any(k not in data for k in RESULT_KEYS):
        return None
    return data


@dataclass
class RunStore:
    root: Path

    @property
    def manifest_path(self) -> Path:
        return self.root / "run.json"

    def start(self, manifest: dict, resume: bool) -> None:
        if self.manifest_path.exists() and not resume:
            raise InputError(f"{self.root} already holds a run",
                             hint="pass --resume to continue it, or choose another --out")
        if resume and not self.manifest_path.exists():
            raise InputError(f"nothing to resume in {self.root} (no run.json)",
                             hint="run without --resume first")
        if resume:
            old = json.loads(self.manifest_path.read_text())
            if old.get("fingerprint") != manifest.get("fingerprint"):
                raise InputError(
                    f"{self.root} holds a different run (other kernels or plan)",
                    hint="resume with the same arguments, or choose another --out")
            manifest = old | {"resumed": old.get("resumed", []) + [time.time()]}
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.manifest_path, manifest)

    def result_path(self, kernel: str, entry: str, repeat: int) -> Path:
        return self.root / "results" / kernel / entry / f"r{repeat}.json"

    def log_path(self, kernel: str, name: str) -> Path:
        p = self.root / "logs" / kernel / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def has(self, kernel: str, entry: str, repeat: int) -> bool:
        """A complete, valid result that really ran (not a placeholder) is there."""
        data = _read_result(self.result_path(kernel, entry, repeat))
        return data is not None and data["verdict"] not in RETRY_VERDICTS

    def write(self, kernel: str, entry: str, repeat: int, result: dict) -> Path:
        path = self.result_path(kernel, entry, repeat)
        atomic_write_json(path, result)
        return path

    def load_all(self) -> list[dict]:
        """Every whole result; files that do not parse are listed in ``self.unreadable``
        (never dropped silently: callers say so, and ``--resume`` runs them again)."""
        out = []
        self.unreadable: list[Path] = []
        for p in sorted((self.root / "results").rglob("r*.json")):
            data = _read_result(p)
            if data is None:
                self.unreadable.append(p)
                continue
            out.append(data)
        return out

    def manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text())
