"""Patch series: load them from wherever people keep them, check them, apply them.

Sources (``load_series``): a directory of ``*.patch`` (name order, or the order of a quilt
``series`` file), a git range ``base..tip`` (``git format-patch --stdout``), an mbox (a
cover letter ``0/N``, replies and duplicates are skipped), one patch file or mail, or a
saved mailing-list post (see :mod:`orchestrator.kernel.series_formats` for the renderings).

Applying (``apply_series``) works on a work tree that is a hard-link farm of a pristine
tree (``cp -al``). Files are never written in place: every changed file is written as a
new file next to the old one and renamed over it, so the inode the pristine tree shares is
never touched (a chmod or an in-place write would change both trees). The whole series is
first applied in memory; the tree is written only when every hunk of every patch applies,
so a failure leaves the tree exactly as it was.

Hunks match like ``git apply``: every context and removed line must match exactly (no
fuzz), at the expected line or the nearest line that matches (an offset); a hunk that
starts at line 1 must match at the top, one without trailing context at the end.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import click

from orchestrator.errors import InputError, MissingToolError, SeriesApplyError
from orchestrator.kernel.series_formats import (
    FilePatch,
    Hunk,
    Parsed,
    Patch,
    is_mbox,
    looks_like_mail,
    parse_mail,
    parse_rendering,
    split_mbox,
)

__all__ = [
    "Patch",
    "FilePatch",
    "Hunk",
    "Series",
    "SeriesCheck",
    "PatchCheck",
    "load_series",
    "parse_series_text",
    "check_series",
    "apply_series",
    "series_command",
]


@dataclass(frozen=True)
class Series:
    """Patches in the order they apply."""

    name: str
    patches: tuple[Patch, ...]
    source: str = ""
    cover_subject: str | None = None
    skipped: tuple[str, ...] = ()  # "message 1: cover letter", ...

    @property
    def content_hash(self) -> str:
        """sha256 over the patches' diff hashes: the same for any rendering of the same diffs."""
        import hashlib

        text = "".join(p.content_hash + "\n" for p in self.patches)
        return hashlib.sha256(text.encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.patches)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "sha256": self.content_hash,
            "cover_subject": self.cover_subject,
            "skipped": list(self.skipped),
            "patches": [p.to_dict() for p in self.patches],
        }


# ------------------------------------------------------------------------------ loading

_RANGE = re.compile(r"^([^\s.][^\s]*?)\.\.(\.?)([^\s.][^\s]*)$")


def load_series(source: str | os.PathLike, *, repo: str | os.PathLike | None = None,
                name: str | None = None) -> Series:
    """A series from a directory, a patch file/mbox/saved post, or a git range in ``repo``."""
    text_source = os.fspath(source)
    path = Path(text_source).expanduser()
    if path.is_dir():
        return _load_dir(path, name)
    if path.is_file():
        parsed = _parse_file(path)
        return _series_from(parsed, name or _stem(path), str(path))
    m = _RANGE.match(text_source)
    if m and m.group(2):
        raise InputError(f"{text_source} is a symmetric range (three dots), not a series",
                         hint="use base..tip: the commits after base up to tip")
    if m and not path.exists():
        return _load_git_range(m.group(1), m.group(3), Path(repo or "."), text_source, name)
    raise InputError(
        f"series source not found: {text_source}",
        hint="give a directory of *.patch, an mbox, a patch file, a saved mailing-list post, "
        "or a git range base..tip (with --repo)",
    )


def _stem(path: Path) -> str:
    return path.name.split(".")[0] if not path.name.startswith(".") else path.name


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: corrupt gzip file ({exc})",
                             hint="download the mbox again") from exc
    nul = data.find(b"\0")
    if nul >= 0:
        raise InputError(f"{path} is not a text file (binary data at byte {nul})",
                         hint="give a patch, an mbox or a saved post as text")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\r\n", "\n")


