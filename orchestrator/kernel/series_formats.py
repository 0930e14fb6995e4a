"""Patches as people save them: the data model and the parsers of their renderings.

A patch reaches mmlab as a git format-patch mail, an mbox, a plain diff, or the *text of a
web page*: a mailing-list archive (pipermail), a patch viewer (patchew, patchwork), or a
reply that quotes the patch with ``> `` and puts review comments between the hunks. The
diff inside is what matters, and it must come out byte-exact, so the parser is driven by
the hunk headers: ``@@ -a,b +c,d @@`` says how many lines follow, which lets it

* take only the lines at the quote depth the diff was found at (review comments, written
  at another depth, are dropped even when they sit inside a hunk),
* read an empty line inside a hunk as an empty context line (mailers strip the space),
* rejoin a line that a mailer wrapped (a hunk line that starts with no diff marker is the
  tail of the line before; the wrap ate one space, which is put back),
* and say precisely which hunk is truncated when a quoted patch was trimmed.

The diff is re-rendered canonically (no ``index`` lines, no diffstat, LF endings), so
every rendering of the same change has the same content hash.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from orchestrator.errors import InputError

# ---------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class HunkLine:
    """One line of a hunk: marker (' ', '-', '+'), text, and whether a newline ends it."""

    marker: str
    text: str
    newline: bool = True


@dataclass(frozen=True)
class Hunk:
    """A ``@@ -old_start,old_count +new_start,new_count @@ section`` block."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int
    section: str
    lines: tuple[HunkLine, ...]

    @property
    def header(self) -> str:
        """The ``@@ ... @@`` line without the section text (how errors name a hunk)."""
        return f"@@ -{_range(self.old_start, self.old_count)} +{_range(self.new_start, self.new_count)} @@"

    @property
    def old_lines(self) -> list[HunkLine]:
        return [ln for ln in self.lines if ln.marker in " -"]

    @property
    def new_lines(self) -> list[HunkLine]:
        return [ln for ln in self.lines if ln.marker in " +"]

    @property
    def leading_context(self) -> int:
        n = 0
        for ln in self.lines:
            if ln.marker != " ":
                break
            n += 1
        return n

    @property
    def trailing_context(self) -> int:
        n = 0
        for ln in reversed(self.lines):
            if ln.marker != " ":
                break
            n += 1
        return n

    def render(self, with_section: bool = True) -> str:
        head = self.header + (f" {self.section}" if with_section and self.section else "")
        out = [head + "\n"]
        for ln in self.lines:
            out.append(f"{ln.marker}{ln.text}\n")
            if not ln.newline:
                out.append("\\ No newline at end of file\n")
        return "".join(out)


def _range(start: int, count: int) -> str:
    return str(start) if count == 1 else f"{start},{count}"


@dataclass(frozen=True)
class FilePatch:
    """The change to one file. ``old_path`` is None for a new file, ``new_path`` for a deletion."""

    old_path: str | None
    new_path: str | None
    hunks: tuple[Hunk, ...] = ()
    old_mode: str | None = None
    new_mode: str | None = None

    @property
    def path(self) -> str:
        """The path the change is known by: the new name, or the old one for a deletion."""
        return self.new_path or self.old_path or "?"

    @property
    def is_new(self) -> bool:
        return self.old_path is None

    @property
    def is_deleted(self) -> bool:
        return self.new_path is None

    @property
    def is_rename(self) -> bool:
        return bool(self.old_path and self.new_path and self.old_path != self.new_path)

    def render(self, with_section: bool = True) -> str:
        a = self.old_path or self.new_path
        b = self.new_path or self.old_path
        out = [f"diff --git a/{a} b/{b}\n"]
        if self.is_new:
            out.append(f"new file mode {self.new_mode or '100644'}\n")
        elif self.is_deleted:
            out.append(f"deleted file mode {self.old_mode or '100644'}\n")
        elif self.old_mode and self.new_mode and self.old_mode != self.new_mode:
            out.append(f"old mode {self.old_mode}\nnew mode {self.new_mode}\n")
        if self.is_rename:
            out.append(f"rename from {self.old_path}\nrename to {self.new_path}\n")
        if self.hunks:
            out.append(f"--- {'a/' + self.old_path if self.old_path else '/dev/null'}\n")
            out.append(f"+++ {'b/' + self.new_path if self.new_path else '/dev/null'}\n")
            out.extend(h.render(with_section) for h in self.hunks)
        return "".join(out)


