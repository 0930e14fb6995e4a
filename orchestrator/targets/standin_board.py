"""A QEMU arm64 guest that behaves like a lab board: sshd on a loopback port, a console
log, a power switch.

The SSH target (:mod:`orchestrator.targets.ssh`) and the lab (:mod:`orchestrator.lab.runtime`) are
tested against these stand-ins, and they are handy to try an inventory without hardware.
Unlike :class:`orchestrator.targets.qemu.QemuTarget` the guest runs *without*
``-no-reboot``: a reboot resets the machine into its default kernel (the ``-kernel`` and
``-initrd`` it was started with), the way a real board comes back from a reboot. The serial
console goes to a file (``console.log``; ``tail -F`` it as the board's console command);
user-mode networking forwards ``127.0.0.1:<port>`` to the guest's port 22.

State lives in a directory (``board.json``: the QEMU argv and pid), so a power hook that is
a separate process can power-cycle the board::

    python -m orchestrator.targets.standin_board power-cycle STATE_DIR    # kill, start again
    python -m orchestrator.targets.standin_board off STATE_DIR
    python -m orchestrator.targets.standin_board boot-once STATE_DIR IMAGE INITRD CMDLINE  # boot hook

Usage::

    board = QemuBoard.start(state_dir, artifact, image, port=2222)
    board.wait_ssh(timeout=60); ...; board.stop()
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.atomic import atomic_write_json

QEMU = "qemu-system-aarch64"
CMDLINE = ["earlycon", "console=ttyAMA0", "panic=5", "ipv6.disable=1", "pty.legacy_count=0",
           "mmlab.loglevel=1"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a board's SSH forward)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def board_argv(kernel: Path, initrd: Path, port: int, console_log: Path,
               cmdline: list[str] | None = None, profile: str = "standin-board"
               ) -> list[str]:
    """QEMU command line of a stand-in board: the machine of ``qemu_profiles/<profile>``
    through the one command-line builder, console to a file, sshd forwarded to ``port``.
    Without -no-reboot: a reboot resets it into its default kernel, as a board comes back."""
    import dataclasses

    from orchestrator.targets.qemu import load_profile, qemu_argv

    prof = load_profile(profile)
    prof = dataclasses.replace(prof, network=True, netdev_options=(
        *prof.netdev_options, f"hostfwd=tcp:127.0.0.1:{port}-:22"))
    argv = qemu_argv(prof, kernel, initrd, " ".join(cmdline or CMDLINE), qemu=QEMU,
                     console_file=console_log)
    argv.remove("-no-reboot")
    return argv


def _spawn(argv: list[str], log: Path) -> int:
    """Start QEMU detached (own session), so the board outlives a power-hook process."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh,
                                start_new_session=True)
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of this process counts as gone
        wpid, _ = os.waitpid(pid, os.WNOHANG)
        return wpid == 0
    except ChildProcessError:
        pass
    try:  # a zombie of another process (the board started by someone else) too
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill(pid: int) -> None:
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not _alive(pid):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not _alive(pid):
            return
        time.sleep(0.1)


@dataclass
class QemuBoard:
    """A running stand-in board; ``state_dir/board.json`` holds its argv and pid."""

    state_dir: Path
    port: int

    @property
    def state_file(self) -> Path:
        return self.state_dir / "board.json"

    @property
    def console_log(self) -> Path:
        return self.state_dir / "console.log"

    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    @property
    def pid(self) -> int:
        return int(self.state()["pid"])

    @classmethod
    def start(cls, state_dir: Path, artifact, image, port: int | None = None,
              cmdline: list[str] | None = None) -> QemuBoard:
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        board = cls(state_dir, port)
        argv = board_argv(Path(artifact.image), Path(image.path), port, board.console_log,
                          cmdline)
        pid = _spawn(argv, state_dir / "qemu.log")
        atomic_write_json(board.state_file, {"argv": argv, "pid": pid, "port": port,
                                             "power_cycles": 0})
        return board

    def wait_ssh(self, timeout: float = 90.0) -> float:
        """Seconds until the guest's sshd answers with its banner (user-mode net accepts
        connections while the guest is down, so the banner is the sign of life)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(3)
                    if s.recv(64).startswith(b"SSH-"):
                        return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"board on port {self.port}: no SSH banner after {timeout:.0f} s")

    def stop(self) -> None:
        power(self.state_dir, "off")


def _with_boot(argv: list[str], kernel: str, initrd: str, append: str) -> list[str]:
    out = list(argv)
    for opt, value in (("-kernel", kernel), ("-initrd", initrd), ("-append", append)):
        out[out.index(opt) + 1] = value
    return out


def _is_our_qemu(pid: int, argv: list[str]) -> bool:
    """The process ``pid`` is still the QEMU this state file started (same executable and
    command line): a pid reused by an unrelated process after the board died is not."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return [a.decode(errors="replace") for a in cmdline if a] == list(argv)


def power(state_dir: Path, action: str) -> int:
    """``off``, ``on`` or ``cycle`` a stand-in board from its state file; the new pid.
    A boot-once entry (:func:`boot_once`) is used by the next power-on, then dropped, so the
    power-on after that boots the default kernel again."""
    state_file = Path(state_dir) / "board.json"
    state = json.loads(state_file.read_text())
    if action in ("off", "cycle"):
        pid = int(state["pid"])
        if _is_our_qemu(pid, state.get("running_argv") or state["argv"]):
            _kill(pid)
    if action in ("on", "cycle"):
        argv = state["argv"]
        once = state.pop("boot_once", None)
        if once:
            argv = _with_boot(argv, once["kernel"], once["initrd"], once["append"])
        state["pid"] = _spawn(argv, Path(state_dir) / "qemu.log")
        state["running_argv"] = argv
        state["power_cycles"] = int(state.get("power_cycles", 0)) + 1
        atomic_write_json(state_file, state)
    return int(state["pid"])


def boot_once(state_dir: Path, kernel: str, initrd: str, append: str) -> int:
    """Install a kernel for the next boot only and power-cycle into it (what a board's
    "install and reboot" hook does, like grub-reboot): the new pid."""
    state_file = Path(state_dir) / "board.json"
    state = json.loads(state_file.read_text())
    state["boot_once"] = {"kernel": kernel, "initrd": initrd, "append": append}
    atomic_write_json(state_file, state)
    return power(state_dir, "cycle")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    actions = {"power-cycle": "cycle", "off": "off", "on": "on"}
    if len(args) == 5 and args[0] == "boot-once":
        pid = boot_once(Path(args[1]), args[2], args[3], args[4])
        print(f"boot-once: {args[1]} pid {pid}")
        return 0
    if len(args) != 2 or args[0] not in actions:
        print("usage: python -m orchestrator.targets.standin_board power-cycle|off|on STATE_DIR\n"
              "       python -m orchestrator.targets.standin_board boot-once STATE_DIR IMAGE INITRD "
              "CMDLINE", file=sys.stderr)
        return 2
    pid = power(Path(args[1]), actions[args[0]])
    print(f"{args[0]}: {args[1]} pid {pid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