def parse_series_text(text: str, origin: str) -> list[Parsed]:
    """Parse one file's text: an mbox, a single mail, or a rendering/plain diff."""
    text = text.replace("\r\n", "\n")
    if is_mbox(text):
        return [parse_mail(msg, f"{origin} message {k}", skip_replies=True)
                for k, (_lineno, msg) in enumerate(split_mbox(text, origin), 1)]
    if looks_like_mail(text):
        return [parse_mail(text, origin)]
    return [parse_rendering(text, origin)]


def _parse_file(path: Path) -> list[Parsed]:
    return parse_series_text(_read_text(path), path.name)


def _series_from(parsed: list[Parsed], name: str, source: str) -> Series:
    patches: list[Patch] = []
    skipped: list[str] = []
    cover = None
    seen: set[str] = set()
    multi = len(parsed) > 1
    for k, p in enumerate(parsed, 1):
        where = f"message {k}" if multi else source
        if p.skipped == "cover letter":
            cover = p.subject
            skipped.append(f"{where}: cover letter")
            continue
        if multi and p.skipped == "reply":
            skipped.append(f"{where}: reply ({p.subject})")
            continue
        if not p.patches:
            skipped.append(f"{where}: {p.skipped or 'no diff'}")
            continue
        for patch in p.patches:
            if patch.content_hash in seen:
                skipped.append(f"{where}: duplicate of an earlier patch")
                continue
            seen.add(patch.content_hash)
            if not patch.subject:
                patch = _with(patch, subject=name)
            patches.append(patch)
    if not patches:
        raise _no_diff_error(source, parsed, skipped)
    patches = _order(patches, source)
    return Series(name, tuple(patches), source, cover, tuple(skipped))


def _with(patch: Patch, **changes) -> Patch:
    from dataclasses import replace

    return replace(patch, **changes)


def _order(patches: list[Patch], source: str) -> list[Patch]:
    """Patches of one posting sorted by their n/N; mixed versions are refused."""
    if len(patches) < 2 or any(p.index is None for p in patches):
        return patches
    versions = sorted({p.version or 1 for p in patches})
    if len(versions) > 1:
        raise InputError(
            f"{source} mixes versions of a series: {', '.join(f'v{v}' for v in versions)}",
            hint="keep only the messages of one version (e.g. `b4 am -v N`)",
        )
    by_index: dict[int, Patch] = {}
    for p in patches:
        if p.index in by_index:
            raise InputError(
                f"{source} has two different patches numbered {p.index}/{p.total}: "
                f'"{by_index[p.index].subject}" and "{p.subject}"',
                hint="remove the duplicate (a resend or a fixup) from the series",
            )
        by_index[p.index] = p
    return [by_index[i] for i in sorted(by_index)]


def _no_diff_error(source: str, parsed: list[Parsed], skipped: list[str]) -> InputError:
    what = "; ".join(skipped[:4]) if len(parsed) > 1 else ""
    hint = ("save the message with its patch: the raw mail (lore's 'raw' link, "
            "`b4 am`), `git format-patch`, or the archive page of the patch itself")
    try:
        text = _read_text(Path(source)) if Path(source).is_file() else ""
    except InputError:
        text = ""
    links = re.findall(r"https?://lore\.kernel\.org/\S+", text)
    sobs = len(re.findall(r"^\s*Signed-off-by:", text, re.M))
    detail = what or (f"{sobs} Signed-off-by lines but no 'diff --git' or '---/+++' block"
                      if sobs else "no 'diff --git' or '---/+++' block")
    if links:
        hint = f"the text links {links[-1]}: fetch that message's raw form; or " + hint
    return InputError(f"{source}: no diff found ({detail})", hint=hint)


