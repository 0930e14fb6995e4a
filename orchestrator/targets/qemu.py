"""The QEMU target: boot a kernel artifact in qemu-system-aarch64 with an initramfs.

Machine profiles are data (``qemu_profiles/<name>.toml``, chosen by name, ``default``
unless told otherwise; a profile may start from another with ``base = "name"``). TCG is
used unless the host is arm64 with a usable ``/dev/kvm`` (``accel = "auto"``).

QEMU's serial console is its stdio (``-chardev stdio,signal=off``: ^C goes to the guest),
driven by :class:`orchestrator.targets.console.ConsoleDriver`; ``-no-reboot`` and the kernel's
``panic=-1`` make a panic end QEMU instead of hanging it. No monitor, no display, no
network unless the profile asks (user-mode net on virtio-net without an option ROM).

Usage::

    target = QemuTarget("default")
    with target.boot(artifact) as s:        # builds/caches the initramfs for artifact
        print(s.run("uname -r").output)
"""

from __future__ import annotations

import os
import platform
import secrets
import shlex
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pexpect

from orchestrator.errors import ConfigError, InputError, MissingToolError
from orchestrator.paths import QEMU_PROFILES, cache_dir
from orchestrator.targets.base import BootInfo, GuestDied, RunResult, Session, Target
from orchestrator.targets.console import ConsoleDriver

QEMU = "qemu-system-aarch64"


# ---------------------------------------------------------------------------- profiles


def env_timeout_scale() -> float:
    """MMLAB_TIMEOUT_SCALE (a positive number, default 1): multiplies every target timeout."""
    from orchestrator.errors import InputError

    text = os.environ.get("MMLAB_TIMEOUT_SCALE", "") or "1"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise InputError(f"MMLAB_TIMEOUT_SCALE={text!r} is not a positive number",
                         hint="unset it, or set e.g. MMLAB_TIMEOUT_SCALE=2 on a slow machine")
    return value


@dataclass(frozen=True)
class Profile:
    """A QEMU machine, as read from ``qemu_profiles/<name>.toml``."""

    name: str
    description: str = ""
    machine: str = "virt"
    machine_options: tuple[str, ...] = ()
    gic_version: int | str = 3
    cpu: str = "max"
    cpu_options: tuple[str, ...] = ()
    smp: int = 2
    memory: str = "1G"
    accel: str = "auto"
    cmdline: tuple[str, ...] = ("console=ttyAMA0", "panic=-1")
    session_loglevel: int = 1
    tcg_timeout_scale: float = 4.0
    boot_timeout: float = 15.0
    network: bool = False
    netdev_options: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    source: str = ""
    data: dict[str, Any] = field(default_factory=dict, compare=False)

    _FIELDS = ("description", "machine", "machine_options", "gic_version", "cpu", "cpu_options", "smp",
               "memory", "accel", "cmdline", "session_loglevel", "tcg_timeout_scale",
               "boot_timeout", "network", "netdev_options", "extra_args")

    def resolved_accel(self) -> str:
        """``kvm`` or ``tcg`` for this host."""
        if self.accel in ("kvm", "tcg"):
            return self.accel
        if platform.machine() in ("aarch64", "arm64") and os.access("/dev/kvm", os.R_OK | os.W_OK):
            return "kvm"
        return "tcg"

    @property
    def timeout_scale(self) -> float:
        scale = self.tcg_timeout_scale if self.resolved_accel() == "tcg" else 1.0
        return scale * env_timeout_scale()

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self._FIELDS}
        out.update(name=self.name, source=self.source, resolved_accel=self.resolved_accel())
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def list_profiles(root: Path = QEMU_PROFILES) -> list[str]:
    return sorted(p.stem for p in root.glob("*.toml"))


