"""The SSH board target: deploy a kernel artifact to a board over SSH, kexec it, run tests.

Same interface as the QEMU target (:mod:`orchestrator.targets.base`), so the runner, the
comparison and the lab drive a board exactly like a QEMU guest::

    target = SshTarget(BoardConfig(name="rk3588", address="10.0.0.7", key="~/.ssh/lab"))
    with target.boot(artifact, console_log=log) as s:   # deploy, kexec, verify build-id
        s.run(["/mmlab/tests/vmalloc.sh", "smoke"], timeout=300)
    # leaving: dmesg saved first, then the board's default kernel restored

What ``boot`` does, in order:

1. start the serial console command (``console``; e.g. ``telnet consoles 7001``) under
   pexpect, logging everything it prints, so a kernel that never reaches SSH leaves a log;
2. connect with host-key verification against the user's known_hosts (an unknown or changed
   key is a refusal showing the key's SHA256 fingerprint; ``trust_on_first_use`` records an
   unknown key instead), key or agent auth, keepalives;
3. note the board's running (default) kernel: release and build-id from /sys/kernel/notes;
4. copy the artifact over SFTP: ``Image`` and, with ``ramdisk = "board-image"``, the
   images/board.toml initramfs built for the artifact (its modules inside); with
   ``ramdisk = "none"`` the modules tree goes to /lib/modules/<release> on the board's disk;
5. boot it: ``kexec -l`` (classic load), falling back to ``kexec -s -l`` (file-based) when
   the classic load fails, e.g. "setup_2nd_dtb failed" on firmware that sets a non-zero
   /chosen/kaslr-seed (``kexec_load`` picks one). Classic first because on the QEMU
   stand-ins a 6.12 kernel loaded with ``-s`` oopsed early in the new kernel (its text
   overwritten with 0xc2 bytes), while ``-l`` booted every time. Then ``kexec -e`` started
   detached (setsid, in the background: it never returns inside an SSH channel). Or
   ``boot = "hook"``: a host command that installs the kernel and reboots the board;
6. wait for SSH again and check that the running kernel *is* the artifact (build-id and
   release; the old sshd can still answer for a moment after ``kexec -e``);
7. on a timeout: keep the console log, run the power hook (``power``) so the board comes
   back, and raise :class:`BootTimeout`.

``shutdown`` saves the board's ``dmesg`` next to the console log first, then restores the
default kernel (``restore``: ``reboot``, ``kexec`` of ``default_kernel``, ``power`` or
``none``), falling back to the power hook when the board does not come back.

A dropped connection is retried (``reconnect_timeout``); a command cut by a lost connection
raises :class:`ConnectionLost` (a :class:`GuestDied`) saying whether the board answered
again, so results already written stay valid and the failure is clear.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import shlex
import stat
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import progress
from orchestrator.errors import InputError, MissingToolError, TargetError
from orchestrator.paths import cache_dir
from orchestrator.targets.base import (
    BootInfo,
    BootTimeout,
    CommandTimeout,
    GuestDied,
    RunResult,
    Session,
    Target,
    TargetFault,
    guest_command,
)

# paramiko logs connection failures (expected while a board reboots) with tracebacks;
# mmlab reports them itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

BOOT_METHODS = ("kexec", "hook")
RESTORE_METHODS = ("reboot", "kexec", "power", "none")
RAMDISKS = ("board-image", "none")


# ---------------------------------------------------------------------------- faults


class HostKeyRefused(TargetFault):
    """The board's host key is unknown or differs from the known_hosts entry."""

    verdict = "host-key"

    def __init__(self, *args: Any, fingerprint: str = "", **kw: Any):
        super().__init__(*args, **kw)
        self.fingerprint = fingerprint


class BoardUnreachable(GuestDied):
    """No SSH session could be opened (refused, timed out, authentication failed)."""

    verdict = "unreachable"


class ConnectionLost(GuestDied):
    """The SSH connection dropped while a command ran; ``reconnected`` says whether the
    board answered again afterwards (the command's own result is lost either way)."""

    verdict = "connection-lost"

    def __init__(self, *args: Any, reconnected: bool = False, **kw: Any):
        super().__init__(*args, **kw)
        self.reconnected = reconnected


class WrongKernel(TargetFault):
    """The board came back, but not running the artifact (build-id or release differ)."""

    verdict = "wrong-kernel"


# ---------------------------------------------------------------------------- config


