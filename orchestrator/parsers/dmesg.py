"""Cut kernel reports (oops, BUG, WARNING, KASAN, panic, lockups, ...) out of a kernel log.

Why: a baseline and a patched kernel are compared not only on numbers but on what the
kernel complained about. Each report becomes a :class:`KernelMessage` with its kind, its
severity, the whole multi-line block and a *signature*: the report's title line and top
stack frames with everything run-specific (addresses, offsets, numbers, CPU, PID, task
names, time stamps) stripped. Two runs that hit the same bug produce the same signature,
so "new in patched" / "gone in patched" is a set difference.

The message kinds are data (``kernel_messages.toml`` next to this file): adding a kind or
tuning a pattern needs no code change.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError
from orchestrator.parsers.kmsg import LogLine, clean_lines

TABLE_PATH = Path(__file__).with_name("kernel_messages.toml")

SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2, "critical": 3}

# A call trace frame: " func+0x1c/0x40", " func+0x1c/0x40 [module]", " func+0x1c/0x40 (P)",
# older arm64 "[<ffff800008012345>] func+0x1c/0x40".
_FRAME = re.compile(
    r"^\s*(?:\[<[0-9a-f]+>\]\s*)?(?:\?\s+)?([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+"
    r"(?:\s+\[([\w-]+)\])?(?:\s+\([A-Z]\))?\s*$"
)
_TRACE_START = re.compile(r"^(Call trace:|Call Trace:)\s*$")
_TRACE_MARKUP = re.compile(r"^\s*(</?(IRQ|TASK|NMI|SOFTIRQ)>|\(stack is not available\))\s*$")
_SYMBOL_SUFFIX = re.compile(r"\.(constprop|isra|part|cold|llvm|lto_priv)(\.\d+)*$")
_PC = re.compile(r"^pc : ([A-Za-z_.$][\w.$]*)\+0x")
_WX = re.compile(
    r"Checked W\+X mappings: (?:(passed), no W\+X pages found"
    r"|(FAILED), (\d+) W\+X pages found(?:, (\d+) non-UXN pages found)?)"
)


@dataclass(frozen=True)
class MessageKind:
    """One row of the message-kind table (see kernel_messages.toml for the fields)."""

    name: str
    severity: str
    ends_run: bool
    start: tuple[re.Pattern, ...]
    end: tuple[re.Pattern, ...] = ()
    prelude: re.Pattern | None = None
    prelude_lines: int = 0
    heuristic: str = "trace"
    continue_: tuple[re.Pattern, ...] = ()
    absorbs: tuple[str, ...] = ()
    stop: tuple[re.Pattern, ...] = ()
    max_lines: int = 300

    def match_start(self, text: str) -> re.Match | None:
        for pat in self.start:
            m = pat.search(text)
            if m:
                return m
        return None


@dataclass(frozen=True)
class MessageTable:
    kinds: tuple[MessageKind, ...]
    normalize: tuple[tuple[re.Pattern, str], ...]
    frames_top: int
    frames_ignore: frozenset[str]
    expected: tuple[tuple[str, re.Pattern, str], ...]

    def kind(self, name: str) -> MessageKind:
        for k in self.kinds:
            if k.name == name:
                return k
        raise KeyError(name)

    def match_start(self, text: str) -> tuple[MessageKind, re.Match] | None:
        for k in self.kinds:
            m = k.match_start(text)
            if m:
                return k, m
        return None


def load_table(path: str | Path = TABLE_PATH) -> MessageTable:
    """Read and compile a message-kind table; a bad table is an InputError naming the row."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(
            f"cannot read message table {path}: {exc}",
            hint="fix the TOML syntax; see the header of kernel_messages.toml",
        ) from exc
    kinds = []
    for row in data.get("kind", []):
        name = row.get("name", "?")
        try:
            if row["severity"] not in SEVERITY_RANK:
                raise ValueError(
                    f"severity {row['severity']!r} is not one of {list(SEVERITY_RANK)}"
                )
            if row.get("heuristic", "trace") not in ("trace", "marker", "eof", "line"):
                raise ValueError(f"heuristic {row['heuristic']!r} is not trace/marker/eof/line")
            kinds.append(
                MessageKind(
                    name=name,
                    severity=row["severity"],
                    ends_run=bool(row.get("ends_run", False)),
                    start=tuple(re.compile(p) for p in row["start"]),
                    end=tuple(re.compile(p) for p in row.get("end", [])),
                    prelude=re.compile(row["prelude"]) if row.get("prelude") else None,
                    prelude_lines=int(row.get("prelude_lines", 1 if row.get("prelude") else 0)),
                    heuristic=row.get("heuristic", "trace"),
                    continue_=tuple(re.compile(p) for p in row.get("continue", [])),
                    absorbs=tuple(row.get("absorbs", [])),
                    stop=tuple(re.compile(p) for p in row.get("stop", [])),
                    max_lines=int(row.get("max_lines", 300)),
                )
            )
        except (KeyError, ValueError, re.error) as exc:
            raise InputError(
                f"message table {path}: kind {name!r} is invalid: {exc}",
                hint="every kind needs name, severity and start; patterns must be valid regexes",
            ) from exc
    names = {k.name for k in kinds}
    for k in kinds:
        unknown = set(k.absorbs) - names
        if unknown:
            raise InputError(
                f"message table {path}: kind {k.name!r} absorbs unknown kinds {sorted(unknown)}",
                hint="absorbs must name kinds of the same table",
            )
    try:
        normalize = tuple(
            (re.compile(r["pattern"]), r["replace"]) for r in data.get("normalize", [])
        )
        expected = tuple(
            (r["kind"], re.compile(r["signature"]), r["reason"]) for r in data.get("expected", [])
        )
    except (KeyError, re.error) as exc:
        raise InputError(
            f"message table {path}: bad normalize/expected row: {exc}",
            hint="normalize rows need pattern and replace; expected rows kind, signature, reason",
        ) from exc
    frames = data.get("frames", {})
    return MessageTable(
        kinds=tuple(kinds),
        normalize=normalize,
        frames_top=int(frames.get("top", 5)),
        frames_ignore=frozenset(frames.get("ignore", [])),
        expected=expected,
    )