def _load_dir(path: Path, name: str | None) -> Series:
    quilt = path / "series"
    if quilt.is_file():
        files = []
        for line in _read_text(quilt).splitlines():
            entry = line.split("#", 1)[0].strip().split()
            if entry:
                files.append(path / entry[0])
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise InputError(f"{quilt} lists {missing[0]}, which is not in {path}",
                             hint="fix the quilt series file or add the patch")
    else:
        files = sorted(p for p in path.iterdir() if p.suffix == ".patch" and p.is_file())
    if not files:
        others = sorted(p.name for p in path.iterdir() if p.suffix in (".diff", ".mbox", ".eml",
                                                                       ".txt"))
        hint = "a series directory holds one *.patch per patch (`git format-patch -o DIR base..tip`)"
        if others:
            hint += f"; found {', '.join(others[:3])}: rename to *.patch or pass the file itself"
        raise InputError(f"no *.patch files in {path}", hint=hint)
    parsed: list[Parsed] = []
    for f in files:
        got = _parse_file(f)
        if all(not p.patches and p.skipped != "cover letter" for p in got):
            raise _no_diff_error(str(f), got, [])
        parsed.extend(got)
    return _series_from(parsed, name or path.name, str(path))


def _load_git_range(base: str, tip: str, repo: Path, spec: str, name: str | None) -> Series:
    if shutil.which("git") is None:
        raise MissingToolError("git is needed for a git range series", hint="apt-get install git")
    if not repo.is_dir():
        raise InputError(f"git repository not found: {repo} (for the range {spec})",
                         hint="a git range needs its repository: --repo DIR for `mmlab series`, "
                         "a git --tree for `mmlab build`")
    top = subprocess.run(["git", "-C", str(repo), "rev-parse", "--git-dir"],
                         capture_output=True, text=True)
    if top.returncode != 0:
        raise InputError(f"{repo} is not a git repository (for the range {spec})",
                         hint="pass the repository with --repo DIR")
    for rev in (base, tip):
        r = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet",
                            f"{rev}^{{commit}}"], capture_output=True, text=True)
        if r.returncode != 0:
            raise InputError(f"unknown revision '{rev}' in {repo} (range {spec})",
                             hint="check the names with `git log --oneline` (fetch the branch "
                             "or tag first)")
    r = subprocess.run(["git", "-c", "core.quotepath=off", "-C", str(repo), "format-patch",
                        "--stdout", "--no-color", "--no-signature", "-M", f"{base}..{tip}"],
                       capture_output=True)
    if r.returncode != 0:
        raise InputError(f"git format-patch {spec} failed: "
                         f"{r.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    text = r.stdout.decode("utf-8", "surrogateescape")
    if not text.strip():
        raise InputError(f"the range {spec} has no commits (merges are skipped)",
                         hint="the range is base..tip: base excluded, tip included")
    parsed = parse_series_text(text, spec)
    return _series_from(parsed, name or spec, spec)


# ------------------------------------------------------------------------------ applying


@dataclass
class HunkResult:
    number: int
    header: str
    ok: bool
    line: int | None = None  # 1-based line where it applied (in the file as it was then)
    offset: int = 0
    detail: str = ""


@dataclass
class FileResult:
    path: str
    ok: bool
    hunks: list[HunkResult] = field(default_factory=list)
    problem: str = ""  # file-level: missing, exists already...

    def first_failure(self) -> str:
        if self.problem:
            return f"{self.path}: {self.problem}"
        bad = [h for h in self.hunks if not h.ok]
        if not bad:
            return ""
        h = bad[0]
        return f"{self.path} hunk #{h.number} ({h.header}) failed"


@dataclass
class PatchCheck:
    position: int
    total: int
    patch: Patch
    files: list[FileResult]
    after_failure: bool = False  # an earlier patch failed; checked without it

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    @property
    def label(self) -> str:
        prefix = f" [{self.patch.prefix}]" if self.patch.prefix else ""
        return f'patch {self.position}/{self.total}{prefix} "{self.patch.subject}"'

    @property
    def message(self) -> str:
        """One line: which patch, which file, which hunk."""
        if self.ok:
            return f"{self.label} applies"
        bad = [f for f in self.files if not f.ok]
        text = f"{self.label} does not apply: {bad[0].first_failure()}"
        more = [f.first_failure() for f in bad[1:]]
        nfail = sum(1 for f in bad for h in f.hunks if not h.ok) + sum(1 for f in bad if f.problem)
        if nfail > 1:
            text += f" ({nfail} failures in all"
            text += f"; also {', '.join(more[:2])})" if more else ")"
        return text

    def to_dict(self) -> dict:
        return {
            "position": self.position,
            "subject": self.patch.subject,
            "sha256": self.patch.content_hash,
            "applies": self.ok,
            "after_failure": self.after_failure,
            "message": self.message,
            "files": [
                {"path": f.path, "applies": f.ok, "problem": f.problem,
                 "hunks": [vars(h) for h in f.hunks]}
                for f in self.files
            ],
        }


@dataclass
class SeriesCheck:
    series: Series
    patches: list[PatchCheck]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.patches)

    @property
    def first_failure(self) -> PatchCheck | None:
        return next((p for p in self.patches if not p.ok), None)