@dataclass
class BoardConfig:
    """One board: how to reach it, boot kernels on it and bring it back."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key: str | None = None                  # private key file; None: agent / ~/.ssh keys
    agent: bool = True                      # also offer keys from ssh-agent
    known_hosts: str | None = None          # default ~/.ssh/known_hosts
    trust_on_first_use: bool = False        # record an unknown host key instead of refusing
    console: list[str] | None = None        # host command printing the serial console
    power: list[str] | None = None          # host command power-cycling the board
    boot: str = "kexec"                     # kexec | hook
    boot_hook: list[str] | None = None      # host command for boot = "hook" ({placeholders})
    restore: str = "reboot"                 # reboot | kexec | power | none
    default_kernel: str | None = None       # on the board, for restore = "kexec"
    default_initrd: str | None = None
    ramdisk: str = "board-image"            # board-image | none
    board_keys: str | None = None           # key dir for the ramdisk (default: mmlab's)
    kexec_load: str = "auto"                # auto (-l, else -s -l) | classic (-l) | file
    cmdline: list[str] | None = None        # kexec'd kernel's command line; None: reuse
    workdir: str = "/tmp/mmlab"             # on the board: where Image/initrd are copied
    connect_timeout: float = 10.0
    keepalive: int = 5
    boot_timeout: float = 120.0             # kexec -e (or the hook) to a verified SSH login
    restore_timeout: float = 120.0
    reconnect_timeout: float = 20.0
    timeout_scale: float = 1.0              # command timeouts x this (4 for TCG stand-ins)
    tags: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"board {self.name!r}"
        if self.boot not in BOOT_METHODS:
            raise InputError(f"{where}: boot must be one of {', '.join(BOOT_METHODS)}",
                             hint="fix the inventory")
        if self.restore not in RESTORE_METHODS:
            raise InputError(f"{where}: restore must be one of {', '.join(RESTORE_METHODS)}",
                             hint="fix the inventory")
        if self.kexec_load not in ("auto", "classic", "file"):
            raise InputError(f"{where}: kexec_load must be auto, classic or file",
                             hint="fix the inventory")
        if self.ramdisk not in RAMDISKS:
            raise InputError(f"{where}: ramdisk must be one of {', '.join(RAMDISKS)}",
                             hint="fix the inventory")
        if self.boot == "hook" and not self.boot_hook:
            raise InputError(f"{where}: boot = \"hook\" needs boot_hook (a command list)",
                             hint="add boot_hook = [\"/path/to/install-and-reboot\", ...]")
        if self.restore == "kexec" and not self.default_kernel:
            raise InputError(f"{where}: restore = \"kexec\" needs default_kernel (a path "
                             "on the board)", hint="add default_kernel = \"/boot/Image\"")
        if self.restore == "power" and not self.power:
            raise InputError(f"{where}: restore = \"power\" needs a power command",
                             hint="add power = [\"/path/to/power-cycle\", ...]")

    @property
    def known_hosts_path(self) -> Path:
        return Path(os.path.expanduser(self.known_hosts or "~/.ssh/known_hosts"))

    @property
    def host_key_name(self) -> str:
        """The known_hosts name: ``addr`` for port 22, else ``[addr]:port``."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