@lru_cache(maxsize=1)
def default_table() -> MessageTable:
    return load_table(TABLE_PATH)


@dataclass
class KernelMessage:
    """One kernel report: a block of consecutive log lines.

    ``first_line``/``last_line`` are 1-based line numbers in the input. ``ended_by`` says
    how the block was closed: ``marker`` (its end line), ``heuristic`` (the call trace
    ended), ``next`` (another report started), ``stop`` (a line that never belongs to it,
    like a new boot's banner), ``eof``, or ``max_lines`` (then
    ``truncated`` is true too, as it is when a block that needs an end marker hit the end
    of the log first).
    """

    kind: str
    severity: str
    ends_run: bool
    title: str
    lines: list[str]
    first_line: int
    last_line: int
    timestamp: float | None
    frames: list[str]
    signature: str
    signature_id: str
    ended_by: str
    truncated: bool = False
    absorbed: list[str] = field(default_factory=list)
    expected: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WXCheck:
    """Result of the arm64 W+X check ("Checked W+X mappings: ...")."""

    passed: bool
    wx_pages: int
    uxn_pages: int | None
    line: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DmesgReport:
    """Everything found in one log."""

    messages: list[KernelMessage]
    wx_checks: list[WXCheck]
    lines: int

    @property
    def worst_severity(self) -> str | None:
        """Highest severity among the unexpected messages (None when there are none)."""
        sev = [m.severity for m in self.messages if m.expected is None]
        return max(sev, key=SEVERITY_RANK.__getitem__) if sev else None

    @property
    def ends_run(self) -> bool:
        return any(m.ends_run for m in self.messages)

    def signatures(self, include_expected: bool = False) -> Counter:
        """How often each signature occurs (expected ones left out unless asked)."""
        return Counter(m.signature for m in self.messages if include_expected or m.expected is None)

    def by_kind(self) -> dict[str, int]:
        return dict(Counter(m.kind for m in self.messages))

    def to_json(self) -> dict[str, Any]:
        last_wx = self.wx_checks[-1].to_json() if self.wx_checks else None
        return {
            "lines": self.lines,
            "worst_severity": self.worst_severity,
            "ends_run": self.ends_run,
            # the guest died or must not be trusted any more (panic, oops)
            "crashed": self.ends_run,
            "fatal": self.worst_severity == "critical",
            "unexpected": sum(1 for m in self.messages if m.expected is None),
            "wx": last_wx,
            "by_kind": self.by_kind(),
            "messages": [m.to_json() for m in self.messages],
            "wx_checks": [w.to_json() for w in self.wx_checks],
        }