class _Overlay:
    """The tree as the series changes it, in memory: path -> lines (None = deleted)."""

    def __init__(self, tree: Path):
        self.tree = tree
        self.files: dict[str, list[str] | None] = {}
        self.modes: dict[str, int] = {}

    def _safe(self, rel: str) -> Path:
        """``tree/rel``, refused when it can reach outside the tree: an absolute path, a
        ``..`` component, or a symlink on the way (a directory link would let a patch write
        anywhere; a file link is read only when it points inside the tree, and is replaced,
        never written through)."""
        parts = Path(rel).parts
        hint = "refusing to apply; check where this patch comes from"
        if Path(rel).is_absolute() or ".." in parts or not parts:
            raise InputError(f"patch touches a path outside the tree: {rel}", hint=hint)
        p = self.tree
        for part in parts[:-1]:
            p = p / part
            if p.is_symlink():
                raise InputError(f"patch touches {rel}, but {p.relative_to(self.tree)} in the "
                                 "tree is a symlink", hint=hint)
        dest = self.tree / rel
        if dest.is_symlink():
            root = self.tree.resolve()
            target = dest.resolve()
            if target != root and root not in target.parents:
                raise InputError(f"patch touches {rel}, a symlink in the tree that points "
                                 f"outside it ({target})", hint=hint)
        return dest

    def exists(self, rel: str) -> bool:
        if rel in self.files:
            return self.files[rel] is not None
        p = self._safe(rel)
        return p.is_file() or p.is_symlink()

    def read(self, rel: str) -> list[str] | None:
        if rel in self.files:
            return self.files[rel]
        p = self._safe(rel)
        if not p.is_file():
            return None
        data = p.read_bytes()
        return data.decode("utf-8", "surrogateescape").splitlines(keepends=True)

    def mode(self, rel: str) -> int | None:
        if rel in self.modes:
            return self.modes[rel]
        p = self._safe(rel)
        try:
            return stat.S_IMODE(p.stat().st_mode)
        except OSError:
            return None

    def snapshot(self) -> tuple[dict, dict]:
        return dict(self.files), dict(self.modes)

    def restore(self, snap: tuple[dict, dict]) -> None:
        self.files, self.modes = dict(snap[0]), dict(snap[1])


def _eq(tree_line: str, patch_text: str) -> bool:
    body = tree_line[:-1] if tree_line.endswith("\n") else tree_line
    if body == patch_text:
        return True
    return body.endswith("\r") and body[:-1] == patch_text  # CRLF file, LF patch


def _find(lines: list[str], old: list[str], expected: int, begin: bool, end: bool) -> int | None:
    n, m = len(lines), len(old)
    if m > n:
        return None
    candidates: list[int]
    if begin:
        candidates = [0]
    elif end:
        candidates = [n - m]
    else:
        expected = min(max(expected, 0), n - m)
        candidates = [expected]
        for d in range(1, n + 1):
            lo, hi = expected - d, expected + d
            if lo < 0 and hi > n - m:
                break
            if lo >= 0:
                candidates.append(lo)
            if hi <= n - m:
                candidates.append(hi)
    for pos in candidates:
        if all(_eq(lines[pos + k], old[k]) for k in range(m)):
            return pos
    return None


