"""A serial-console driver on pexpect: boot stages, commands with markers, file transfer.

The guest side is ``images/init`` and ``images/agent.sh``: the init prints
``@@MMLAB-INIT:<token>``, the agent turns the console's echo off, prints
``@@MMLAB-READY:<token>`` and then runs one base64-encoded command per line, wrapping its
output in ``@@MMLAB-BEGIN:<tok>`` ... ``@@MMLAB-END:<tok>:<status>`` (random ``tok`` per
command, the markers printed from parts so they never appear in what the host sends). So:

- output and exit status are exact, whatever the command prints (quotes, binary data, no
  trailing newline): the output crosses the console base64-encoded;
- kernel messages are kept off the console while commands run (console loglevel 1; oops
  and panic still print in full), and any kernel record that does land in the output, at a
  line start or in the middle of a line (``[   12.345678] ...``), is told apart from the
  base64 text exactly and dropped;
- a readable transcript of every command and its decoded output is kept next to the
  console log (``<log>.transcript``);
- a panic or oops ends the wait at once (:class:`KernelPanic`/:class:`KernelOops`), after
  reading the rest of the report; the whole console stream is kept in one log per boot.

Time limits are multiplied by ``scale`` (e.g. 4 under TCG emulation).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from pathlib import Path
from typing import IO

import pexpect

from orchestrator.targets.base import (
    BootTimeout,
    CommandTimeout,
    GuestDied,
    KernelCrash,
    KernelOops,
    KernelPanic,
    RunResult,
    TargetFault,
    guest_command,
)

# Whole lines only (a line may arrive in pieces); the report's first line is group 1.
PANIC_RE = re.compile(rb"(Kernel panic - not syncing[^\r\n]*)\r*\n")
OOPS_RE = re.compile(rb"(Internal error: [^\r\n]*|Unable to handle kernel [^\r\n]*"
                     rb"|kernel BUG at [^\r\n]*)\r*\n")
END_OF_REPORT_RE = re.compile(rb"---\[ end (?:Kernel panic|trace [0-9a-f]+ )[^\r\n]*"
                              rb"|reboot: Restarting system")
# A kernel console record that interrupted a line of command output.
INLINE_RECORD_RE = re.compile(r"(?<=[^\n])\[ *\d+\.\d{6}\] [^\n]*\n")
# Any kernel console record (with PRINTK_TIME), wherever it starts.
RECORD_RE = re.compile(r"\[ *\d+\.\d{6}\] [^\n]*(?:\n|$)")
KERNEL_STARTED_RE = re.compile(rb"Booting Linux on physical CPU|Linux version \d")
B64_LINE_RE = re.compile(r"^[A-Za-z0-9+/=]+$")

LINE_CHUNK = 2048  # base64 characters per console line (the tty line limit is 4095)


def clean_text(raw: bytes) -> str:
    """Console bytes -> text with LF line ends."""
    return re.sub(r"\r+\n", "\n", raw.decode("utf-8", errors="replace")).replace("\r", "")


def clean_output(raw: bytes) -> str:
    """Console bytes -> text: LF line ends, kernel records that interrupted a line removed."""
    return INLINE_RECORD_RE.sub("", clean_text(raw))


def partial_output(raw: bytes) -> str:
    """What a command had printed when it was cut off (its base64 stream decoded)."""
    return decode_base64_lines(clean_text(raw))[0].decode("utf-8", errors="replace")


class ConsoleDriver:
    """Drives one boot's console. ``child`` is a spawned pexpect process whose stdio is the
    guest's serial console (QEMU with ``-serial chardev:stdio``)."""

    def __init__(self, child: pexpect.spawn, log: IO[bytes], log_path: Path, token: str,
                 scale: float = 1.0):
        self.child = child
        self.log = log
        self.log_path = log_path
        self.token = token
        self.scale = scale
        self.start = time.monotonic()
        self.stages: dict[str, float] = {}
        self.dead = False

    # ------------------------------------------------------------------ helpers

    def _now(self) -> float:
        return round(time.monotonic() - self.start, 4)

    def _flush(self) -> None:
        try:
            self.log.flush()
        except ValueError:
            pass

    def _exit_code(self) -> int | None:
        """QEMU's exit status (negative: killed by that signal); None if it lingers."""
        deadline = time.monotonic() + 2.0
        while self.child.isalive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.child.isalive():
            return None
        if self.child.exitstatus is not None:
            return self.child.exitstatus
        return -self.child.signalstatus if self.child.signalstatus else None

    def kill(self) -> None:
        """Kill the process (QEMU) at once."""
        if self.child.isalive():
            self.child.terminate(force=True)
        self.dead = True
        self._flush()

    def _crash(self, kind: type[KernelCrash], line: bytes, stage: str, output: str) -> None:
        """Read the rest of the crash report (bounded), kill, raise."""
        try:
            self.child.expect([END_OF_REPORT_RE, pexpect.EOF], timeout=3 * self.scale)
        except pexpect.TIMEOUT:
            pass
        self.kill()
        text = line.decode(errors="replace").strip()
        what = "kernel panic" if kind is KernelPanic else "kernel oops"
        raise kind(f"{what} during {stage}: {text}", log=str(self.log_path), stage=stage,
                   output=output, line=text,
                   hint="see the console log for the full report")

    def _died(self, stage: str, output: str) -> None:
        self.dead = True
        self._flush()
        code = self._exit_code()
        # A crash report whose last line QEMU never finished (panic=-1 ends it at once).
        try:
            tail = self.log_path.read_bytes()[-65536:] + b"\n"
        except OSError:
            tail = b""
        for kind, pat in ((KernelPanic, PANIC_RE), (KernelOops, OOPS_RE)):
            m = pat.search(tail)
            if m:
                text = m.group(1).decode(errors="replace").strip()
                what = "kernel panic" if kind is KernelPanic else "kernel oops"
                raise kind(f"{what} during {stage}: {text}", log=str(self.log_path),
                           stage=stage, output=output, line=text,
                           hint="see the console log for the full report")
        raise GuestDied(f"guest went away during {stage} (QEMU exit status {code})",
                        log=str(self.log_path), stage=stage, output=output, exit_code=code,
                        hint="see the console log; QEMU's own errors are at its end")

    def _expect(self, patterns: list[re.Pattern[bytes] | bytes], timeout: float, stage: str,
                in_command: bool = False) -> tuple[int, re.Match[bytes] | None]:
        """Expect one of ``patterns`` (index 0..n-1), watching for crashes and EOF.
        ``in_command``: what came before is a command's base64 output (decode it for the
        exception's ``output``)."""
        if self.dead:
            raise GuestDied(f"guest is gone (before {stage})", log=str(self.log_path),
                            stage=stage)
        full = [*patterns, PANIC_RE, OOPS_RE, pexpect.EOF, pexpect.TIMEOUT]
        n = len(patterns)
        i = self.child.expect(full, timeout=timeout)
        if i < n:
            return i, self.child.match
        raw = self.child.before if isinstance(self.child.before, bytes) else b""
        before = partial_output(raw) if in_command else clean_output(raw)
        if i == n:
            self._crash(KernelPanic, self.child.match.group(1), stage, before)
        if i == n + 1:
            # An oops may be followed by a panic (panic_on_oops): prefer the panic line.
            line = self.child.match.group(1)
            try:
                j = self.child.expect([PANIC_RE, END_OF_REPORT_RE, pexpect.EOF],
                                      timeout=3 * self.scale)
                if j == 1:  # end of the oops report; a panic line follows at once if any
                    j = self.child.expect([PANIC_RE, pexpect.EOF], timeout=1 * self.scale)
                if j == 0:
                    self._crash(KernelPanic, self.child.match.group(1), stage, before)
            except pexpect.TIMEOUT:
                pass
            self._crash(KernelOops, line, stage, before)
        if i == n + 2:
            self._died(stage, before)
        return -1, None  # timeout

    # ------------------------------------------------------------------ boot

    def wait_ready(self, timeout: float) -> dict[str, float]:
        """Wait for kernel start, init and agent; returns the stage timestamps."""
        deadline = time.monotonic() + timeout * self.scale
        tok = re.escape(self.token.encode())
        steps = [
            ("kernel_started", KERNEL_STARTED_RE),
            ("init_reached", re.compile(rb"@@MMLAB-INIT:" + tok)),
            ("guest_ready", re.compile(rb"@@MMLAB-READY:" + tok + rb"\r*\n")),
        ]
        idx = 0
        while idx < len(steps):
            left = deadline - time.monotonic()
            stage = steps[idx - 1][0] if idx else "qemu_started"
            pats = [p for _, p in steps[idx:]]
            i, _ = self._expect(pats, max(left, 0.01), f"boot (after {stage})")
            if i < 0:
                self.kill()
                raise BootTimeout(
                    f"guest not ready after {timeout * self.scale:.0f}s (last stage reached: "
                    f"{stage})", log=str(self.log_path), stage=stage,
                    hint="see the console log; a slow host may need a longer boot_timeout")
            # a later marker implies the earlier stages (e.g. quiet kernels print no banner)
            idx += i
            name = steps[idx][0]
            self.stages[name] = self._now()
            idx += 1
        self._flush()
        return dict(self.stages)

    # ------------------------------------------------------------------ commands

    def _send_command(self, tok: str, text: str) -> None:
        b64 = base64.b64encode(text.encode()).decode()
        chunks = [b64[i:i + LINE_CHUNK] for i in range(0, len(b64), LINE_CHUNK)] or [""]
        for chunk in chunks[:-1]:
            self.child.send(f"A {chunk}\n".encode())
        self.child.send(f"R {tok} {chunks[-1]}\n".encode())

    def run(self, cmd: list[str] | str, timeout: float = 60.0) -> RunResult:
        """Run ``cmd`` (see :func:`guest_command`); ``timeout`` before scaling."""
        text = guest_command(cmd)
        data, status, duration = self.run_bytes(text, timeout)
        output = data.decode("utf-8", errors="replace")
        return RunResult(output=output, exit_status=status, duration=duration, command=text)

    def run_bytes(self, text: str, timeout: float = 60.0) -> tuple[bytes, int, float]:
        """Run shell text; (output bytes, exit status, seconds)."""
        tok = secrets.token_hex(6)
        stage = f"command {text[:60]!r}"
        t0 = time.monotonic()
        self._send_command(tok, text)
        limit = timeout * self.scale
        begin = re.compile(rb"@@MMLAB-BEGIN:" + tok.encode() + rb"\r*\n")
        end = re.compile(rb"\r*\n@@MMLAB-END:" + tok.encode() + rb":(\d+)\r*\n")
        i, _ = self._expect([begin], limit, stage)
        if i < 0:
            self._timeout(tok, stage, b"", limit)
        left = max(limit - (time.monotonic() - t0), 0.01)
        i, m = self._expect([end], left, stage, in_command=True)
        if i < 0:
            self._timeout(tok, stage, self.child.before or b"", limit)
        assert m is not None
        duration = time.monotonic() - t0
        data, _intact = decode_base64_lines(clean_text(self.child.before))
        status = int(m.group(1))
        self._transcript(text, data, status, duration)
        self._flush()
        return data, status, duration

    def _transcript(self, text: str, data: bytes, status: int, duration: float) -> None:
        """Append a command and its decoded output to ``<console log>.transcript``."""
        path = self.log_path.with_name(self.log_path.name + ".transcript")
        out = data.decode("utf-8", errors="replace")
        with path.open("a") as fh:
            fh.write(f"$ {text}\n{out}{'' if out.endswith(chr(10)) or not out else chr(10)}"
                     f"[exit status {status}, {duration:.3f} s, at {self._now():.3f} s]\n\n")

    def _timeout(self, tok: str, stage: str, partial: bytes, limit: float) -> None:
        """A command ran too long: ^C it; if the agent answers, the session lives on."""
        self.child.send(b"\x03")
        end = re.compile(rb"@@MMLAB-END:" + tok.encode() + rb":(\d+)\r*\n")
        try:
            i, _ = self._expect([end], 5 * self.scale, stage)
        except GuestDied:
            i = -1
        recovered = i == 0
        if not recovered:
            self.kill()
        self._flush()
        raise CommandTimeout(
            f"{stage} still running after {limit:.0f}s"
            + ("; interrupted, session still usable" if recovered else "; guest killed"),
            log=str(self.log_path), stage=stage, output=partial_output(partial),
            recovered=recovered, hint="raise the timeout, or look for a hang in the log")

    # ------------------------------------------------------------------ files

    def put_bytes(self, data: bytes, remote: str, timeout: float = 60.0) -> None:
        tok = secrets.token_hex(6)
        if "\n" in remote or not remote:
            raise ValueError(f"bad remote path {remote!r}")
        stage = f"put {remote}"
        b64 = base64.b64encode(data)
        body = b"".join(b64[i:i + LINE_CHUNK] + b"\n" for i in range(0, len(b64), LINE_CHUNK))
        self.child.send(f"W {tok} {len(body)} {remote}\n".encode())
        self.child.send(body)
        end = re.compile(rb"@@MMLAB-END:" + tok.encode() + rb":(\d+)\r*\n")
        i, m = self._expect([end], (timeout + len(data) / 20000) * self.scale, stage)
        if i < 0:
            self._timeout(tok, stage, b"", timeout * self.scale)
        assert m is not None
        if int(m.group(1)) != 0:
            raise TargetFault(f"writing {remote} in the guest failed (status {m.group(1)})",
                            log=str(self.log_path), stage=stage,
                            hint="does the directory exist? is the guest's /tmp full?")

    def get_bytes(self, remote: str, timeout: float = 60.0) -> bytes:
        data, status, _ = self.run_bytes(guest_command(["cat", remote]), timeout)
        if status != 0:
            raise FileNotFoundError(f"guest: {remote}: {data.decode(errors='replace')[:200]}")
        return data

    # ------------------------------------------------------------------ power

    def poweroff(self, timeout: float = 10.0) -> bool:
        """Ask the agent to power off; True when QEMU exited by itself in time."""
        if self.dead or not self.child.isalive():
            self.dead = True
            return False
        try:
            self.child.send(b"Q\n")
            self.child.expect([pexpect.EOF], timeout=timeout * self.scale)
            clean = True
        except (pexpect.TIMEOUT, OSError):
            clean = False
        self.kill()
        return clean


def decode_base64_lines(text: str) -> tuple[bytes, bool]:
    """Decode base64 console output: kernel records and any other non-base64 line are
    dropped first. Returns (data, intact); ``intact`` is False when characters were lost
    (a truncated stream: only the complete part is decoded)."""
    text = RECORD_RE.sub("", text.replace("\r", ""))
    b64 = "".join(ln.strip() for ln in text.splitlines() if B64_LINE_RE.match(ln.strip()))
    intact = len(b64) % 4 == 0
    b64 = b64[: len(b64) - len(b64) % 4]
    try:
        return base64.b64decode(b64), intact
    except binascii.Error:
        return b"", False
