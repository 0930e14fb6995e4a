"""The content-addressed kernel artifact cache.

An artifact is a directory ``<cache>/artifacts/<key>/`` published atomically (written in a
staging directory, renamed when complete), so a half-built kernel is never visible:

    Image            the arm64 boot image
    vmlinux          the ELF (symbols, build-id, barrier census)
    System.map
    config           the final merged .config
    modules/         INSTALL_MOD_PATH tree: modules/lib/modules/<release>/... with modules.dep
    build.log        the full make output
    metadata.json    inputs and their hashes, toolchain, phases and durations, ccache
                     statistics, the exact commands (a reproducer), file hashes

The key is a sha256 over the build inputs (tree content id, series content, the config
fragments' contents, base config target, toolchain version, make variables and the recipe
version). See :mod:`orchestrator.build`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError
from orchestrator.paths import cache_dir

METADATA = "metadata.json"


@dataclass(frozen=True)
class Artifact:
    path: Path
    metadata: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        path = Path(path)
        meta = path / METADATA
        if not meta.is_file():
            raise InputError(
                f"{path} is not a kernel artifact (no {METADATA})",
                hint="pass a directory printed by `mmlab build`, or an artifact key",
            )
        return cls(path=path.resolve(), metadata=json.loads(meta.read_text()))

    @property
    def key(self) -> str:
        return self.metadata["key"]

    @property
    def name(self) -> str:
        """A short human label, e.g. 'baseline' or 'lazy-mmu-6.12'."""
        return self.metadata.get("name") or self.key[:12]

    @property
    def image(self) -> Path:
        return self.path / "Image"

    @property
    def vmlinux(self) -> Path:
        return self.path / "vmlinux"

    @property
    def config_path(self) -> Path:
        return self.path / "config"

    @property
    def release(self) -> str:
        return self.metadata["release"]

    @property
    def build_id(self) -> str | None:
        return self.metadata.get("build_id")

    @property
    def modules_root(self) -> Path:
        """INSTALL_MOD_PATH root: contains lib/modules/<release>/."""
        return self.path / "modules"

    @property
    def modules_dir(self) -> Path:
        return self.modules_root / "lib" / "modules" / self.release

    def module(self, name: str) -> Path | None:
        """Path of a module by name (e.g. 'test_vmalloc'), or None when not built."""
        for ko in self.modules_dir.rglob(f"{name}.ko*"):
            return ko
        return None

    def config(self) -> dict[str, str]:
        """The final .config as {CONFIG_X: value}; unset options are absent."""
        out: dict[str, str] = {}
        for line in self.config_path.read_text().splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                out[k] = v
        return out


def artifact_dir(key: str) -> Path:
    return cache_dir("artifacts") / key


def find(key_or_path: str) -> Artifact:
    """An artifact by directory path, full key or unique key prefix."""
    p = Path(key_or_path)
    if p.is_dir():
        return Artifact.load(p)
    root = cache_dir("artifacts")
    matches = [d for d in root.iterdir() if d.is_dir() and d.name.startswith(key_or_path)]
    if len(matches) == 1:
        return Artifact.load(matches[0])
    if not matches:
        raise InputError(
            f"no kernel artifact {key_or_path!r} in {root}",
            hint="run `mmlab build` first, or pass the artifact directory",
        )
    raise InputError(f"artifact key prefix {key_or_path!r} is ambiguous ({len(matches)} match)",
                     hint="give more characters of the key")


def list_artifacts() -> list[Artifact]:
    root = cache_dir("artifacts")
    out = []
    for d in sorted(root.iterdir()):
        if (d / METADATA).is_file():
            out.append(Artifact.load(d))
    return out