def _closest(lines: list[str], old: list[str], expected: int, orig) -> str:
    """Why a hunk failed: where it matches best and the first line that differs."""
    n, m = len(lines), len(old)
    if m == 0:
        return ""
    best = (-1, 0)
    for pos in range(0, max(n - m, 0) + 1):
        score = sum(1 for k in range(min(m, n - pos)) if _eq(lines[pos + k], old[k]))
        if score > best[0] or (score == best[0] and abs(pos - expected) < abs(best[1] - expected)):
            best = (score, pos)
    score, pos = best
    if score <= 0:
        return "none of its context is in the file"
    for k in range(m):
        if pos + k >= n or not _eq(lines[pos + k], old[k]):
            have = lines[pos + k].rstrip("\n") if pos + k < n else "<end of file>"
            return (f"best match at line {orig(pos)} ({score}/{m} lines agree); line "
                    f"{orig(pos + k)} "
                    f"is {_short(have)!r}, the patch expects {_short(old[k])!r}")
    return f"matches at line {orig(pos)}"


def _short(text: str, width: int = 60) -> str:
    text = text.expandtabs(8).strip()
    return text if len(text) <= width else text[: width - 3] + "..."


def _apply_file(ov: _Overlay, fp: FilePatch) -> FileResult:
    """Apply one file's hunks to the overlay; record every hunk's outcome."""
    res = FileResult(fp.path, True)
    if fp.is_new:
        if ov.exists(fp.new_path):
            res.ok, res.problem = False, "new file already exists in the tree"
            return res
        lines: list[str] = []
    else:
        got = ov.read(fp.old_path)
        if got is None:
            kind = "a directory" if ov._safe(fp.old_path).is_dir() else "not in the tree"
            res.ok, res.problem = False, f"file {kind}"
            return res
        lines = list(got)
    if fp.is_rename and ov.exists(fp.new_path):
        res.ok, res.problem = False, f"rename target {fp.new_path} already exists"
        return res
    eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    drift = 0  # how far the previous hunk landed from where its header said
    applied: list[tuple[int, int]] = []  # (index in `lines`, lines added) of applied hunks

    def orig(index: int) -> int:
        """1-based line number in the file as it is in the tree (before this patch)."""
        return index + 1 - sum(d for p, d in applied if p <= index)

    for k, h in enumerate(fp.hunks, 1):
        old = [ln.text for ln in h.old_lines]
        # new_start counts in the file as changed by the hunks before: that is `lines`
        expected = max(h.new_start - 1, 0) + drift
        lead, trail = h.leading_context, h.trailing_context
        begin = h.old_start <= 1 and (lead or trail or not old)
        end = trail == 0 and lead > 0
        pos = _find(lines, old, expected, bool(begin), end)
        if pos is None:
            res.ok = False
            detail = _closest(lines, old, expected, orig)
            new = [ln.text for ln in h.new_lines]
            if new and _find(lines, new, expected, False, False) is not None and new != old:
                where = _find(lines, new, expected, False, False)
                detail = (f"the tree already has its result at line {orig(where)} "
                          "(applied already?)")
            elif not old:
                detail = "no place to insert at the top or end of the file"
            res.hunks.append(HunkResult(k, h.header, False, None, 0, detail))
            continue
        new_lines = []
        for ln in h.new_lines:
            new_lines.append(ln.text + (eol if ln.newline else ""))
        # a context line at EOF that the patch keeps without newline: keep the tree's ending
        lines[pos:pos + len(old)] = new_lines
        drift = pos - max(h.new_start - 1, 0)
        line = orig(pos)
        res.hunks.append(HunkResult(k, h.header, True, line,
                                    line - h.old_start if h.old_count else line - h.old_start - 1))
        applied.append((pos, len(new_lines) - len(old)))
    if not res.ok:
        return res
    if fp.is_deleted:
        if any(ln.strip() for ln in lines) and lines:
            res.ok, res.problem = False, "file to delete is not empty after removing its lines"
            return res
        ov.files[fp.old_path] = None
        return res
    if fp.is_rename:
        ov.files[fp.old_path] = None
        if fp.old_path in ov.modes:
            ov.modes.pop(fp.old_path)
    if fp.new_mode == "120000" or fp.old_mode == "120000":
        res.ok, res.problem = False, "symbolic link patches are not supported"
        return res
    ov.files[fp.new_path] = lines
    mode = ov.mode(fp.old_path) if fp.old_path else None
    if fp.new_mode:
        mode = 0o755 if fp.new_mode.endswith("755") else 0o644
    ov.modes[fp.new_path] = mode if mode is not None else 0o644
    return res