def load_profile(name: str = "default", root: Path = QEMU_PROFILES) -> Profile:
    """The profile ``name`` (a name in qemu_profiles/, or a path to a .toml file)."""
    data = _load_profile_data(name, root, [])
    unknown = set(data) - set(Profile._FIELDS) - {"base"}
    if unknown:
        raise ConfigError(f"QEMU profile {name}: unknown keys {sorted(unknown)}",
                          hint=f"known keys: {', '.join(Profile._FIELDS)}")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "base"}
    path = Path(name) if name.endswith(".toml") else root / f"{name}.toml"
    if kw.get("accel", "auto") not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"QEMU profile {name}: accel must be auto, kvm or tcg",
                          hint=f"edit {path}")
    return Profile(name=Path(name).stem, source=str(path), data=data, **kw)


def _load_profile_data(name: str, root: Path, seen: list[str]) -> dict[str, Any]:
    path = Path(name) if name.endswith(".toml") else root / f"{name}.toml"
    if name in seen:
        raise ConfigError(f"QEMU profile {name} inherits from itself ({' -> '.join(seen)})",
                          hint="fix the base = ... chain")
    if not path.is_file():
        raise InputError(f"no QEMU profile {name!r}",
                         hint=f"known profiles: {', '.join(list_profiles(root))}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"QEMU profile {path}: {exc}", hint="fix the TOML syntax") from exc
    base = data.get("base")
    if base:
        merged = _load_profile_data(base, root, [*seen, name])
        merged.update({k: v for k, v in data.items() if k != "base"})
        return merged
    return data


def qemu_argv(profile: Profile, kernel: Path, initrd: Path | None, append: str,
              qemu: str = QEMU, console_file: Path | None = None) -> list[str]:
    """The full QEMU command line for a boot: the one place mmlab builds one (timed runs,
    barrier counts, stand-in boards). The console is the process's stdio, or
    ``console_file``; additions (the barrier plugin, -icount) go after it."""
    accel = profile.resolved_accel()
    cpu = profile.cpu
    if accel == "kvm":
        cpu = "host" if cpu in ("max", "host") else cpu
        cpu_arg = cpu
    else:
        cpu_arg = ",".join([cpu, *profile.cpu_options])
    machine = ",".join([profile.machine, f"gic-version={profile.gic_version}",
                        *profile.machine_options])
    chardev = (f"file,id=con0,path={console_file}" if console_file is not None
               else "stdio,id=con0,signal=off")
    argv = [qemu, "-M", machine, "-accel", accel, "-cpu", cpu_arg,
            "-smp", str(profile.smp), "-m", str(profile.memory),
            "-display", "none", "-monitor", "none",
            "-chardev", chardev, "-serial", "chardev:con0",
            "-no-reboot", "-kernel", str(kernel)]
    if initrd is not None:
        argv += ["-initrd", str(initrd)]
    argv += ["-append", append]
    if profile.network:
        netdev = ",".join(["user", "id=n0", *profile.netdev_options])
        argv += ["-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,romfile="]
    else:
        argv += ["-nic", "none"]
    argv += list(profile.extra_args)
    return argv


# ---------------------------------------------------------------------------- session


class QemuSession(Session):
    """A booted QEMU guest."""

    def __init__(self, driver: ConsoleDriver, info: BootInfo, log_fh: Any):
        self.driver = driver
        self.info = info
        self.console_log_path = driver.log_path
        self.boot_stages = info.stages
        self._log_fh = log_fh
        self.clean_shutdown: bool | None = None

    @property
    def alive(self) -> bool:
        return not self.driver.dead and self.driver.child.isalive()

    @property
    def pid(self) -> int:
        """QEMU's process id (tests kill it to produce a guest that dies)."""
        return self.driver.child.pid

    def run(self, cmd: list[str] | str, timeout: float = 60.0) -> RunResult:
        return self.driver.run(cmd, timeout)

    def put(self, local: str | Path, remote: str) -> None:
        self.driver.put_bytes(Path(local).read_bytes(), remote)

    def get(self, remote: str, local: str | Path) -> None:
        from orchestrator.atomic import atomic_write_bytes

        atomic_write_bytes(local, self.driver.get_bytes(remote))

    def dmesg(self) -> str:
        return self.driver.run("dmesg", timeout=60).output

    def shutdown(self) -> None:
        if self.clean_shutdown is None:
            self.clean_shutdown = self.driver.poweroff() if self.alive else False
            self.driver.kill()
            self.info.details["clean_shutdown"] = self.clean_shutdown
            self.info.details["qemu_exit_status"] = self.driver.child.exitstatus
            try:
                self._log_fh.close()
            except OSError:
                pass


class QemuTarget(Target):
    """Boots artifacts in qemu-system-aarch64 with a machine profile."""

    def __init__(self, profile: str | Profile = "default"):
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        self.name = f"qemu:{self.profile.name}"

    def command(self, artifact: Any, image: Any, cmdline: list[str] | None = None,
                token: str = "TOKEN") -> list[str]:
        """The QEMU command line a boot would use (for reproducer lines)."""
        words = [*self.profile.cmdline, *(cmdline or []), f"mmlab.token={token}",
                 f"mmlab.loglevel={self.profile.session_loglevel}"]
        if not self.profile.network:
            words.append("mmlab.net=0")
        return qemu_argv(self.profile, artifact.image,
                         image.path if image is not None else None, " ".join(words))

    def boot(self, artifact: Any, image: Any = None, *, console_log: Path | None = None,
             cmdline: list[str] | None = None, boot_timeout: float | None = None
             ) -> QemuSession:
        if shutil.which(QEMU) is None:
            raise MissingToolError(f"{QEMU} not found", hint="apt-get install qemu-system-arm")
        if not Path(artifact.image).is_file():
            raise InputError(f"kernel artifact {artifact.path} has no Image",
                             hint="rebuild it with `mmlab build`")
        if image is None:
            from orchestrator.image.initramfs import build_initramfs

            image = build_initramfs(artifact)
        token = secrets.token_hex(8)
        argv = self.command(artifact, image, cmdline, token)
        if console_log is None:
            logdir = cache_dir("tmp") / "boots"
            logdir.mkdir(parents=True, exist_ok=True)
            console_log = logdir / f"{time.strftime('%Y%m%d-%H%M%S')}-{token}.console.log"
        console_log = Path(console_log)
        console_log.parent.mkdir(parents=True, exist_ok=True)
        (console_log.with_name(console_log.name + ".cmd")).write_text(
            shlex.join(argv) + "\n")
        log_fh = open(console_log, "wb")  # noqa: SIM115 - closed by the session
        child = pexpect.spawn(argv[0], argv[1:], timeout=None, maxread=65536,
                              searchwindowsize=16384, echo=False,
                              env={**os.environ, "LC_ALL": "C"})
        child.logfile_read = log_fh
        driver = ConsoleDriver(child, log_fh, console_log, token, self.profile.timeout_scale)
        info = BootInfo(target=self.name, artifact=getattr(artifact, "key", str(artifact)),
                        release=getattr(artifact, "release", ""),
                        image=str(image.path) if image is not None else None,
                        console_log=str(console_log), command=argv,
                        details={"profile": self.profile.to_json(), "token": token,
                                 "timeout_scale": self.profile.timeout_scale})
        try:
            info.stages = driver.wait_ready(boot_timeout or self.profile.boot_timeout)
        except GuestDied as exc:
            if "kernel_started" not in driver.stages:
                tail = console_log.read_bytes()[-400:].decode(errors="replace").strip()
                exc.message = (f"QEMU exited before the kernel started: "
                               f"{tail.splitlines()[-1] if tail else 'no output'}")
                exc.args = (exc.message,)
            log_fh.close()
            raise
        except BaseException:
            driver.kill()
            log_fh.close()
            raise
        return QemuSession(driver, info, log_fh)