def fingerprint(key: Any) -> str:
    """OpenSSH's SHA256 fingerprint of a paramiko key (``SHA256:...``)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def boot_token(kernel: dict[str, Any]) -> str | None:
    """The ``mmlab.boot=...`` word of a running kernel's command line: present only when an
    mmlab run booted that kernel (the board's own default kernel never has one)."""
    return next((w for w in str(kernel.get("cmdline") or "").split()
                 if w.startswith("mmlab.boot=")), None)


def parse_build_id(notes: bytes) -> str | None:
    """The GNU build-id in an ELF note section (``/sys/kernel/notes``), little-endian."""
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
        pos += 12
        name = notes[pos:pos + namesz]
        pos += (namesz + 3) & ~3
        desc = notes[pos:pos + descsz]
        pos += (descsz + 3) & ~3
        if ntype == 3 and name.rstrip(b"\0") == b"GNU":
            return desc.hex()
    return None


# ---------------------------------------------------------------------------- connection


class _Connection:
    """A paramiko client with host-key checks, keepalives and an SFTP channel."""

    def __init__(self, cfg: BoardConfig):
        self.cfg = cfg
        self.client: Any = None
        self._sftp: Any = None

    def open(self, timeout: float | None = None) -> None:
        import paramiko

        cfg = self.cfg
        client = paramiko.SSHClient()
        kh = cfg.known_hosts_path
        if kh.exists():
            try:
                client.load_host_keys(str(kh))
            except (OSError, paramiko.SSHException, paramiko.hostkeys.InvalidHostKey,
                    ValueError) as exc:
                # InvalidHostKey (a malformed line) is no SSHException in paramiko 3
                line = exc.args[0] if isinstance(exc, paramiko.hostkeys.InvalidHostKey) else exc
                raise InputError(f"board {cfg.name}: cannot read known_hosts {kh}: malformed "
                                 f"entry {str(line)[:80]!r}",
                                 hint="fix or delete that line of the known_hosts file") from None
        elif not cfg.trust_on_first_use:
            raise HostKeyRefused(
                f"board {cfg.name}: known_hosts file {kh} does not exist",
                hint="create it with the board's host key (mmlab's board image prints the "
                     "line), or set trust_on_first_use = true for this board")
        client.set_missing_host_key_policy(_HostKeyPolicy(cfg, kh))
        key_file = os.path.expanduser(cfg.key) if cfg.key else None
        if key_file and not Path(key_file).is_file():
            raise InputError(f"board {cfg.name}: key file {key_file} does not exist",
                             hint="fix `key` in the inventory")
        t = timeout or cfg.connect_timeout
        try:
            client.connect(cfg.address, port=cfg.port, username=cfg.user,
                           key_filename=key_file, allow_agent=cfg.agent,
                           look_for_keys=key_file is None, timeout=t, banner_timeout=t,
                           auth_timeout=t, channel_timeout=t)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyRefused(
                f"board {cfg.name}: host key of {cfg.host_key_name} is "
                f"{fingerprint(exc.key)}, but {kh} expects {fingerprint(exc.expected_key)}",
                hint="the board was reinstalled or this is not the board: check it, then "
                     f"replace its line in {kh}",
                fingerprint=fingerprint(exc.key)) from None
        except HostKeyRefused:
            client.close()
            raise
        except paramiko.AuthenticationException as exc:
            client.close()
            raise BoardUnreachable(f"board {cfg.name}: authentication as {cfg.user} failed: "
                                   f"{exc}", hint="check `key` and the board's "
                                   "authorized_keys") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            raise BoardUnreachable(f"board {cfg.name}: cannot open SSH to "
                                   f"{cfg.address}:{cfg.port}: {exc or type(exc).__name__}",
                                   hint="is the board up and sshd running?") from None
        transport = client.get_transport()
        transport.set_keepalive(cfg.keepalive)
        self.client = client
        self._sftp = None

    @property
    def active(self) -> bool:
        t = self.client.get_transport() if self.client is not None else None
        return bool(t is not None and t.is_active())

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001 - closing a dead transport may raise anything
                pass
        self.client = None
        self._sftp = None

    def sftp(self) -> Any:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def exec(self, command: str, timeout: float) -> RunResult:
        """Run ``command`` (shell text) and return its combined output and status.
        Raises CommandTimeout, or OSError/EOFError/SSHException when the connection drops."""
        import paramiko

        t0 = time.monotonic()
        chan = self.client.get_transport().open_session(timeout=self.cfg.connect_timeout)
        chan.set_combine_stderr(True)
        chan.settimeout(0.5)
        chan.exec_command(command)
        buf = bytearray()
        while True:
            try:
                data = chan.recv(65536)
            except TimeoutError:
                data = None
            if data:
                buf += data
            elif data == b"":
                break  # EOF
            if time.monotonic() - t0 > timeout:
                chan.close()
                raise CommandTimeout(
                    f"board {self.cfg.name}: `{command[:80]}` ran past {timeout:.0f} s",
                    hint="raise the entry's timeout or the board's timeout_scale",
                    output=buf.decode(errors="replace"), recovered=self.active)
            if data is None and not self.active:
                raise paramiko.SSHException("connection lost")
        while not chan.exit_status_ready():
            if not self.active:
                raise paramiko.SSHException("connection lost before the exit status")
            if time.monotonic() - t0 > timeout:
                chan.close()
                raise CommandTimeout(f"board {self.cfg.name}: `{command[:80]}` did not exit",
                                     hint="raise the entry's timeout",
                                     output=buf.decode(errors="replace"),
                                     recovered=self.active)
            time.sleep(0.05)
        status = chan.recv_exit_status()
        chan.close()
        if status == -1:  # no exit status: the channel was closed under the command
            for _ in range(20):
                if not self.active:
                    raise paramiko.SSHException("connection lost before the exit status")
                time.sleep(0.1)
        text = buf.decode(errors="replace").replace("\r\n", "\n")
        return RunResult(text, status if status >= 0 else 255, time.monotonic() - t0, command)

    def read_file(self, path: str) -> bytes:
        with self.sftp().open(path, "rb") as fh:
            return fh.read()


class _HostKeyPolicy:
    """Unknown host: refuse with the fingerprint, or record it (trust on first use)."""

    def __init__(self, cfg: BoardConfig, known_hosts: Path):
        self.cfg = cfg
        self.known_hosts = known_hosts

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        fp = fingerprint(key)
        if not self.cfg.trust_on_first_use:
            raise HostKeyRefused(
                f"board {self.cfg.name}: unknown host key {key.get_name()} {fp} for "
                f"{hostname} (not in {self.known_hosts})",
                hint=f"if that is the board's key, add it to {self.known_hosts}, or set "
                     "trust_on_first_use = true for this board", fingerprint=fp)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)
        progress.info(f"board {self.cfg.name}: trusted on first use: {key.get_name()} {fp} "
                      f"recorded in {self.known_hosts}")