def _check_into(series: Series, ov: _Overlay) -> SeriesCheck:
    checks = []
    failed = False
    n = len(series.patches)
    for pos, patch in enumerate(series.patches, 1):
        snap = ov.snapshot()
        files = [_apply_file(ov, fp) for fp in patch.files]
        pc = PatchCheck(pos, n, patch, files, after_failure=failed)
        if not pc.ok:
            ov.restore(snap)  # a failing patch changes nothing; later ones are checked without it
            failed = True
        checks.append(pc)
    return SeriesCheck(series, checks)


def check_series(series: Series, tree: str | os.PathLike) -> SeriesCheck:
    """Whether each patch applies (in order) to ``tree``; nothing is written."""
    tree = _tree(tree)
    return _check_into(series, _Overlay(tree))


def apply_series(series: Series, tree: str | os.PathLike) -> SeriesCheck:
    """Apply ``series`` in order to ``tree`` in place; all or nothing.

    Raises SeriesApplyError naming the first patch, file and hunk that do not apply; the
    tree is then unchanged. Linked files (a ``cp -al`` work tree) are replaced, never
    written through, so the pristine tree they share inodes with stays intact.
    """
    tree = _tree(tree)
    ov = _Overlay(tree)
    result = _check_into(series, ov)
    bad = result.first_failure
    if bad is not None:
        err = SeriesApplyError(
            bad.message,
            hint=f"the tree differs from what the patch expects; see `mmlab series check "
            f"{series.source or series.name} --tree {tree}` for every hunk, or rebase the "
            "series onto this tree",
        )
        err.check = result  # type: ignore[attr-defined]
        raise err
    _commit(ov)
    return result


def _tree(tree: str | os.PathLike) -> Path:
    p = Path(tree)
    if not p.is_dir():
        raise InputError(f"tree not found: {p}", hint="give the directory of a kernel tree")
    return p


def _commit(ov: _Overlay) -> None:
    """Write the overlay: new files beside the old ones first, then renames and deletions."""
    staged: list[tuple[Path, Path]] = []
    try:
        for rel, lines in ov.files.items():
            if lines is None:
                continue
            dest = ov._safe(rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.mmlab-{os.getpid()}.tmp")
            data = "".join(lines).encode("utf-8", "surrogateescape")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, ov.modes.get(rel, 0o644))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, ov.modes.get(rel, 0o644))
            staged.append((tmp, dest))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, dest in staged:
        os.replace(tmp, dest)  # a new inode: a hard-linked pristine copy is untouched
    for rel, lines in ov.files.items():
        if lines is None:
            p = ov._safe(rel)
            if p.exists() or p.is_symlink():
                p.unlink()
            parent = p.parent
            while parent != ov.tree and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent


# ---------------------------------------------------------------------------------- CLI


@click.group("series")
def series_command() -> None:
    """Read patch series (directories, git ranges, mboxes, saved list posts) and check them."""


_repo_opt = click.option("--repo", type=click.Path(file_okay=False), default=None,
                         help="git repository for a base..tip range (default: the current dir)")