@dataclass
class SignatureDiff:
    """Signatures of a baseline and a patched run side by side."""

    new: list[str]
    gone: list[str]
    common: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare(baseline: DmesgReport, patched: DmesgReport) -> SignatureDiff:
    """Which (unexpected) reports appear only in the patched run, only in the baseline, in both."""
    b, p = set(baseline.signatures()), set(patched.signatures())
    return SignatureDiff(new=sorted(p - b), gone=sorted(b - p), common=sorted(b & p))


def normalize(text: str, table: MessageTable | None = None) -> str:
    """Strip run-specific details from one line (the table's normalize rules, in order)."""
    table = table or default_table()
    for pat, rep in table.normalize:
        text = pat.sub(rep, text)
    return text.strip()


def frame_function(line: str) -> tuple[str, str | None] | None:
    """(function, module) of a call trace line, or None if the line is not a frame."""
    m = _FRAME.match(line)
    if not m:
        return None
    return _SYMBOL_SUFFIX.sub("", m.group(1)), m.group(2)


def parse_dmesg(
    text: str, *, table: MessageTable | None = None, unwrap: bool | None = None
) -> DmesgReport:
    """Find every known kernel report in ``text`` (dmesg, console log, or a mailed log)."""
    table = table or default_table()
    lines = clean_lines(text, unwrap=unwrap)
    messages: list[KernelMessage] = []
    wx_checks: list[WXCheck] = []
    for ln in lines:
        w = _WX.search(ln.text)
        if w:
            failed = w.group(2) is not None
            wx_checks.append(
                WXCheck(
                    passed=not failed,
                    wx_pages=int(w.group(3)) if failed else 0,
                    uxn_pages=int(w.group(4)) if failed and w.group(4) else (None if failed else 0),
                    line=ln.lineno,
                )
            )
    consumed_until = -1  # index of the last line that belongs to an emitted block
    i = 0
    while i < len(lines):
        ln = lines[i]
        hit = table.match_start(ln.text)
        if not hit:
            i += 1
            continue
        kind, m = hit
        first = i
        for back in range(1, kind.prelude_lines + 1):
            j = i - back
            if (
                j <= consumed_until
                or j < 0
                or not kind.prelude
                or not kind.prelude.search(lines[j].text)
            ):
                break
            first = j
        last, ended_by, truncated, absorbed = _extend(lines, i, kind, table)
        block = lines[first : last + 1]
        messages.append(_make_message(kind, m, block, ended_by, truncated, absorbed, table))
        consumed_until = last
        i = last + 1
    return DmesgReport(messages=messages, wx_checks=wx_checks, lines=len(text.splitlines()))


