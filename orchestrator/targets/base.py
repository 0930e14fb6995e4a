"""The target interface: boot a kernel artifact, get a session, run things, shut down.

One interface serves QEMU guests (:mod:`orchestrator.targets.qemu`) and SSH boards, so the
runner never knows which it drives::

    with target.boot(artifact, image) as session:     # -> Session, guest ready
        res = session.run(["mmlab-vmalloc", "smoke"], timeout=120)
        res.output, res.exit_status, res.duration, res.skipped
        session.put(local, "/tmp/x"); session.get("/tmp/y", local)
        log = session.dmesg()
    # leaving the block calls session.shutdown() (clean poweroff, else kill)

Faults are exceptions, all :class:`~orchestrator.errors.TargetError` subclasses whose
``log`` names the saved console log: :class:`BootTimeout`, :class:`CommandTimeout`,
:class:`KernelPanic` / :class:`KernelOops` (both :class:`KernelCrash`) and
:class:`GuestDied`. A command that fails is *not* an exception: it is a
:class:`RunResult` with a non-zero ``exit_status`` (``4`` means skipped, the kselftest
convention the guest tests follow).
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import TargetError

SKIP_STATUS = 4  # kselftest's KSFT_SKIP; guest_tests/ exit with it when a test cannot run


@dataclass
class RunResult:
    """What one command did: its output (stdout and stderr interleaved, as the guest
    printed them, newlines normalised), its exit status, and the wall time it took."""

    output: str
    exit_status: int
    duration: float
    command: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def skipped(self) -> bool:
        return self.exit_status == SKIP_STATUS

    @property
    def verdict(self) -> str:
        """``pass``, ``skip`` or ``fail``."""
        return "pass" if self.ok else "skip" if self.skipped else "fail"

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command, "exit_status": self.exit_status,
                "duration": round(self.duration, 6), "verdict": self.verdict,
                "output": self.output}


# ---------------------------------------------------------------------------- faults


class TargetFault(TargetError):
    """A target fault: carries the console log path, the stage and any partial output."""

    verdict = "error"

    def __init__(self, message: str, hint: str | None = None, *, log: str | None = None,
                 stage: str | None = None, output: str = ""):
        super().__init__(message, hint, log=log)
        self.stage = stage
        self.output = output


class BootTimeout(TargetFault):
    """The guest did not reach the ready stage in time (``stage``: the last one reached)."""

    verdict = "boot-timeout"


class CommandTimeout(TargetFault):
    """A command ran past its timeout. ``recovered``: ^C brought the shell back and the
    session is still usable; otherwise the guest was killed."""

    verdict = "timeout"

    def __init__(self, *args: Any, recovered: bool = False, **kw: Any):
        super().__init__(*args, **kw)
        self.recovered = recovered


class KernelCrash(TargetFault):
    """The kernel crashed (``line``: the first line of the report). The guest is gone."""

    verdict = "crash"

    def __init__(self, *args: Any, line: str = "", **kw: Any):
        super().__init__(*args, **kw)
        self.line = line


class KernelPanic(KernelCrash):
    verdict = "panic"


class KernelOops(KernelCrash):
    verdict = "oops"


class GuestDied(TargetFault):
    """The guest went away without a kernel crash report (QEMU exited or was killed, the
    connection dropped). ``exit_code``: QEMU's exit status when known."""

    verdict = "died"

    def __init__(self, *args: Any, exit_code: int | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.exit_code = exit_code


# ---------------------------------------------------------------------------- interface


def guest_command(cmd: list[str] | str) -> str:
    """A command for the guest's POSIX shell: a list is quoted word by word, a string is
    taken as shell text as is (pipes, redirections)."""
    return shlex.join(cmd) if isinstance(cmd, list) else cmd


@dataclass
class BootInfo:
    """Facts about one boot, for the results JSON."""

    target: str
    artifact: str
    release: str
    image: str | None
    console_log: str | None
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds from start
    command: list[str] = field(default_factory=list)        # e.g. the QEMU command line
    details: dict[str, Any] = field(default_factory=dict)


class Session(ABC):
    """A booted target, ready for commands. Use as a context manager (shutdown on exit)."""

    #: the full console log of this boot (QEMU: the serial console; boards: may be None)
    console_log_path: Path | None
    #: boot stage -> seconds since the boot started: kernel_started, init_reached,
    #: guest_ready (stages a target cannot observe are absent)
    boot_stages: dict[str, float]
    info: BootInfo

    @abstractmethod
    def run(self, cmd: list[str] | str, timeout: float = 60.0) -> RunResult:
        """Run a command in the guest; ``timeout`` in seconds of native time (targets
        scale it, e.g. for emulation). Raises CommandTimeout, KernelCrash, GuestDied."""

    @abstractmethod
    def put(self, local: str | Path, remote: str) -> None:
        """Copy a host file into the guest."""

    @abstractmethod
    def get(self, remote: str, local: str | Path) -> None:
        """Copy a guest file to the host."""

    @abstractmethod
    def dmesg(self) -> str:
        """The guest kernel's whole log buffer (``dmesg``), as text."""

    @abstractmethod
    def shutdown(self) -> None:
        """Power the guest off (cleanly when possible). Idempotent."""

    @property
    @abstractmethod
    def alive(self) -> bool:
        """False once the guest is gone (shut down, crashed, killed)."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class Target(ABC):
    """Something that can boot a kernel artifact."""

    name: str

    @abstractmethod
    def boot(self, artifact: Any, image: Any = None, *, console_log: Path | None = None,
             cmdline: list[str] | None = None, boot_timeout: float | None = None) -> Session:
        """Boot ``artifact`` (an :class:`orchestrator.kernel.artifacts.Artifact`) with ``image``
        (QEMU: an :class:`orchestrator.image.initramfs.InitramfsImage`, built for the artifact
        when None) and return a ready session. ``console_log``: where to keep the full
        console log (default: a new file under ``cache_dir("tmp")/boots``).
        ``cmdline``: extra kernel command-line words. Raises BootTimeout, KernelCrash,
        GuestDied."""