@series_command.command("show")
@click.argument("source")
@_repo_opt
@click.option("--json", "as_json", is_flag=True, help="Print the series as JSON.")
@click.option("--diff", "show_diff", is_flag=True, help="Print the extracted diffs.")
def show_command(source: str, repo: str | None, as_json: bool, show_diff: bool) -> None:
    """List the patches of SOURCE: subject, author, files and hunks."""
    s = load_series(source, repo=repo)
    if as_json:
        click.echo(json.dumps(s.to_dict(), indent=2))
        return
    if show_diff:
        for p in s.patches:
            click.echo(p.diff, nl=False)
        return
    click.echo(f"series  {s.name}  ({len(s)} patch{'es' if len(s) != 1 else ''})")
    click.echo(f"sha256  {s.content_hash}")
    if s.cover_subject:
        click.echo(f"cover   {s.cover_subject}")
    for k, p in enumerate(s.patches, 1):
        prefix = f"[{p.prefix}] " if p.prefix else ""
        click.echo(f"\n{k}/{len(s)} {prefix}{p.subject}")
        click.echo(f"    author   {p.author or '(unknown)'}")
        click.echo(f"    date     {p.date or '(unknown)'}")
        if p.posted_by or p.posted_at:
            click.echo(f"    posted   {p.posted_by or ''} {p.posted_at or ''}".rstrip())
        click.echo(f"    sha256   {p.content_hash}")
        for f in p.files:
            kind = " (new)" if f.is_new else " (deleted)" if f.is_deleted else (
                f" (from {f.old_path})" if f.is_rename else "")
            click.echo(f"    {f.path}{kind}: {len(f.hunks)} hunk(s) "
                       + " ".join(h.header for h in f.hunks))
        for r in p.repairs[:5]:
            click.echo(f"    repaired {r}")
        if len(p.repairs) > 5:
            click.echo(f"    repaired ... {len(p.repairs) - 5} more")
    for sk in s.skipped:
        click.echo(f"\nskipped {sk}")


@series_command.command("check")
@click.argument("source")
@click.option("--tree", required=True,
              help="The tree to check against (not modified): a directory, or any tree "
              "`mmlab build --tree` takes (debian:7.3, a tarball, a .deb).")
@_repo_opt
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def check_command(source: str, tree: str, repo: str | None, as_json: bool) -> None:
    """Check whether SOURCE applies to TREE; print every hunk that fails and why."""
    s = load_series(source, repo=repo)
    if not Path(tree).is_dir():
        from orchestrator.kernel.sources import resolve_tree

        tree = str(resolve_tree(tree).pristine())  # checking never writes the tree
    result = check_series(s, tree)
    if as_json:
        click.echo(json.dumps({"series": s.name, "sha256": s.content_hash, "applies": result.ok,
                               "patches": [p.to_dict() for p in result.patches]}, indent=2))
    else:
        for pc in result.patches:
            click.echo(("OK    " if pc.ok else "FAIL  ") + pc.message
                       + ("  [checked without the failed patch before it]"
                          if pc.after_failure else ""))
            for f in pc.files:
                if f.problem:
                    click.echo(f"      {f.path}: {f.problem}")
                for h in f.hunks:
                    if h.ok:
                        off = f" (offset {h.offset:+d})" if h.offset else ""
                        click.echo(f"      {f.path} hunk #{h.number} {h.header} applies at "
                                   f"line {h.line}{off}")
                    else:
                        click.echo(f"      {f.path} hunk #{h.number} {h.header} FAILS: {h.detail}")
    bad = result.first_failure
    if bad is not None:
        raise SeriesApplyError(bad.message, hint="rebase the series onto this tree, or pick a "
                               "tree it was written for")


@series_command.command("apply")
@click.argument("source")
@click.option("--tree", required=True, type=click.Path(file_okay=False),
              help="The work tree to patch in place (all or nothing).")
@_repo_opt
def apply_command(source: str, tree: str, repo: str | None) -> None:
    """Apply SOURCE to TREE in place (nothing is written unless every patch applies)."""
    s = load_series(source, repo=repo)
    result = apply_series(s, tree)
    for pc in result.patches:
        click.echo(pc.message)