@dataclass(frozen=True)
class Patch:
    """One patch of a series, with what the mail or page said about it.

    ``author`` is who wrote the change (an in-body ``From:``, the person a reply quotes, the
    submitter), ``posted_by``/``posted_at`` the message it was taken from when that is
    someone else's (a review reply, a backport posting). ``date`` is the authoring date when
    known. ``repairs`` lists what the parser had to mend (wrapped lines, stripped spaces).
    """

    subject: str
    files: tuple[FilePatch, ...]
    author: str | None = None
    date: str | None = None
    version: int | None = None
    index: int | None = None
    total: int | None = None
    tags: tuple[str, ...] = ()
    origin: str = ""
    posted_by: str | None = None
    posted_at: str | None = None
    repairs: tuple[str, ...] = ()

    @property
    def diff(self) -> str:
        """The diff, canonical: usable with ``git apply`` or ``patch -p1``."""
        return "".join(f.render() for f in self.files)

    @property
    def content_hash(self) -> str:
        """sha256 of the normalized diff (not of the mail: renderings of one diff agree)."""
        text = "".join(f.render(with_section=False) for f in self.files)
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()

    sha256 = content_hash

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    @property
    def hunks_per_file(self) -> dict[str, list[str]]:
        return {f.path: [h.header for h in f.hunks] for f in self.files}

    @property
    def prefix(self) -> str:
        """What the ``[PATCH ...]`` prefix said, compactly: ``v3 11/11``."""
        parts = list(self.tags)
        if self.version:
            parts.append(f"v{self.version}")
        if self.index is not None:
            parts.append(f"{self.index}/{self.total}" if self.total else str(self.index))
        return " ".join(parts)

    def to_dict(self) -> dict:
        return {
            "subject": self.subject,
            "author": self.author,
            "date": self.date,
            "version": self.version,
            "index": self.index,
            "total": self.total,
            "tags": list(self.tags),
            "origin": self.origin,
            "posted_by": self.posted_by,
            "posted_at": self.posted_at,
            "sha256": self.content_hash,
            "repairs": list(self.repairs),
            "files": [
                {
                    "path": f.path,
                    "old_path": f.old_path,
                    "new_path": f.new_path,
                    "hunks": [h.header for h in f.hunks],
                }
                for f in self.files
            ],
        }


# ------------------------------------------------------------------- subject prefixes

_TAGGED = re.compile(r"^\s*(?:(?:re|fwd?|aw)\s*:\s*)*((?:\[[^\]]*\]\s*)+)(.*\S)\s*$", re.I)
_PATCHWORK_TITLE = re.compile(r"\s+-\s+Patchwork\s*$")


def split_subject(line: str) -> tuple[str, int | None, int | None, int | None, tuple[str, ...]] | None:
    """``[SRU][PATCH v3 11/11] foo`` -> ("foo", 3, 11, 11, ("SRU",)); None if untagged.

    Only bracket groups that look like patch prefixes count (PATCH, RFC, vN, n/m); the
    patchwork form ``[v3,11/11]`` is understood too.
    """
    line = _PATCHWORK_TITLE.sub("", line)
    m = _TAGGED.match(line)
    if not m:
        return None
    groups = re.findall(r"\[([^\]]*)\]", m.group(1))
    version = index = total = None
    tags: list[str] = []
    patchy = False
    for g in groups:
        tokens = [t for t in re.split(r"[\s,]+", g) if t]
        for tok in tokens:
            if tok.upper() in ("PATCH", "PATCHV"):
                patchy = True
            elif re.fullmatch(r"[vV](\d+)", tok):
                version = int(tok[1:])
                patchy = True
            elif re.fullmatch(r"(?i)patch[vV]?(\d+)", tok):
                version = int(re.sub(r"\D", "", tok))
                patchy = True
            elif re.fullmatch(r"\d+/\d+", tok):
                index, total = (int(x) for x in tok.split("/"))
                patchy = True
            elif tok.upper() == "RFC":
                patchy = True
                tags.append(tok)
            else:
                tags.append(tok)
    if not patchy:
        return None
    return m.group(2).strip(), version, index, total, tuple(tags)


# --------------------------------------------------------------------- diff extraction

_QUOTE_PREFIX = re.compile(r"^(?:>[ ]?)*")
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")
_GIT_EXT = re.compile(
    r"^(old mode|new mode|deleted file mode|new file mode|similarity index|"
    r"dissimilarity index|rename from|rename to|copy from|copy to|index) ?(.*)$"
)


@dataclass
class _Line:
    depth: int
    text: str
    lineno: int  # 1-based, in the rendering


def _quoted(lines: Sequence[str]) -> list[_Line]:
    out = []
    for i, raw in enumerate(lines, 1):
        prefix = _QUOTE_PREFIX.match(raw).group(0)
        out.append(_Line(prefix.count(">"), raw[len(prefix):], i))
    return out