def _extend(
    lines: list[LogLine], start: int, kind: MessageKind, table: MessageTable
) -> tuple[int, str, bool, list[str]]:
    """Index of the last line of the block opened at ``start``, and how it ended.

    Returns (last index, ended_by, truncated, kinds absorbed on the way).
    """
    absorbed: list[str] = []
    if kind.heuristic == "line":
        return start, "heuristic", False, absorbed
    in_trace = trace_done = False
    frames = 0
    n = len(lines)
    j = start + 1
    while j < n:
        if j - start >= kind.max_lines:
            return j - 1, "max_lines", True, absorbed
        text = lines[j].text
        if any(p.search(text) for p in kind.end):
            return j, "marker", False, absorbed
        if any(p.search(text) for p in kind.stop):
            return (
                j - 1,
                "stop",
                bool(kind.end) and not trace_done and kind.heuristic != "eof",
                absorbed,
            )
        other = table.match_start(text)
        if other is not None:
            if other[0].name in kind.absorbs:
                absorbed.append(other[0].name)
            else:
                last = _trim_prelude(lines, start, j - 1, other[0])
                return last, "next", bool(kind.end) and not trace_done, absorbed
        if kind.heuristic == "trace":
            if _TRACE_START.match(text):
                in_trace, frames = True, 0
            elif in_trace:
                if frame_function(text) or _TRACE_MARKUP.match(text):
                    frames += 1
                elif frames:
                    in_trace, trace_done = False, True
                    if not _continues(kind, text):
                        return j - 1, "heuristic", False, absorbed
            elif trace_done and not _continues(kind, text):
                return j - 1, "heuristic", False, absorbed
        j += 1
    if kind.heuristic == "eof":
        return n - 1, "eof", False, absorbed
    complete = trace_done or (in_trace and frames > 0 and not kind.end)
    return n - 1, "eof", not complete, absorbed


def _continues(kind: MessageKind, text: str) -> bool:
    return any(p.search(text) for p in kind.continue_)


def _trim_prelude(lines: list[LogLine], start: int, last: int, nxt: MessageKind) -> int:
    """Give the next block back its prelude lines (the "cut here" / "=====" banner)."""
    n = 0
    while (
        nxt.prelude is not None
        and n < nxt.prelude_lines
        and last > start
        and nxt.prelude.search(lines[last].text)
    ):
        last -= 1
        n += 1
    # Also drop blank lines between the two blocks.
    while last > start and not lines[last].text.strip():
        last -= 1
    return last


def _make_message(
    kind: MessageKind,
    m: re.Match,
    block: list[LogLine],
    ended_by: str,
    truncated: bool,
    absorbed: list[str],
    table: MessageTable,
) -> KernelMessage:
    start_line = next(ln for ln in block if kind.match_start(ln.text))
    title = start_line.text[m.start() :].strip()
    frames: list[str] = []
    pc: str | None = None
    in_trace = False
    for ln in block:
        if pc is None:
            pm = _PC.match(ln.text)
            if pm:
                pc = _SYMBOL_SUFFIX.sub("", pm.group(1))
        if _TRACE_START.match(ln.text):
            if frames:  # only the first call trace of a block makes the signature
                break
            in_trace = True
            continue
        if in_trace:
            f = frame_function(ln.text)
            if f:
                func, mod = f
                if func not in table.frames_ignore:
                    frames.append(f"{func} [{mod}]" if mod else func)
            elif not _TRACE_MARKUP.match(ln.text) and frames:
                in_trace = False
    if not frames:
        # KFENCE (and some lockdep lines) print frames with no "Call trace:" header: take
        # the first run of frame lines in the block.
        for ln in block:
            f = frame_function(ln.text)
            if f:
                func, mod = f
                if func not in table.frames_ignore:
                    frames.append(f"{func} [{mod}]" if mod else func)
            elif frames:
                break
    top = frames[: table.frames_top]
    if pc and (not top or top[0].split(" ")[0] != pc) and pc not in table.frames_ignore:
        top = [f"pc:{pc}"] + top
    sig = f"{kind.name}: {normalize(title, table)}"
    if top:
        sig += " | " + " < ".join(top)
    sig_id = hashlib.sha1(sig.encode()).hexdigest()[:12]
    expected = None
    for ekind, epat, reason in table.expected:
        if ekind == kind.name and epat.search(sig):
            expected = reason
            break
    return KernelMessage(
        kind=kind.name,
        severity=kind.severity,
        ends_run=kind.ends_run or any(table.kind(a).ends_run for a in absorbed),
        title=title,
        lines=[ln.text for ln in block],
        first_line=block[0].lineno,
        last_line=block[-1].lineno,
        timestamp=start_line.timestamp,
        frames=frames,
        signature=sig,
        signature_id=sig_id,
        ended_by=ended_by,
        truncated=truncated,
        absorbed=absorbed,
        expected=expected,
    )


# Short name used by the runner.
parse = parse_dmesg