# ---------------------------------------------------------------------------- console


class _Console:
    """The board's serial console command under pexpect, copied to a log file by a thread."""

    def __init__(self, argv: list[str], log: Path):
        import pexpect

        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.child = pexpect.spawn(argv[0], argv[1:], timeout=None, echo=False)
        except pexpect.ExceptionPexpect as exc:
            self._fh.close()
            raise MissingToolError(f"console command {argv[0]!r} cannot start: {exc}",
                                   hint="fix `console` in the inventory") from None
        self.child.logfile_read = self._fh
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        import pexpect

        try:
            self.child.expect(pexpect.EOF, timeout=None)
        except (pexpect.ExceptionPexpect, OSError, ValueError):
            pass

    def tail(self, n: int = 800) -> str:
        try:
            self._fh.flush()
            return self.log.read_bytes()[-n:].decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def stop(self) -> None:
        try:
            self.child.terminate(force=True)
        except Exception:  # noqa: BLE001
            pass
        self._thread.join(timeout=2)
        try:
            self._fh.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------- session


class SshSession(Session):
    """A board running the artifact, reached over SSH."""

    def __init__(self, target: SshTarget, conn: _Connection, info: BootInfo,
                 console: _Console | None, log: Path):
        self.target = target
        self.cfg = target.cfg
        self.conn = conn
        self.info = info
        self.console = console
        self.console_log_path = log
        self.boot_stages = info.stages
        self.restored: bool | None = None
        self._down = False

    @property
    def alive(self) -> bool:
        return not self._down and self.conn.active

    def _reconnect(self) -> bool:
        """Try to open a new connection within reconnect_timeout; True when it worked."""
        self.conn.close()
        deadline = time.monotonic() + self.cfg.reconnect_timeout
        while time.monotonic() < deadline:
            try:
                self.conn.open(timeout=min(self.cfg.connect_timeout, 5))
                self.target._event(f"reconnected to {self.cfg.address}:{self.cfg.port}")
                return True
            except (BoardUnreachable, OSError):
                time.sleep(1)
        return False

    def _ensure(self) -> None:
        if self._down:
            raise GuestDied(f"board {self.cfg.name}: session already shut down",
                            hint="boot the artifact again", log=str(self.console_log_path))
        if not self.conn.active and not self._reconnect():
            raise BoardUnreachable(f"board {self.cfg.name}: SSH connection lost and no "
                                   f"answer for {self.cfg.reconnect_timeout:.0f} s",
                                   hint="check the board (console log, power)",
                                   log=str(self.console_log_path))

    def run(self, cmd: list[str] | str, timeout: float = 60.0) -> RunResult:
        import paramiko

        self._ensure()
        command = guest_command(cmd)
        try:
            return self.conn.exec(command, timeout * self.cfg.timeout_scale)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            ok = self._reconnect()
            raise ConnectionLost(
                f"board {self.cfg.name}: SSH connection lost during `{command[:80]}` "
                f"({exc or type(exc).__name__}); "
                + ("reconnected, but the command's result is lost" if ok else
                   f"no answer for {self.cfg.reconnect_timeout:.0f} s"),
                hint="check sshd on the board and the console log",
                log=str(self.console_log_path), reconnected=ok) from None

    def _sftp_call(self, fn) -> Any:
        import paramiko

        self._ensure()
        try:
            return fn(self.conn.sftp())
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if not self._reconnect():
                raise ConnectionLost(f"board {self.cfg.name}: SFTP failed: {exc}",
                                     hint="check sshd on the board",
                                     log=str(self.console_log_path)) from None
            return fn(self.conn.sftp())

    def put(self, local: str | Path, remote: str) -> None:
        self._sftp_call(lambda s: s.put(str(local), remote))

    def get(self, remote: str, local: str | Path) -> None:
        from orchestrator.atomic import atomic_write_bytes

        data = self._sftp_call(lambda s: _sftp_read(s, remote))
        atomic_write_bytes(local, data)

    def dmesg(self) -> str:
        return self.run(["dmesg"], timeout=60).output

    def shutdown(self) -> None:
        """Save dmesg, then put the board back on its default kernel. Idempotent; never
        raises for a board that is gone (the outcome is in ``info.details["restore"]``)."""
        if self._down:
            return
        self._down = True
        details = self.info.details
        dmesg_path = Path(str(self.console_log_path) + ".dmesg")
        try:
            if not self.conn.active:
                self._reconnect()
            if self.conn.active:
                text = self.conn.exec("dmesg", 60).output
                dmesg_path.write_text(text)
                details["dmesg"] = str(dmesg_path)
        except (TargetError, OSError, EOFError, Exception) as exc:  # noqa: BLE001
            details["dmesg_error"] = str(exc)
        self.restored = self.target.restore(self.conn, details)
        self.conn.close()
        if self.console is not None:
            self.console.stop()