@dataclass
class DiffBlock:
    """A diff found in a text: its files, where it sits, and what had to be repaired."""

    files: list[FilePatch]
    depth: int
    start: int  # index into the line list
    end: int
    repairs: list[str] = field(default_factory=list)


class DiffFormatError(InputError):
    """A diff that is there but broken (truncated hunk, binary patch...)."""


def _strip_path(raw: str, git: bool) -> str | None:
    path = raw.split("\t")[0].rstrip()
    if path.startswith('"') and path.endswith('"'):
        path = path[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        path = path.encode("latin-1", "surrogateescape").decode("utf-8", "surrogateescape")
    if path == "/dev/null":
        return None
    if git or path.startswith(("a/", "b/")):
        return path.split("/", 1)[1] if "/" in path else path
    # A non-git diff: the kernel convention is -p1 (``linux.orig/mm/x.c``).
    return path.split("/", 1)[1] if "/" in path else path


def _git_header_paths(rest: str) -> tuple[str, str]:
    """Paths of ``diff --git a/X b/Y`` (X == Y unless renamed; then rename lines tell)."""
    if rest.startswith("a/"):
        body = rest[2:]
        n = len(body)
        # a/P b/P: the split where both halves agree
        half = (n - 3) // 2
        if n >= 3 and body[half:half + 3] == " b/" and body[:half] == body[half + 3:]:
            return body[:half], body[half + 3:]
        i = body.rfind(" b/")
        if i >= 0:
            return body[:i], body[i + 3:]
    parts = rest.split(" ")
    return _strip_path(parts[0], True) or "", _strip_path(parts[-1], True) or ""


def find_diffs(lines: Sequence[str], origin: str) -> list[DiffBlock]:
    """All diffs in a text, quoted or not, in order."""
    items = _quoted(lines)
    blocks: list[DiffBlock] = []
    i = 0
    while i < len(items):
        it = items[i]
        if _is_diff_start(items, i):
            block = _parse_block(items, i, it.depth, origin)
            blocks.append(block)
            i = max(block.end, i + 1)
        else:
            i += 1
    return blocks


def _next_same_depth(items: list[_Line], i: int, depth: int) -> int | None:
    j = i + 1
    while j < len(items) and items[j].depth != depth:
        j += 1
    return j if j < len(items) else None


def _is_diff_start(items: list[_Line], i: int) -> bool:
    t = items[i].text
    if t.startswith("diff --git "):
        return True
    if t.startswith("--- ") and not t.startswith("--- a/dev/null"):
        j = _next_same_depth(items, i, items[i].depth)
        if j is not None and items[j].text.startswith("+++ "):
            k = _next_same_depth(items, j, items[i].depth)
            return k is not None and _HUNK.match(items[k].text) is not None
    return False


def _parse_block(items: list[_Line], i: int, depth: int, origin: str) -> DiffBlock:
    files: list[FilePatch] = []
    repairs: list[str] = []
    n = len(items)
    start = i

    def skip_other_depths(j: int) -> int:
        while j < n and items[j].depth != depth:
            j += 1
        return j

    while True:
        i = skip_other_depths(i)
        if i >= n:
            break
        t = items[i].text
        if not (t.startswith("diff --git ") or _is_diff_start(items, i)):
            break
        # ---- file header
        old_path = new_path = None
        old_mode = new_mode = None
        git = t.startswith("diff --git ")
        created = deleted = False
        if git:
            old_path, new_path = _git_header_paths(t[len("diff --git "):])
            i += 1
            while True:
                i = skip_other_depths(i)
                if i >= n:
                    break
                t = items[i].text
                if t.startswith(("GIT binary patch", "Binary files ")):
                    raise DiffFormatError(
                        f"{origin}: binary patch for {new_path} (line {items[i].lineno}) is "
                        "not supported",
                        hint="apply binary changes with git directly, or drop them from the series",
                    )
                m = _GIT_EXT.match(t)
                if not m:
                    break
                key, val = m.group(1), m.group(2).strip()
                if key == "new file mode":
                    created, new_mode = True, val
                elif key == "deleted file mode":
                    deleted, old_mode = True, val
                elif key == "old mode":
                    old_mode = val
                elif key == "new mode":
                    new_mode = val
                elif key in ("rename from", "copy from"):
                    old_path = val
                elif key in ("rename to", "copy to"):
                    new_path = val
                i += 1
        hunks: list[Hunk] = []
        if i < n and items[i].text.startswith("--- "):
            j = _next_same_depth(items, i, depth)
            if j is None or not items[j].text.startswith("+++ "):
                raise DiffFormatError(
                    f"{origin}: line {items[i].lineno}: '---' without a '+++' line",
                    hint="the diff is damaged; save the original mail (raw) instead",
                )
            op = _strip_path(items[i].text[4:], git)
            np = _strip_path(items[j].text[4:], git)
            if op is None:
                created = True
            if np is None:
                deleted = True
            old_path = op if op is not None else old_path
            new_path = np if np is not None else new_path
            i = j + 1
            # ---- hunks
            while True:
                i = skip_other_depths(i)
                if i >= n or not _HUNK.match(items[i].text):
                    break
                hunk, i, fixes = _parse_hunk(items, i, depth, origin, new_path or old_path,
                                             len(hunks) + 1)
                hunks.append(hunk)
                repairs.extend(fixes)
                # tolerate blank lines between hunks, if another hunk or file follows
                j = i
                while j < n and (items[j].depth != depth or items[j].text.strip() == ""):
                    j += 1
                if j < n and (_HUNK.match(items[j].text) or items[j].text.startswith("diff --git ")
                              or _is_diff_start(items, j)):
                    i = j
                elif i < n and items[i].depth == depth and items[i].text[:1] in ("+", "-", " ") \
                        and items[i].text.strip() and not items[i].text.startswith("-- ") \
                        and items[i].text.rstrip() != "--":
                    h = hunks[-1]
                    raise DiffFormatError(
                        f"{origin}: {new_path or old_path} hunk #{len(hunks)} ({h.header}) has "
                        f"more lines than its header says (line {items[j].lineno}); the mail was "
                        "wrapped or edited",
                        hint="save the raw mail (lore's 'raw' link) instead of a rendering",
                    )
        if created:
            old_path = None
        if deleted:
            new_path = None
        if old_path is None and new_path is None:
            raise DiffFormatError(f"{origin}: a diff names no file (line {items[start].lineno})")
        files.append(FilePatch(old_path, new_path, tuple(hunks), old_mode, new_mode))
        # next file?
        j = i
        while j < n and (items[j].depth != depth or items[j].text.strip() == ""):
            j += 1
        if j < n and (items[j].text.startswith("diff --git ") or _is_diff_start(items, j)):
            i = j
            continue
        break
    return DiffBlock(files, depth, start, i, repairs)


def _parse_hunk(items: list[_Line], i: int, depth: int, origin: str, path: str | None,
                number: int) -> tuple[Hunk, int, list[str]]:
    m = _HUNK.match(items[i].text)
    assert m
    old_start, new_start = int(m.group(1)), int(m.group(3))
    old_count = int(m.group(2)) if m.group(2) is not None else 1
    new_count = int(m.group(4)) if m.group(4) is not None else 1
    section = m.group(5).rstrip()
    header_line = items[i].lineno
    old_left, new_left = old_count, new_count
    last_line = header_line
    lines: list[HunkLine] = []
    repairs: list[str] = []
    i += 1
    n = len(items)
    header = f"@@ -{_range(old_start, old_count)} +{_range(new_start, new_count)} @@"
    while old_left > 0 or new_left > 0:
        if i >= n:
            raise DiffFormatError(
                f"{origin}: {path} hunk #{number} ({header}, line {header_line}) is truncated: "
                f"{old_left} old and {new_left} new lines missing after line "
                f"{lines and last_line or header_line}",
                hint="the quoted or saved patch was cut short; save the complete original mail",
            )
        it = items[i]
        if it.depth != depth:
            i += 1  # a review comment (or its blank line) between quoted hunk lines
            continue
        t = it.text
        if t == "" or t == "\r":
            marker, text = " ", ""
            repairs.append(f"{path} hunk #{number}: empty line read as empty context "
                           f"(line {it.lineno})")
        elif t[0] in " +-":
            marker, text = t[0], t[1:]
        elif t.startswith("\\"):
            if lines:
                lines[-1] = HunkLine(lines[-1].marker, lines[-1].text, False)
            i += 1
            continue
        elif _HUNK.match(t) or t.startswith("diff --git "):
            raise DiffFormatError(
                f"{origin}: {path} hunk #{number} ({header}, line {header_line}) is truncated: "
                f"{old_left} old and {new_left} new lines missing before line {it.lineno}",
                hint="the quoted or saved patch was cut short; save the complete original mail",
            )
        elif lines:
            # A wrapped line: the tail of the previous one; the wrap replaced one space.
            prev = lines.pop()
            lines.append(HunkLine(prev.marker, prev.text + " " + t, prev.newline))
            repairs.append(f"{path} hunk #{number}: rejoined a wrapped line (line {it.lineno})")
            i += 1
            continue
        else:
            raise DiffFormatError(
                f"{origin}: {path} hunk #{number} ({header}): line {it.lineno} is not a diff line",
                hint="the diff is damaged; save the raw mail instead",
            )
        if marker in " -":
            old_left -= 1
        if marker in " +":
            new_left -= 1
        if old_left < 0 or new_left < 0:
            raise DiffFormatError(
                f"{origin}: {path} hunk #{number} ({header}, line {header_line}) does not match "
                f"its header (line {it.lineno}); the mail was wrapped or edited",
                hint="save the raw mail (lore's 'raw' link) instead of a rendering",
            )
        lines.append(HunkLine(marker, text))
        last_line = it.lineno
        i += 1
    # a trailing "\ No newline at end of file"
    j = i
    while j < n and items[j].depth != depth:
        j += 1
    if j < n and items[j].text.startswith("\\") and lines:
        lines[-1] = HunkLine(lines[-1].marker, lines[-1].text, False)
        i = j + 1
    return Hunk(old_start, old_count, new_start, new_count, section, tuple(lines)), i, repairs


# --------------------------------------------------------------------------- metadata

_OBFUSCATED = re.compile(r"([\w.+=-]+) at ([\w-]+(?:\.[\w-]+)+)")
_PERSON_EMAIL = re.compile(r"^(.*?)\s*<([^<>]+)>\s*$")
_SOB = re.compile(r"^\s*(?:Signed-off-by|From|Reviewed-by|Acked-by|Co-developed-by):\s*(.+?)\s*$",
                  re.I)
_PIPERMAIL_WHO = re.compile(r"^(\S.*?)\s+([\w.+=-]+ at [\w-]+(?:\.[\w-]+)+)\s*$")
_POSTED_BY = re.compile(r"^\s*Posted by (.+?)\s+(?:\d+\s(?:year|month|week|day|hour|minute|second)"
                        r"s?\b.*ago|on .*)\s*$")
_ATTRIBUTION = re.compile(r"^(?:On (?P<when>.+),\s+)?(?P<who>[^,]+?)\s+wrote:\s*$")
_TZ = {"UTC": 0, "GMT": 0, "PDT": -7, "PST": -8, "EDT": -4, "EST": -5, "CDT": -5, "CST": -6,
       "MDT": -6, "MST": -7, "BST": 1, "CET": 1, "CEST": 2, "IST": 5.5, "JST": 9}


def deobfuscate(text: str) -> str:
    """``name at example.com`` (pipermail's anti-spam form) -> ``name@example.com``."""
    return _OBFUSCATED.sub(r"\1@\2", text)


def person(text: str) -> str:
    """A person as ``Name <email>``, with quotes and obfuscation removed."""
    text = deobfuscate(text.strip())
    name, addr = email.utils.parseaddr(text)
    if addr and "@" in addr:
        return f"{name} <{addr}>" if name else addr
    return text


def _email_for(name: str, lines: Sequence[str]) -> str | None:
    """The address a name signs with in the text (Signed-off-by and friends)."""
    want = name.strip().lower()
    for raw in lines:
        t = _QUOTE_PREFIX.sub("", raw)
        m = _SOB.match(t)
        if not m:
            continue
        pm = _PERSON_EMAIL.match(m.group(1))
        if pm and pm.group(1).strip().strip('"').lower() == want:
            return deobfuscate(pm.group(2))
    return None


def parse_date(text: str) -> str | None:
    """A date as found in mails, archives and reply attributions -> ISO 8601, or None."""
    text = text.strip()
    if not text:
        return None
    # pipermail: "Thu Apr  3 23:02:41 PDT 2025"
    m = re.fullmatch(r"\w{3} (\w{3}) +(\d+) (\d\d:\d\d:\d\d) ([A-Z]{2,5}) (\d{4})", text)
    if m and m.group(4) in _TZ:
        dt = datetime.strptime(f"{m.group(1)} {m.group(2)} {m.group(3)} {m.group(5)}",
                               "%b %d %H:%M:%S %Y")
        return dt.replace(tzinfo=timezone(timedelta(hours=_TZ[m.group(4)]))).isoformat()
    # mutt: "Mon, Sep 08, 2025 at 08:39:27AM +0100"
    for fmt in ("%a, %b %d, %Y at %I:%M:%S%p %z", "%a, %b %d, %Y at %I:%M:%S %p %z",
                "%a, %d %b %Y at %H:%M:%S %z", "%B %d, %Y, %I:%M %p", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text.replace("a.m.", "AM").replace("p.m.", "PM"),
                                     fmt).isoformat()
        except ValueError:
            continue
    if re.match(r"^(\w{3}, )?\d{1,2} \w{3} \d{4} ", text):  # RFC 2822
        try:
            return email.utils.parsedate_to_datetime(text).isoformat()
        except (TypeError, ValueError, IndexError):
            pass
    return None  # ambiguous forms like "3/4/25 20:34" are not guessed


@dataclass
class _Meta:
    subject: str | None = None
    version: int | None = None
    index: int | None = None
    total: int | None = None
    tags: tuple[str, ...] = ()
    author: str | None = None
    date: str | None = None
    posted_by: str | None = None
    posted_at: str | None = None


def _apply_subject(meta: _Meta, line: str) -> bool:
    s = split_subject(line)
    if s is None:
        return False
    meta.subject, meta.version, meta.index, meta.total, meta.tags = s
    return True


def text_metadata(lines: Sequence[str], block: DiffBlock) -> _Meta:
    """Subject, author and date of the diff at ``block`` in a saved page or reply."""
    meta = _Meta()
    before = lines[: block.start]
    items = _quoted(before)
    # --- subject: an in-body Subject: wins, then the first [PATCH ...] line.
    for it in items:
        if it.text.startswith("Subject:") and _apply_subject(meta, it.text[8:]):
            break
    if meta.subject is None:
        for it in items:
            if _apply_subject(meta, it.text):
                break
    # --- who posted it (the page's own header)
    poster_name = None
    for k, it in enumerate(items[:12]):
        m = _PIPERMAIL_WHO.match(it.text)
        if m and it.depth == 0:
            poster_name = m.group(1).strip()
            meta.posted_by = f"{poster_name} <{deobfuscate(m.group(2))}>"
            if k + 1 < len(items):
                meta.posted_at = parse_date(items[k + 1].text)
            break
    for it in items[:40]:
        m = re.match(r"^(Submitter|Date)\s*[:\t]\s*(.+)$", it.text)
        if m and m.group(1) == "Submitter" and meta.posted_by is None:
            poster_name = m.group(2).strip()
            meta.posted_by = person(poster_name)
        elif m and m.group(1) == "Date" and meta.posted_at is None:
            meta.posted_at = parse_date(m.group(2))
    if meta.posted_by is None:
        for it in items:
            m = _POSTED_BY.match(it.text)
            if m:
                poster_name = m.group(1).strip()
                meta.posted_by = poster_name
                break
    # --- the author: in-body From:, else the person a reply quotes, else the poster
    author = None
    date = None
    for it in reversed(items):
        if it.depth == block.depth and it.text.startswith("From:"):
            author = person(it.text[5:])
            break
    for it in reversed(items):
        if it.depth == block.depth and it.text.startswith("Date:"):
            date = parse_date(it.text[5:])
            break
    if author is None and block.depth > 0:
        for k in range(len(items) - 1, -1, -1):
            it = items[k]
            if it.depth != block.depth - 1 or not it.text.rstrip().endswith("wrote:"):
                continue
            text = it.text.strip()
            if not text.startswith("On ") and k > 0 and items[k - 1].depth == it.depth \
                    and items[k - 1].text.startswith("On "):
                text = items[k - 1].text.strip() + " " + text
            m = _ATTRIBUTION.match(text)
            if m:
                who = m.group("who").strip()
                pm = _PERSON_EMAIL.match(who)
                author = person(who) if pm else who
                if m.group("when"):
                    date = parse_date(m.group("when"))
            break
    if author is None and poster_name:
        author = poster_name
        date = meta.posted_at
    if author and "<" not in author and "@" not in author:
        addr = _email_for(author, lines)
        if addr:
            author = f"{author} <{addr}>"
    meta.author = author
    meta.date = date
    if meta.posted_by and "<" not in meta.posted_by:
        addr = _email_for(meta.posted_by, lines)
        if addr:
            meta.posted_by = f"{meta.posted_by} <{addr}>"
    if meta.author and meta.posted_by and _same_person(meta.author, meta.posted_by):
        meta.posted_by = None
        meta.date = meta.date or meta.posted_at
        meta.posted_at = None
    return meta


def _has_address(block: DiffBlock) -> bool:
    return any("@" in ln.text for f in block.files for h in f.hunks for ln in h.lines)


def _same_person(a: str, b: str) -> bool:
    na, ea = email.utils.parseaddr(a)
    nb, eb = email.utils.parseaddr(b)
    if ea and eb and "@" in ea and "@" in eb:
        return ea.lower() == eb.lower()
    return (na or a).strip().lower() == (nb or b).strip().lower()


# ---------------------------------------------------------------------------- mails

_FROM_LINE = re.compile(r"^From \S+ +\w{3} \w{3} [ \d]?\d \d\d:\d\d(:\d\d)? (\S+ )?\d{4}\s*$")
_HEADER = re.compile(r"^[\w-]+:( |$)")
_MAIL_KEYS = ("from:", "subject:", "date:", "message-id:", "to:", "received:", "return-path:")


def is_mbox(text: str) -> bool:
    first = text.lstrip("\n").split("\n", 1)[0]
    return _FROM_LINE.match(first) is not None


def looks_like_mail(text: str) -> bool:
    """RFC 822 headers at the top (a saved .eml), with at least From and Subject."""
    keys = set()
    for line in text.split("\n")[:60]:
        if line == "":
            break
        if line[:1] in " \t":
            continue
        if not _HEADER.match(line):
            return False
        keys.add(line.split(":", 1)[0].lower() + ":")
    return {"from:", "subject:"} <= keys


def split_mbox(text: str, origin: str) -> list[tuple[int, str]]:
    """Messages of an mbox as (first line number, text); corrupt structure is an error."""
    lines = text.split("\n")
    starts = [i for i, ln in enumerate(lines) if _FROM_LINE.match(ln)
              and (i == 0 or lines[i - 1].strip() == "" or True)]
    # a From_ line inside a body is only a separator when headers follow it
    real = [i for i in starts if i + 1 < len(lines) and _HEADER.match(lines[i + 1])]
    if not starts:
        raise InputError(f"{origin}: not an mbox (no 'From ' separator line)")
    msgs = []
    for k, s in enumerate(real):
        e = real[k + 1] if k + 1 < len(real) else len(lines)
        body = [re.sub(r"^>(>*From )", r"\1", ln) for ln in lines[s + 1:e]]
        msgs.append((s + 1, "\n".join(body)))
    bad = [i for i in starts if i not in real and (i == 0 or lines[i - 1].strip() == "")]
    if bad or not real:
        at = (bad or starts)[0] + 1
        raise InputError(
            f"{origin}: corrupt mbox: the message at line {at} has no mail headers",
            hint="each message must start with a 'From ' line followed by headers (From:, "
            "Subject:, Date:); re-export the mbox, e.g. `git format-patch --stdout` or "
            "lore's t.mbox.gz",
        )
    for lineno, msg in msgs:
        head = msg.split("\n\n", 1)[0].lower()
        if "subject:" not in head and "from:" not in head:
            raise InputError(
                f"{origin}: corrupt mbox: the message at line {lineno} has no From:/Subject: "
                "header",
                hint="re-export the mbox (`git format-patch --stdout base..tip > x.mbox`)",
            )
    return msgs


def _unflow(text: str, delsp: bool) -> str:
    """Undo RFC 3676 format=flowed: soft line breaks (trailing space) and space-stuffing."""
    out: list[str] = []
    buf = ""
    for line in text.split("\n"):
        if line.startswith(" "):
            line = line[1:]
        if line.endswith(" ") and line != "-- ":
            buf += line[:-1] if delsp else line
            continue
        out.append(buf + line)
        buf = ""
    if buf:
        out.append(buf)
    return "\n".join(out)


def mail_body(msg: email.message.Message) -> str:
    parts = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        fname = (part.get_filename() or "").lower()
        if not (ctype in ("text/plain", "text/x-patch", "text/x-diff", "application/x-patch",
                          "text/x-log") or fname.endswith((".patch", ".diff"))):
            continue
        payload = part.get_payload(decode=True) or b""
        charset = part.get_content_charset() or "utf-8"
        try:
            body = payload.decode(charset, "surrogateescape")
        except LookupError:
            body = payload.decode("utf-8", "surrogateescape")
        body = body.replace("\r\n", "\n")
        if (part.get_param("format") or "").lower() == "flowed":
            body = _unflow(body, (part.get_param("delsp") or "").lower() == "yes")
        parts.append(body)
    return "\n".join(parts)


@dataclass
class Parsed:
    """What one mail or page yielded: patches, or why it was skipped."""

    patches: list[Patch]
    skipped: str | None = None  # "cover letter", "reply", "no diff"
    subject: str | None = None


def parse_mail(raw: str, origin: str, *, skip_replies: bool = False) -> Parsed:
    """One RFC 822 message (git format-patch output, a saved .eml, an mbox message).

    In an mbox (``skip_replies``) a reply is review, not a patch of the series: it is
    skipped unparsed (its quote is often trimmed). A single saved reply is parsed: it may
    be the only copy of the patch someone has.
    """
    msg = email.message_from_string(raw, policy=email.policy.compat32)
    subject = _header(msg, "Subject")
    sender = person(_header(msg, "From")) if msg.get("From") else None
    date = parse_date(_header(msg, "Date")) if msg.get("Date") else None
    body = mail_body(msg)
    lines = body.split("\n")
    meta = _Meta()
    if not _apply_subject(meta, subject):
        meta.subject = re.sub(r"^\s*(?:(?:re|fwd?)\s*:\s*)*", "", subject, flags=re.I).strip()
    is_reply = bool(re.match(r"^\s*(re|aw)\s*:", subject, re.I))
    if meta.index == 0:
        return Parsed([], "cover letter", meta.subject)
    if is_reply and skip_replies:
        return Parsed([], "reply", meta.subject)
    blocks = find_diffs(lines, origin)
    if not blocks:
        return Parsed([], "reply" if is_reply else "no diff", meta.subject)
    patches = []
    seen = set()
    for block in blocks:
        bm = text_metadata(lines, block)
        author = sender
        adate = date
        posted_by = posted_at = None
        # in-body From:/Date: (git am) and quoted attributions name the real author
        if bm.author and (block.depth > 0 or _in_body_header(lines, block, "From:")):
            author, adate = bm.author, bm.date
            posted_by, posted_at = sender, date
            if author and sender and _same_person(author, sender):
                posted_by = posted_at = None
                adate = adate or date
        patch = Patch(
            subject=meta.subject or bm.subject or origin,
            files=tuple(block.files),
            author=author,
            date=adate,
            version=meta.version,
            index=meta.index,
            total=meta.total,
            tags=meta.tags,
            origin=origin,
            posted_by=posted_by,
            posted_at=posted_at,
            repairs=tuple(block.repairs),
        )
        if patch.content_hash not in seen:
            seen.add(patch.content_hash)
            patches.append(patch)
    return Parsed(patches, "reply" if is_reply else None, meta.subject)


def _in_body_header(lines: Sequence[str], block: DiffBlock, key: str) -> bool:
    return any(_QUOTE_PREFIX.sub("", ln).startswith(key) for ln in lines[: block.start])


def _header(msg: email.message.Message, key: str) -> str:
    value = msg.get(key)
    if value is None:
        return ""
    parts = []
    for chunk, cs in email.header.decode_header(str(value)):
        if isinstance(chunk, bytes):
            parts.append(chunk.decode(cs or "utf-8", "replace"))
        else:
            parts.append(chunk)
    return re.sub(r"\s*\n\s*", " ", "".join(parts)).strip()


_PIPERMAIL_FOOTER = re.compile(r"^More information about the \S+ mailing list", re.M)
_BRACKETED_OBFUSCATED = re.compile(r"<([\w.+=-]+) at ([\w-]+(?:\.[\w-]+)+)>")


def is_pipermail(text: str) -> bool:
    """A Mailman 2 archive page: the footer, or the 'Name  user at domain' header line."""
    head = text.split("\n")[:6]
    return bool(_PIPERMAIL_FOOTER.search(text)) or any(_PIPERMAIL_WHO.match(ln) for ln in head)


def parse_rendering(text: str, origin: str) -> Parsed:
    """A saved web page or post (archive, patch viewer, quoting reply) or a plain diff."""
    fixed = 0
    if is_pipermail(text):
        # pipermail rewrote every address, also inside the diff ("+M: A <a at b.org>");
        # only the bracketed form is undone: "look at foo.c" in a comment must survive
        text, fixed = _BRACKETED_OBFUSCATED.subn(r"<\1@\2>", text)
    lines = text.split("\n")
    blocks = find_diffs(lines, origin)
    if not blocks:
        return Parsed([], "no diff")
    patches: list[Patch] = []
    seen: set[str] = set()
    prev_end = 0
    for block in blocks:
        meta = text_metadata(lines, block)
        # a later diff on the same page takes its subject from the text since the last one
        if patches:
            local = text_metadata(lines[prev_end:], DiffBlock(block.files, block.depth,
                                                              block.start - prev_end, 0))
            if local.subject:
                meta = local
        prev_end = block.end
        patch = Patch(
            subject=meta.subject or "",
            files=tuple(block.files),
            author=meta.author,
            date=meta.date,
            version=meta.version,
            index=meta.index,
            total=meta.total,
            tags=meta.tags,
            origin=origin,
            posted_by=meta.posted_by,
            posted_at=meta.posted_at,
            repairs=tuple(block.repairs) + ((f"undid pipermail's address obfuscation "
                                             f"({fixed} <user at domain> in the page)",)
                                            if fixed and _has_address(block) else ()),
        )
        if patch.content_hash in seen:
            # the same patch quoted again in a reply on the same page: it may say more
            # (a reply's attribution carries the original date)
            k = next(i for i, p in enumerate(patches) if p.content_hash == patch.content_hash)
            first = patches[k]
            if patch.author and (first.author is None or _same_person(first.author, patch.author)):
                patches[k] = replace(first, author=first.author or patch.author,
                                     date=first.date or patch.date)
            continue
        seen.add(patch.content_hash)
        patches.append(patch)
    return Parsed(patches)
