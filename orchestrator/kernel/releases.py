"""Series based on a mainline release (b4's ``base-commit:`` trailer) and the tree for them.

``series_base(spec)`` reads every ``base-commit:`` trailer in a series' files (a directory of
*.patch, an mbox, a saved post); ``tree_for_series(spec, tree)`` turns a known release into
the Debian tree of that release (``debian:X.Y``: the newest X.Y Debian ships, a stable
update of the release, said in the warning) when no tree is given, and warns when the given
tree is another release. Release ids are data (mainline_releases.toml).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from orchestrator import progress

DATA = Path(__file__).with_name("mainline_releases.toml")
_BASE = re.compile(r"^[> ]*base-commit:\s*([0-9a-f]{12,40})\b", re.M)


def releases() -> dict[str, str]:
    return tomllib.loads(DATA.read_text())["releases"]


def release_of(commit: str) -> str | None:
    """The release tag whose commit id starts with ``commit`` (12+ hex digits)."""
    for tag, cid in releases().items():
        if cid.startswith(commit.lower()):
            return tag
    return None


def series_base(spec: str) -> set[str]:
    """The base-commit ids a series' files name (empty when none, or not files)."""
    path = Path(spec).expanduser()
    files = sorted(path.glob("*")) if path.is_dir() else [path] if path.is_file() else []
    found: set[str] = set()
    for f in files:
        if f.is_file() and f.stat().st_size < 50_000_000:
            found |= set(_BASE.findall(f.read_text(errors="replace")))
    return found


def tree_for_series(spec: str | None, tree: str | None) -> tuple[str | None, list[str]]:
    """(the tree to use, warnings) for ``--series spec`` with ``--tree tree`` (or None)."""
    if not spec:
        return tree, []
    bases = series_base(spec)
    if not bases:
        return tree, []
    known = {b: release_of(b) for b in bases}
    notes: list[str] = []
    if len(bases) > 1:
        notes.append(f"the series names several base commits: {', '.join(sorted(bases))}")
    tags = sorted({t for t in known.values() if t})
    unknown = sorted(b for b, t in known.items() if t is None)
    if unknown and not tags:
        notes.append(f"the series is based on {unknown[0][:12]}, not a release mmlab knows "
                     f"(mainline_releases.toml); using {tree or 'the default tree'}")
        return tree, notes
    if len(tags) != 1:
        return tree, notes
    tag = tags[0]
    want = "debian:" + tag.lstrip("v")
    if tree is None:
        notes.append(f"the series is based on {tag} (base-commit); using {want}, the newest "
                     f"{tag.lstrip('v')}.y Debian ships")
        return want, notes
    m = re.fullmatch(r"debian:(\d+\.\d+)(?:\..*)?", tree)
    if not m or "v" + m.group(1) != tag:
        notes.append(f"the series is based on {tag} (base-commit), but the tree is {tree}: "
                     "its patches may not apply, or mean something else there")
    return tree, notes


def report(notes: list[str]) -> None:
    for n in notes:
        progress.info(f"warning: {n}")