def _sftp_read(sftp: Any, remote: str) -> bytes:
    with sftp.open(remote, "rb") as fh:
        return fh.read()


# ---------------------------------------------------------------------------- target


class SshTarget(Target):
    """Boots kernel artifacts on one SSH-reachable board."""

    def __init__(self, cfg: BoardConfig):
        self.cfg = cfg
        self.name = f"ssh:{cfg.name}"
        self.default_kernel: dict[str, str | None] = {}
        self._log: Path | None = None

    # -- helpers

    def _event(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] mmlab-ssh {self.cfg.name}: {text}\n"
        if self._log is not None:
            with open(self._log, "a") as fh:
                fh.write(line)

    def connect(self, timeout: float | None = None) -> _Connection:
        """An authenticated, host-key-checked connection to the board."""
        conn = _Connection(self.cfg)
        conn.open(timeout)
        return conn

    def running_kernel(self, conn: _Connection) -> dict[str, str | None]:
        """The running kernel's release and build-id (from /sys/kernel/notes)."""
        res = conn.exec("uname -r; cat /proc/sys/kernel/random/boot_id; cat /proc/cmdline", 30)
        lines = res.output.splitlines() + ["", "", ""]
        try:
            build_id = parse_build_id(conn.read_file("/sys/kernel/notes"))
        except OSError:
            build_id = None
        return {"release": lines[0].strip(), "build_id": build_id,
                "boot_id": lines[1].strip(), "cmdline": lines[2].strip()}

    def power_cycle(self, why: str) -> bool:
        """Run the power hook (host command); True when it ran and exited 0."""
        if not self.cfg.power:
            self._event(f"no power hook to recover from: {why}")
            return False
        self._event(f"power hook {shlex.join(self.cfg.power)} ({why})")
        progress.info(f"board {self.cfg.name}: power-cycling ({why})")
        try:
            res = subprocess.run(self.cfg.power, capture_output=True, text=True, timeout=120,
                                 check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._event(f"power hook failed: {exc}")
            return False
        self._event(f"power hook exit {res.returncode}: {(res.stdout + res.stderr).strip()}")
        return res.returncode == 0

    def wait_for(self, want_build_id: str | None, timeout: float, not_boot_id: str | None = None,
                 token: str | None = None, not_token: str | None = None
                 ) -> tuple[_Connection | None, dict[str, str | None] | None]:
        """Poll until SSH answers from a new boot (boot_id other than ``not_boot_id``) of
        the kernel with build-id ``want_build_id`` (any kernel when None) whose command
        line carries ``token`` (when given). The old sshd can still answer for a moment
        after ``kexec -e``, and the same build-id may be the board's default kernel too:
        the boot_id and the token tell the boots apart. Returns (connection, kernel) or
        (None, the last kernel seen)."""
        deadline = time.monotonic() + timeout
        last: dict[str, str | None] | None = None
        while time.monotonic() < deadline:
            try:
                conn = self.connect(timeout=min(self.cfg.connect_timeout, 5))
            except HostKeyRefused:
                raise
            except BoardUnreachable:
                time.sleep(1)
                continue
            try:
                kernel = self.running_kernel(conn)
            except Exception:  # noqa: BLE001 - the old kernel going down mid-query
                conn.close()
                time.sleep(1)
                continue
            new_boot = not_boot_id is None or kernel["boot_id"] != not_boot_id
            if new_boot:
                last = kernel
            words = (kernel["cmdline"] or "").split()
            if new_boot and want_build_id in (None, kernel["build_id"]) and \
                    (token is None or token in words) and not_token not in words:
                return conn, kernel
            conn.close()
            time.sleep(1)
        return None, last

    def _detached(self, conn: _Connection, command: list[str]) -> None:
        """Start ``command`` on the board detached from the SSH channel (kexec -e, reboot
        never return inside one), one second later so the channel closes cleanly."""
        inner = "sleep 1; " + shlex.join(command)
        conn.exec(f"setsid sh -c {shlex.quote(inner)} </dev/null >/dev/null 2>&1 &", 30)

    def _upload(self, conn: _Connection, local: Path, remote: str) -> None:
        """Copy a file to the board; a file that is private here (no group/other bits, e.g.
        an initramfs holding the board's host key) is created 0600 there before any byte
        of it is written."""
        if stat.S_IMODE(local.stat().st_mode) & 0o077:
            conn.sftp().put(str(local), remote)
            return
        sftp = conn.sftp()
        with sftp.open(remote, "wb") as fh, open(local, "rb") as src:
            fh.chmod(0o600)
            while chunk := src.read(1 << 20):
                fh.write(chunk)

    def _upload_modules(self, conn: _Connection, artifact: Any) -> None:
        """modules tree -> /lib/modules/<release>/ on the board's disk (ramdisk = none)."""
        mdir = Path(artifact.modules_dir)
        if not mdir.is_dir():
            return
        dest = f"/lib/modules/{artifact.release}"
        dirs = sorted({str(p.parent.relative_to(mdir)) for p in mdir.rglob("*") if p.is_file()})
        conn.exec(shlex.join(["mkdir", "-p", *[f"{dest}/{d}" for d in dirs]]), 60)
        for p in sorted(mdir.rglob("*")):
            if p.is_file() and not p.is_symlink():
                self._upload(conn, p, f"{dest}/{p.relative_to(mdir)}")

    # -- boot

    def boot(self, artifact: Any, image: Any = None, *, console_log: Path | None = None,
             cmdline: list[str] | None = None, boot_timeout: float | None = None
             ) -> SshSession:
        cfg = self.cfg
        if not Path(artifact.image).is_file():
            raise InputError(f"kernel artifact {artifact.path} has no Image",
                             hint="rebuild it with `mmlab build`")
        if not artifact.build_id:
            raise InputError(f"kernel artifact {artifact.path} has no build-id",
                             hint="build with a toolchain that writes .note.gnu.build-id")
        if console_log is None:
            logdir = cache_dir("tmp") / "boots"
            logdir.mkdir(parents=True, exist_ok=True)
            console_log = logdir / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}.log"
        log = Path(console_log)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        # With a console, its output is the log and mmlab's events go beside it.
        self._log = Path(str(log) + ".events") if cfg.console else log
        self._log.write_text("")
        t0 = time.monotonic()
        stages: dict[str, float] = {}
        info = BootInfo(target=self.name, artifact=getattr(artifact, "key", str(artifact)),
                        release=artifact.release, image=None, console_log=str(log),
                        stages=stages, details={"board": cfg.name, "address": cfg.address,
                                                "port": cfg.port, "tags": cfg.tags,
                                                "boot_method": cfg.boot})
        console = _Console(cfg.console, log) if cfg.console else None
        conn: _Connection | None = None
        try:
            conn = self.connect()
            stages["connected"] = time.monotonic() - t0
            current = self.running_kernel(conn)
            left = boot_token(current)
            if left and not self.default_kernel:
                conn, current = self._restore_leftover(conn, current, left, info)
            if not self.default_kernel:
                self.default_kernel = current
            info.details["default_kernel"] = self.default_kernel
            self._event(f"running {current['release']} build-id {current['build_id']}")
            conn.exec(shlex.join(["mkdir", "-p", cfg.workdir]), 30)
            remote_image = f"{cfg.workdir}/Image"
            remote_initrd: str | None = None
            self._upload(conn, Path(artifact.image), remote_image)
            if cfg.ramdisk == "board-image":
                if image is None:
                    from orchestrator.image.board_image import board_keys, build_board_image

                    keydir = Path(os.path.expanduser(cfg.board_keys)) if cfg.board_keys \
                        else None
                    image = build_board_image(artifact, board_keys(keydir))
                remote_initrd = f"{cfg.workdir}/initrd.cpio.gz"
                self._upload(conn, Path(image.path), remote_initrd)
                info.image = str(image.path)
            else:
                self._upload_modules(conn, artifact)
            stages["deployed"] = time.monotonic() - t0
            self._event(f"deployed {artifact.release} build-id {artifact.build_id}")
            words = cfg.cmdline
            append = None  # None: the running command line + extra words
            if words is not None:
                append = " ".join([*words, *(cmdline or [])])
            token = f"mmlab.boot={secrets.token_hex(6)}"
            info.details["token"] = token
            if cfg.boot == "kexec":
                self._kexec(conn, remote_image, remote_initrd, append,
                        [*(cmdline or []), token] if append is None else [token])
            else:
                self._hook(artifact, remote_image, remote_initrd, image, append, token)
            conn.close()
            conn = None
            stages["boot_started"] = time.monotonic() - t0
            limit = boot_timeout or cfg.boot_timeout
            conn, kernel = self.wait_for(artifact.build_id, limit,
                                         not_boot_id=current["boot_id"],
                                         token=token if cfg.boot == "kexec" or any(
                                             "{cmdline}" in w for w in cfg.boot_hook or [])
                                         else None)
            if conn is None:
                raise self._boot_failed(artifact, kernel, limit, log, console)
            if kernel["release"] != artifact.release:
                conn.close()
                raise WrongKernel(f"board {cfg.name}: build-id matches but release is "
                                  f"{kernel['release']}, not {artifact.release}",
                                  hint="the artifact's metadata is inconsistent; rebuild",
                                  log=str(log), stage="verify")
            stages["guest_ready"] = time.monotonic() - t0
            self._event(f"running the artifact ({kernel['release']}, build-id "
                        f"{kernel['build_id']}) after {stages['guest_ready']:.1f} s")
        except BaseException:
            if conn is not None:
                conn.close()
            if console is not None:
                console.stop()
            raise
        info.details["running_kernel"] = kernel
        return SshSession(self, conn, info, console, log)

    def _kexec(self, conn: _Connection, image: str, initrd: str | None, append: str | None,
               extra: list[str] | None) -> None:
        """Load the kernel (``kexec -l``, else ``-s -l``; see the module docstring) and
        start ``kexec -e`` detached. ``append``:
        the whole command line (None: the running one, earlier boot tokens dropped), to
        which ``extra`` words (the boot token last) are added."""
        if conn.exec("command -v kexec", 30).exit_status != 0:
            raise TargetError(f"board {self.cfg.name} has no kexec",
                              hint="install kexec-tools on the board, or use boot = \"hook\"")
        if append is None:
            current = conn.exec("cat /proc/cmdline", 30).output.split()
            append = " ".join(w for w in current if not w.startswith("mmlab.boot="))
        append = " ".join([append, *(extra or [])]).strip()
        args = [image, *([f"--initrd={initrd}"] if initrd else []), f"--append={append}"]
        modes = {"auto": [["-l"], ["-s", "-l"]], "classic": [["-l"]],
                 "file": [["-s", "-l"]]}[self.cfg.kexec_load]
        for mode in modes:
            argv = ["kexec", *mode, *args]
            res = conn.exec(shlex.join(argv), 120)
            self._event(f"{shlex.join(argv)} -> {res.exit_status} {res.output.strip()[:300]}")
            if res.exit_status == 0:
                break
        if res.exit_status != 0:
            raise TargetError(f"board {self.cfg.name}: kexec load failed: "
                              f"{res.output.strip().splitlines()[-1:] or ['(no output)']}",
                              hint="the board kernel needs CONFIG_KEXEC_FILE (see "
                                   "kernel_configs/board.config)")
        self._detached(conn, ["kexec", "-e"])

    def _hook(self, artifact: Any, image: str, initrd: str | None, local_initrd: Any,
              append: str | None, token: str) -> None:
        """Run the board's boot hook (a host command) that installs the copied kernel and
        reboots the board. Placeholders: {name} {address} {port} {user} {image} {initrd}
        (paths on the board) {local_image} {local_initrd} (on this host) {release}
        {cmdline} (the command line to boot with, boot token included: when the hook uses
        it, the token is checked after the boot)."""
        cfg = self.cfg
        cmdline = " ".join(w for w in [append or "", token] if w)
        values = {"name": cfg.name, "address": cfg.address, "port": str(cfg.port),
                  "user": cfg.user, "image": image, "initrd": initrd or "",
                  "release": artifact.release, "local_image": str(artifact.image),
                  "local_initrd": str(local_initrd.path) if local_initrd is not None else "",
                  "cmdline": cmdline}
        argv = [w.format(**values) for w in (cfg.boot_hook or [])]
        self._event(f"boot hook {shlex.join(argv)}")
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                                 check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TargetError(f"board {cfg.name}: boot hook failed: {exc}",
                              hint="fix boot_hook in the inventory") from None
        if res.returncode != 0:
            raise TargetError(f"board {cfg.name}: boot hook exited {res.returncode}: "
                              f"{(res.stderr or res.stdout).strip()[-200:]}",
                              hint="fix boot_hook in the inventory")

    def _boot_failed(self, artifact: Any, kernel: dict | None, limit: float, log: Path,
                     console: _Console | None) -> TargetFault:
        """The artifact did not come up: recover the board with the power hook and say
        what was seen."""
        cfg = self.cfg
        if kernel is not None and kernel.get("build_id") == self.default_kernel.get("build_id"):
            seen = "the board still (or again) runs its default kernel"
        elif kernel is not None:
            seen = f"the board runs {kernel['release']} build-id {kernel['build_id']}"
        else:
            seen = "no SSH answer"
        self._event(f"artifact not running after {limit:.0f} s: {seen}")
        recovered = self.power_cycle("the artifact did not come up")
        if recovered:
            conn, _ = self.wait_for(self.default_kernel.get("build_id"), cfg.restore_timeout)
            if conn is not None:
                conn.close()
                self._event("board back after the power hook")
        tail = console.tail() if console is not None else ""
        msg = (f"board {cfg.name}: {artifact.release} (build-id {artifact.build_id[:12]}) "
               f"not running after {limit:.0f} s: {seen}"
               + ("; power hook run" if recovered else ""))
        if kernel is not None and kernel.get("build_id") not in (None, artifact.build_id) \
                and kernel.get("build_id") != self.default_kernel.get("build_id"):
            return WrongKernel(msg, hint="check the boot hook / kexec", log=str(log),
                               stage="verify", output=tail)
        return BootTimeout(msg, hint=f"see the console log {log}" if console is not None
                           else "configure a console command to see why", log=str(log),
                           stage="boot", output=tail)

    # -- restore

    def _restore_leftover(self, conn: _Connection, current: dict, token: str, info: BootInfo
                          ) -> tuple[_Connection, dict]:
        """The board runs a kernel an earlier mmlab run booted (its command line carries
        that run's boot token): an interrupted run or a failed restore left it there. Never
        take it for the board's default kernel: restore first, or stop with a clear error."""
        cfg = self.cfg
        what = f"{current['release']} booted by an earlier mmlab run ({token})"
        self._event(f"board runs {what}: restoring its default kernel first")
        progress.info(f"board {cfg.name}: runs {what}; restoring its default kernel first")
        details: dict[str, Any] = {"running_kernel": current, "token": token}
        ok = cfg.restore != "none" and self.restore(conn, details)
        info.details["leftover"] = {"kernel": current, "restore": details.get("restore")}
        if ok:
            conn = self.connect()
            current = self.running_kernel(conn)
        if not ok or boot_token(current):
            raise TargetError(
                f"board {cfg.name} runs a test kernel ({what}), not its default one, and "
                f"restore = \"{cfg.restore}\" did not bring the default back",
                hint="reboot the board into its default kernel by hand, or configure restore "
                     "(and a power hook) in the inventory")
        return conn, current

    def restore(self, conn: _Connection, details: dict) -> bool:
        """Put the board back on its default kernel; True when verified."""
        cfg = self.cfg
        want = self.default_kernel.get("build_id")
        boot_id = (details.get("running_kernel") or {}).get("boot_id")
        token = details.get("token")  # the default kernel's command line never has it
        outcome = {"method": cfg.restore, "ok": False}
        details["restore"] = outcome
        if cfg.restore == "none":
            outcome["ok"] = True
            return True
        try:
            if cfg.restore == "power":
                self.power_cycle("restore")
            else:
                if not conn.active:
                    conn.open(timeout=5)
                if cfg.restore == "reboot":
                    self._detached(conn, ["reboot", "-f"])
                else:
                    argv = ["kexec", "-s", "-l", str(cfg.default_kernel)]
                    if cfg.default_initrd:
                        argv.append(f"--initrd={cfg.default_initrd}")
                    argv.append("--reuse-cmdline")
                    res = conn.exec(shlex.join(argv), 120)
                    if res.exit_status != 0:
                        raise TargetError(f"kexec load of the default kernel failed: "
                                          f"{res.output.strip()[-200:]}")
                    self._detached(conn, ["kexec", "-e"])
            conn.close()
            back, kernel = self.wait_for(want, cfg.restore_timeout, not_boot_id=boot_id,
                                         not_token=token)
        except Exception as exc:  # noqa: BLE001 - any failure: fall back to the power hook
            self._event(f"restore by {cfg.restore} failed: {exc}")
            back, kernel = None, None
        if back is None and cfg.restore != "power" and self.power_cycle("restore failed"):
            outcome["power_hook"] = True
            back, kernel = self.wait_for(want, cfg.restore_timeout, not_boot_id=boot_id,
                                         not_token=token)
        if back is not None:
            back.close()
            outcome["ok"] = True
            self._event(f"restored the default kernel ({kernel['release']})")
        else:
            outcome["seen"] = kernel
            self._event(f"board NOT restored to its default kernel (seen: {kernel})")
            progress.info(f"board {cfg.name}: not restored to its default kernel")
        return bool(outcome["ok"])
