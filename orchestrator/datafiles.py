"""Named data files: ``NAME`` -> ``<dir>/NAME.toml``, or a path to a ``.toml`` file.

Plans, comparisons and QEMU profiles are all found and read this way, with the same
one-line errors: an unknown name lists the known ones; bad TOML names the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from orchestrator.errors import InputError


def names(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def find(kind: str, directory: Path, name_or_path: str) -> Path:
    p = Path(name_or_path)
    path = p if p.suffix == ".toml" and p.is_file() else directory / f"{name_or_path}.toml"
    if not path.is_file():
        raise InputError(f"unknown {kind} {name_or_path!r}",
                         hint=f"use one of {', '.join(names(directory))}, or a path to a "
                              f"{kind} .toml")
    return path


def load(kind: str, directory: Path, name_or_path: str) -> tuple[dict, Path]:
    """(parsed TOML, its path) of a named data file."""
    path = find(kind, directory, name_or_path)
    try:
        return tomllib.loads(path.read_text()), path
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}", hint=f"fix the {kind} file") from exc
