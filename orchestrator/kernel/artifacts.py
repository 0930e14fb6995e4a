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
version). See :mod:`orchestrator.kernel.build`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError
from orchestrator.paths import cache_dir

METADATA = "metadata.json"
VERIFY_ENV = "MMLAB_VERIFY"  # "1": check every file's sha256 on use (CI sets CI=true: same)


class CorruptArtifact(InputError):
    """An artifact whose files do not match its metadata (truncated, edited, half-deleted)."""


def full_verify_default() -> bool:
    """sha256 checks on every use: in CI, or when MMLAB_VERIFY=1; sizes are always checked."""
    return os.environ.get(VERIFY_ENV, "") == "1" or os.environ.get("CI", "") == "true"


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
        try:
            data = json.loads(meta.read_text())
            if not isinstance(data, dict) or "key" not in data:
                raise ValueError("no key")
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptArtifact(
                f"{meta} is unreadable ({type(exc).__name__}: truncated or edited?)",
                hint=f"delete {path} (or `mmlab build --rebuild` with the same inputs)") from exc
        return cls(path=path.resolve(), metadata=data)

    def verify(self, full: bool | None = None) -> None:
        """Raise CorruptArtifact unless every recorded file is there with its recorded size
        (and, with ``full``, its recorded sha256). Artifacts from before sizes were recorded
        are checked for presence (and sha256 when ``full``)."""
        full = full_verify_default() if full is None else full
        files = self.metadata.get("files") or {}
        sizes = self.metadata.get("sizes") or {}
        backfill = bool(files) and not sizes  # built before sizes were recorded
        full = full or backfill
        hint = f"delete {self.path} and build again (`mmlab build --rebuild` with the same inputs)"
        for rel, digest in files.items():
            p = self.path / rel
            try:
                size = p.stat().st_size
            except OSError:
                raise CorruptArtifact(f"artifact {self.key[:12]}: {rel} is missing",
                                      hint=hint) from None
            if rel in sizes and size != sizes[rel]:
                raise CorruptArtifact(f"artifact {self.key[:12]}: {rel} is {size} bytes, the "
                                      f"build wrote {sizes[rel]} (truncated or replaced)",
                                      hint=hint)
            if full:
                h = hashlib.sha256()
                with open(p, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
                if h.hexdigest() != digest:
                    raise CorruptArtifact(f"artifact {self.key[:12]}: {rel} does not match its "
                                          "recorded sha256", hint=hint)
        if backfill:  # every file checked by sha256: record the sizes for the cheap check
            from orchestrator.atomic import atomic_write_json

            self.metadata["sizes"] = {rel: (self.path / rel).stat().st_size for rel in files}
            try:
                atomic_write_json(self.path / METADATA, self.metadata)
            except OSError:
                pass  # a read-only cache: the full check runs again next time

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

    def config(self, keep_unset: bool = False) -> dict[str, str]:
        """The final .config as {CONFIG_X: value}; unset options are absent, or "n" with
        ``keep_unset`` (then an absent option is one the tree does not have)."""
        from orchestrator.kernel.kconfig import parse_config_text

        return parse_config_text(self.config_path.read_text(), keep_unset=keep_unset)


def artifact_dir(key: str) -> Path:
    return cache_dir("artifacts") / key


def find(key_or_path: str) -> Artifact:
    """An artifact by directory path, full key or unique key prefix."""
    p = Path(key_or_path)
    if p.is_dir():
        art = Artifact.load(p)
        art.verify()
        return art
    root = cache_dir("artifacts")
    matches = [d for d in root.iterdir() if d.is_dir() and d.name.startswith(key_or_path)]
    if len(matches) == 1:
        art = Artifact.load(matches[0])
        art.verify()
        return art
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
