"""Kernel log lines as people actually hand them over.

The same printk record reaches us in many dresses: ``dmesg`` output with
``[    1.234567]`` timestamps, a serial console with ``<4>`` levels, kernels built with
``CONFIG_PRINTK_CALLER`` adding ``[    T123]``/``[     C5]``, a ``journalctl -k`` line with a
syslog prefix, or a log pasted into a mail: quoted with ``> `` (possibly nested) and wrapped
by the mail client at ~72-78 columns. Every parser here first turns raw text into
:class:`LogLine` objects so the message patterns only ever see the message text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# "> ", ">> ", "> > " at the start of a line (mail quoting), possibly indented.
_QUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+")
# "<4>" console log level (also "<12>" syslog facility*8+level).
_LEVEL = re.compile(r"^<(\d{1,3})>")
# "[    1.234567]" printk time stamp.
_TIMESTAMP = re.compile(r"^\[\s*(\d+\.\d+)\]\s?")
# "[    T123]" / "[     C5]" printk caller id (CONFIG_PRINTK_CALLER).
_CALLER = re.compile(r"^\[\s*([TC]\d+)\]\s?")
# "Nov 25 00:00:00 host kernel: " (syslog / journalctl -k short format).
_SYSLOG = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ kernel: ")
# Narrowest mail wrap width we undo (clients wrap at 72-78 columns).
_MIN_WRAP_WIDTH = 68
# "kern  :warn  : " (dmesg -x, --decode).
_DECODED = re.compile(
    r"^(?:kern|user|mail|daemon|auth|syslog|lpr|news|uucp|cron|authpriv|ftp|local\d)\s*:"
    r"(?:emerg|alert|crit|err|warn|notice|info|debug)\s*: "
)
_LEVEL_NAMES = {
    "emerg": 0,
    "alert": 1,
    "crit": 2,
    "err": 3,
    "warn": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}
# "host kernel: " after a monotonic time stamp (journalctl -k -o short-monotonic).
_JOURNAL_HOST = re.compile(r"^\S+ kernel: ")
# ANSI escape sequences that serial consoles sprinkle around.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class LogLine:
    """One kernel log line with its printk decorations split off.

    ``lineno`` is the 1-based line number in the input where the line starts (a line
    re-joined from a mail wrap keeps the number of its first part).
    """

    lineno: int
    text: str
    timestamp: float | None = None
    level: int | None = None
    caller: str | None = None
    quoted: bool = False


def strip_line(raw: str, lineno: int = 0) -> LogLine:
    """Split one raw line into its decorations and the message text."""
    line = _ANSI.sub("", raw.rstrip("\r\n")).replace("\r", "")
    quoted = False
    m = _QUOTE.match(line)
    if m:
        quoted = True
        line = line[m.end() :]
    m = _SYSLOG.match(line)
    if m:
        line = line[m.end() :]
    level = None
    m = _DECODED.match(line)
    if m:
        level = _LEVEL_NAMES[m.group(0).split(":")[1].strip()]
        line = line[m.end() :]
    m = _LEVEL.match(line)
    if m:
        level = int(m.group(1)) & 7
        line = line[m.end() :]
    timestamp = None
    m = _TIMESTAMP.match(line)
    if m:
        timestamp = float(m.group(1))
        line = line[m.end() :]
        m = _JOURNAL_HOST.match(line)
        if m:
            line = line[m.end() :]
    caller = None
    m = _CALLER.match(line.lstrip(" ") if timestamp is not None else line)
    if m:
        caller = m.group(1)
        line = (line.lstrip(" ") if timestamp is not None else line)[m.end() :]
    # dmesg prints "[ts] [caller] msg"; some consoles "<4>[ts][caller] msg": the level may
    # also come after the timestamp in `dmesg -r`-style captures.
    if level is None:
        m = _LEVEL.match(line)
        if m:
            level = int(m.group(1)) & 7
            line = line[m.end() :]
    return LogLine(lineno, line.rstrip(), timestamp, level, caller, quoted)


def clean_lines(text: str, unwrap: bool | None = None) -> list[LogLine]:
    """Strip decorations from every line of ``text`` and undo mail wrapping.

    ``unwrap``: ``True`` always re-joins wrapped lines, ``False`` never does, ``None``
    decides from the text. Re-joining needs time stamps: a wrapped piece is a line *without*
    a time stamp right after a long line *with* one (or after another long piece). In auto
    mode the text is unwrapped when at least half of its lines have time stamps and almost
    every line without one (95 %) could be such a piece; a serial console that mixes kernel
    and shell output has many lines that cannot, and is left alone. When most lines are
    mail-quoted, unquoted lines (the reply around the quote) are not counted.
    """
    raw_lines = [_ANSI.sub("", r) for r in text.splitlines()]
    lines = [strip_line(raw, i + 1) for i, raw in enumerate(raw_lines)]
    piece = _wrap_pieces(lines, raw_lines)
    nonempty = [i for i, ln in enumerate(lines) if ln.text.strip()]
    if not nonempty:
        return lines
    if unwrap is None:
        considered = nonempty
        if sum(lines[i].quoted for i in nonempty) >= 0.5 * len(nonempty):
            considered = [i for i in nonempty if lines[i].quoted]
        stamped = sum(1 for i in considered if lines[i].timestamp is not None)
        orphans = sum(1 for i in considered if lines[i].timestamp is None and not piece[i])
        unwrap = stamped >= 0.5 * len(considered) and orphans <= 0.05 * len(considered)
    if not unwrap:
        return lines
    out: list[LogLine] = []
    for i, ln in enumerate(lines):
        if piece[i] and out:
            prev = out[-1]
            joined = prev.text + ("" if prev.text.endswith(" ") else " ") + ln.text.lstrip()
            out[-1] = LogLine(
                prev.lineno, joined.rstrip(), prev.timestamp, prev.level, prev.caller, prev.quoted
            )
            continue
        out.append(ln)
    return out


def _wrap_pieces(lines: list[LogLine], raw_lines: list[str]) -> list[bool]:
    """For each line: could it be the tail of a line that a mail client wrapped?"""
    piece = [False] * len(lines)
    for i in range(1, len(lines)):
        ln, prev = lines[i], lines[i - 1]
        if ln.timestamp is not None or not ln.text.strip() or _looks_standalone(ln.text):
            continue
        # A mail client breaks a line when the next word would pass its width (72-78):
        # the previous line plus this line's first word must be longer than that.
        first_word = len(ln.text.split(maxsplit=1)[0])
        wrapped = len(raw_lines[i - 1].rstrip()) + 1 + first_word > _MIN_WRAP_WIDTH
        if wrapped and (prev.timestamp is not None or piece[i - 1]):
            piece[i] = True
    return piece


def _looks_standalone(text: str) -> bool:
    """Lines that are never the tail of a wrapped kernel line (ptdump rows, markers)."""
    return bool(re.match(r"^(0x[0-9a-f]{16}-|---\[ )", text))
