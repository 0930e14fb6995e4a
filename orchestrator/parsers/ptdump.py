"""Parse an arm64 kernel page-table dump (/sys/kernel/debug/kernel_page_tables).

Why: the patches under test change *how* the vmalloc area is mapped (PTEs, contiguous
64K CON runs, 2M blocks). The dump says it directly; this module turns it into sections,
entries and per-section summaries: bytes per level and per kind, and the share of the
vmalloc area each kind maps.

Format (arch/arm64/mm/ptdump.c, note_page()/dump_prot())::

    ---[ vmalloc() area ]---
    0xffff800080000000-0xffff800080010000          64K PTE       RW NX SHD AF NG    CON  UXN    MEM/NORMAL

A header ``---[ name ]---`` is printed at every address marker, so "Linear Mapping end"
heads the gap after the linear map, "vmalloc() end" the gap after the vmalloc area. An
entry is ``0x%016lx-0x%016lx``, ``%9lu`` + unit (K M G T P E), the level (PGD P4D PUD PMD
PTE) and, when the entry is not empty, one token per prot bit: F (not valid), USR, ro/RW,
NX/x, SHD, AF, NG, CON, BLK (bit 1 clear = block), UXN, GP, and the memory type. Unknown
extra tokens are kept, not rejected (newer kernels add bits).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import InputError

LEVELS = ("PGD", "P4D", "PUD", "PMD", "PTE")
KNOWN_FLAGS = frozenset(
    {"F", "USR", "ro", "RW", "NX", "x", "SHD", "AF", "NG", "CON", "BLK", "UXN", "GP"}
)
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}
KINDS = ("pte", "cont", "block")

_HEADER = re.compile(r"^---\[ (?P<name>.+?) \]---\s*$")
_ENTRY = re.compile(
    r"^0x(?P<start>[0-9a-f]{16})-0x(?P<end>[0-9a-f]{16})\s+(?P<size>\d+)(?P<unit>[KMGTPE])"
    r"\s+(?P<level>PGD|P4D|PUD|PMD|PTE)(?P<rest>(?:\s.*)?)$"
)
# Mail quoting ("> ", ">> ") in front of a pasted dump.
_QUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+")
# Lines that can interleave with a dump read on a serial console: kernel messages.
_KERNEL_LINE = re.compile(r"^(<\d>)?\[\s*\d+\.\d+\]")
_WX_FILE = re.compile(r"^\s*(SUCCESS|FAILED)\s*$")
_WX_DMESG = re.compile(
    r"Checked W\+X mappings: (?:(passed)|(FAILED), (\d+) W\+X pages found"
    r"(?:, (\d+) non-UXN pages found)?)"
)


@dataclass
class Entry:
    """One line of the dump: a run of same-level, same-prot address space."""

    start: int
    end: int  # exclusive; 2**64 for a range that ends at the top of the address space
    level: str
    flags: list[str]
    memtype: str | None
    extra: list[str]
    line: int

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def mapped(self) -> bool:
        """A valid mapping: prot bits printed and no F (invalid) flag."""
        return bool(self.flags or self.memtype) and "F" not in self.flags

    @property
    def kind(self) -> str | None:
        """block (BLK, also contiguous blocks), cont (CON pages), pte; None if unmapped."""
        if not self.mapped:
            return None
        if "BLK" in self.flags:
            return "block"
        if "CON" in self.flags:
            return "cont"
        return "pte"

    @property
    def writable_executable(self) -> bool:
        """RW and executable at EL1 (no NX): what the W+X check complains about."""
        return self.mapped and "RW" in self.flags and "x" in self.flags

    def to_json(self) -> dict[str, Any]:
        return {
            "start": f"0x{self.start:016x}",
            "end": f"0x{self.end % (1 << 64):016x}",
            "size": self.size,
            "level": self.level,
            "flags": self.flags,
            "memtype": self.memtype,
            "extra": self.extra,
            "mapped": self.mapped,
            "kind": self.kind,
            "line": self.line,
        }


@dataclass
class SectionSummary:
    """Bytes in one section, split by level and by kind, and the shares of the section."""

    span: int
    mapped: int
    by_level: dict[str, int]
    by_kind: dict[str, int]
    cont_block: int  # bytes in blocks that are also CON (counted under "block")
    entries: int
    mapped_entries: int
    wx_entries: int

    def share(self, kind: str, of: str = "span") -> float:
        """Fraction of the section (``of="span"``) or of its mapped bytes mapped by ``kind``."""
        whole = self.span if of == "span" else self.mapped
        return self.by_kind.get(kind, 0) / whole if whole else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "span": self.span,
            "mapped": self.mapped,
            "by_level": self.by_level,
            "by_kind": self.by_kind,
            "cont_block": self.cont_block,
            "share_of_span": {k: self.share(k, "span") for k in KINDS},
            "share_of_mapped": {k: self.share(k, "mapped") for k in KINDS},
            "entries": self.entries,
            "mapped_entries": self.mapped_entries,
            "wx_entries": self.wx_entries,
        }


@dataclass
class Section:
    """The entries after one ``---[ name ]---`` header."""

    name: str
    entries: list[Entry] = field(default_factory=list)

    def summary(self) -> SectionSummary:
        by_level = {lvl: 0 for lvl in LEVELS}
        by_kind = {k: 0 for k in KINDS}
        cont_block = mapped = mapped_entries = wx = 0
        for e in self.entries:
            if not e.mapped:
                continue
            mapped += e.size
            mapped_entries += 1
            by_level[e.level] += e.size
            by_kind[e.kind] += e.size
            if e.kind == "block" and "CON" in e.flags:
                cont_block += e.size
            wx += e.writable_executable
        return SectionSummary(
            span=sum(e.size for e in self.entries),
            mapped=mapped,
            by_level=by_level,
            by_kind=by_kind,
            cont_block=cont_block,
            entries=len(self.entries),
            mapped_entries=mapped_entries,
            wx_entries=wx,
        )

    def to_json(self, entries: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "summary": self.summary().to_json()}
        if entries:
            out["entries"] = [e.to_json() for e in self.entries]
        return out


@dataclass
class WXResult:
    """The W+X check: from check_wx_pages (SUCCESS/FAILED) or the dmesg line."""

    passed: bool
    source: str  # "check_wx_pages" or "dmesg"
    wx_pages: int | None = None
    uxn_pages: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "source": self.source,
            "wx_pages": self.wx_pages,
            "uxn_pages": self.uxn_pages,
        }


@dataclass
class PtDump:
    """One parsed dump."""

    sections: list[Section]
    skipped_lines: list[int]  # interleaved kernel messages, ignored
    warnings: list[str]
    wx: WXResult | None = None

    def section(self, name: str) -> Section:
        for s in self.sections:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def vmalloc(self) -> SectionSummary | None:
        """Summary of the vmalloc area (None if the dump has no "vmalloc() area" section)."""
        try:
            return self.section("vmalloc() area").summary()
        except KeyError:
            return None

    @property
    def wx_entries(self) -> list[Entry]:
        return [e for s in self.sections for e in s.entries if e.writable_executable]

    def to_json(self, entries: bool = False) -> dict[str, Any]:
        vm = self.vmalloc
        return {
            "sections": [s.to_json(entries) for s in self.sections],
            "vmalloc": vm.to_json() if vm else None,
            "wx": self.wx.to_json() if self.wx else None,
            "wx_entries_in_dump": len(self.wx_entries),
            "skipped_lines": self.skipped_lines,
            "warnings": self.warnings,
        }


def parse_wx(text: str) -> WXResult | None:
    """The W+X check result in ``text``: check_wx_pages output or the dmesg line.

    The last result wins (a loop reading check_wx_pages prints one per read).
    """
    result = None
    for line in text.splitlines():
        m = _WX_FILE.match(line)
        if m:
            result = WXResult(passed=m.group(1) == "SUCCESS", source="check_wx_pages")
            continue
        m = _WX_DMESG.search(line)
        if m:
            if m.group(1):
                result = WXResult(True, "dmesg", 0, 0)
            else:
                uxn = int(m.group(4)) if m.group(4) else None
                result = WXResult(False, "dmesg", int(m.group(3)), uxn)
    return result


def parse_ptdump(text: str, *, wx_text: str | None = None, source: str = "input") -> PtDump:
    """Parse one arm64 kernel_page_tables dump; ``wx_text`` is check_wx_pages output or dmesg.

    Raises InputError when ``text`` is not an arm64 ptdump (another architecture's format,
    an empty file, an error message), rather than returning a summary of nothing.
    """
    sections: list[Section] = []
    skipped: list[int] = []
    bad: list[tuple[int, str]] = []
    warnings: list[str] = []
    entries_seen = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _QUOTE.sub("", raw.rstrip())  # a dump pasted into a mail reply
        if not line.strip():
            continue
        m = _HEADER.match(line)
        if m:
            sections.append(Section(m["name"]))
            continue
        m = _ENTRY.match(line)
        if m:
            entries_seen += 1
            start, end = int(m["start"], 16), int(m["end"], 16)
            if end == 0:  # the walk of the top of the address space ends at 2**64
                end = 1 << 64
            printed = int(m["size"]) * UNITS[m["unit"]]
            if end - start != printed:
                warnings.append(
                    f"line {lineno}: range is {end - start} bytes but the size column says "
                    f"{m['size']}{m['unit']}"
                )
            flags, memtype, extra = _split_flags(m["rest"])
            if not sections:
                sections.append(Section("(before first header)"))
                warnings.append(f"line {lineno}: entry before any ---[ ... ]--- header")
            sections[-1].entries.append(
                Entry(start, end, m["level"], flags, memtype, extra, lineno)
            )
            continue
        if _KERNEL_LINE.match(line) or _WX_FILE.match(line) or _WX_DMESG.search(line):
            skipped.append(lineno)
            continue
        bad.append((lineno, line))
    if not entries_seen or not sections:
        first = bad[0][1][:80] if bad else "(empty)"
        raise InputError(
            f"{source} is not an arm64 kernel page-table dump (no '0x...-0x... <size> <LEVEL>' "
            f"entries under ---[ ... ]--- headers; first line: {first!r})",
            hint="give the contents of /sys/kernel/debug/kernel_page_tables read on an arm64 "
            "kernel with CONFIG_PTDUMP_DEBUGFS=y",
        )
    if len(bad) > max(2, entries_seen // 10):
        raise InputError(
            f"{source} does not look like an arm64 kernel page-table dump: {len(bad)} of "
            f"{len(bad) + entries_seen} lines are not arm64 ptdump entries "
            f"(line {bad[0][0]}: {bad[0][1][:80]!r})",
            hint="other architectures' dumps (x86, riscv, arm) have different columns; "
            "give an arm64 dump",
        )
    for lineno, line in bad:
        warnings.append(f"line {lineno}: not a ptdump line, ignored: {line[:80]!r}")
    _check_order(sections, warnings)
    wx = parse_wx(wx_text) if wx_text is not None else None
    return PtDump(sections=sections, skipped_lines=skipped, warnings=warnings, wx=wx)


def split_dumps(text: str) -> list[str]:
    """Split the output of several reads (a ptdump loop) into one text per dump.

    A dump starts at its first header; a header seen again starts the next dump. Each dump
    ends at its last header or entry line: what follows (shell output, markers, kernel
    messages) until the next dump is dropped; lines *inside* a dump are kept and judged by
    :func:`parse_ptdump`.
    """
    dumps: list[list[str]] = []
    ends: list[int] = []
    first_header: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        m = _HEADER.match(line)
        if m:
            if first_header is None:
                first_header = m["name"]
                dumps.append([])
                ends.append(0)
            elif m["name"] == first_header:
                dumps.append([])
                ends.append(0)
        if dumps:
            dumps[-1].append(raw)
            if m or _ENTRY.match(line):
                ends[-1] = len(dumps[-1])
    return ["\n".join(d[:end]) + "\n" for d, end in zip(dumps, ends, strict=True)]


def _split_flags(rest: str) -> tuple[list[str], str | None, list[str]]:
    flags: list[str] = []
    memtype = None
    extra: list[str] = []
    for tok in rest.split():
        if tok in KNOWN_FLAGS:
            flags.append(tok)
        elif tok.startswith(("MEM/", "DEVICE/")):
            memtype = tok
        else:
            extra.append(tok)
    return flags, memtype, extra


def _check_order(sections: list[Section], warnings: list[str]) -> None:
    """Entries must be contiguous and increasing: a gap means lost lines."""
    prev: Entry | None = None
    for s in sections:
        for e in s.entries:
            if e.end <= e.start:
                warnings.append(f"line {e.line}: empty or reversed range")
            if prev is not None and e.start != prev.end:
                warnings.append(
                    f"line {e.line}: starts at 0x{e.start:016x}, previous entry ended at "
                    f"0x{prev.end % (1 << 64):016x} (lines missing?)"
                )
            prev = e


@dataclass
class PtDumpSeries:
    """Several reads of the dump (a ptdump loop), plus the W+X result printed with them."""

    dumps: list[PtDump]
    wx: WXResult | None

    def to_json(self, entries: bool = False) -> dict[str, Any]:
        vms = [d.vmalloc for d in self.dumps]
        return {
            "dumps": len(self.dumps),
            # the last read is the state after the workload; every read is kept below
            "vmalloc": vms[-1].to_json() if vms and vms[-1] else None,
            "per_dump": [d.to_json(entries) for d in self.dumps],
            "wx": self.wx.to_json() if self.wx else None,
            "wx_entries_in_dump": max((len(d.wx_entries) for d in self.dumps), default=0),
        }


def parse(text: str, *, source: str = "guest output") -> PtDumpSeries:
    """Parse what a ptdump guest test printed: one or more dumps, W+X results in between.

    Lines before the first ``---[ ... ]---`` header (shell output, markers) are ignored;
    each dump must be an arm64 dump (else InputError, as for :func:`parse_ptdump`). The
    W+X result is the last one found anywhere in ``text`` (check_wx_pages' SUCCESS/FAILED
    or the kernel's "Checked W+X mappings" line).
    """
    parts = split_dumps(text)
    if not parts:
        parse_ptdump(text, source=source)  # raises the "not an arm64 dump" InputError
    dumps = [parse_ptdump(p, source=f"{source} (dump {i + 1})") for i, p in enumerate(parts)]
    return PtDumpSeries(dumps=dumps, wx=parse_wx(text))
