"""The QEMU target and its console driver, on a real kernel in qemu-system-aarch64.

Faults are produced for real: a panic (sysrq, and init dying at boot), a guest that never
becomes ready (init replaced by a program that waits forever), a command that hangs, QEMU
killed in the middle of a command's output, and a kernel without the test module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from orchestrator.kernel.artifacts import Artifact
from orchestrator.targets import (
    BootTimeout,
    CommandTimeout,
    GuestDied,
    KernelPanic,
)
from orchestrator.targets.qemu import (
    Profile,
    QemuTarget,
    list_profiles,
    load_profile,
    qemu_argv,
)

# ---------------------------------------------------------------------------- profiles (no boot)


def test_every_profile_loads_and_default_exists():
    names = list_profiles()
    assert "default" in names
    for name in names:
        p = load_profile(name)
        assert p.machine == "virt" and p.smp >= 1
        assert p.resolved_accel() in ("tcg", "kvm")
    assert load_profile("cortex-a72").cpu == "cortex-a72"  # inherits the rest from default
    assert load_profile("cortex-a72").memory == load_profile("default").memory


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(Exception, match="no QEMU profile 'nope'") as exc:
        load_profile("nope")
    assert "default" in exc.value.hint


def test_qemu_command_line_tcg_kvm_and_network(tmp_path):
    tcg = Profile(name="t", accel="tcg", cpu="max", cpu_options=("pauth-impdef=on",))
    argv = qemu_argv(tcg, Path("/k/Image"), Path("/i.cpio.gz"), "console=ttyAMA0")
    assert argv[argv.index("-cpu") + 1] == "max,pauth-impdef=on"
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert "-no-reboot" in argv and "none" == argv[argv.index("-nic") + 1]
    kvm = Profile(name="k", accel="kvm", cpu="max", cpu_options=("pauth-impdef=on",))
    argv = qemu_argv(kvm, Path("/k/Image"), None, "x")
    assert argv[argv.index("-cpu") + 1] == "host" and "-initrd" not in argv
    net = Profile(name="n", accel="tcg", network=True,
                  netdev_options=("hostfwd=tcp:127.0.0.1:2222-:22",))
    argv = qemu_argv(net, Path("/k/Image"), None, "x")
    assert argv[argv.index("-netdev") + 1] == "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22"
    assert "virtio-net-pci,netdev=n0,romfile=" in argv


# ---------------------------------------------------------------------------- one shared boot


@pytest.fixture(scope="module")
def session(kernel_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("boot") / "console.log"
    s = QemuTarget("default").boot(kernel_artifact, console_log=log)
    yield s
    s.shutdown()


@pytest.mark.boot
@pytest.mark.kernel
def test_boot_reaches_ready_with_stages_and_a_console_log(session, kernel_artifact):
    stages = session.boot_stages
    assert "init_reached" in stages and "guest_ready" in stages
    # the default profile boots with earlycon: the kernel's first line is seen at once
    assert 0 < stages["kernel_started"] <= stages["init_reached"] <= stages["guest_ready"]
    log = session.console_log_path
    assert log.is_file() and b"@@MMLAB-READY:" in log.read_bytes()
    assert Path(str(log) + ".cmd").read_text().startswith("qemu-system-aarch64 ")
    json.dumps(session.info.__dict__)  # the boot facts are JSON-ready
    assert session.run("uname -r").output.strip() == kernel_artifact.release


@pytest.mark.boot
@pytest.mark.kernel
def test_run_gives_exact_output_and_exit_status(session):
    res = session.run("echo out; echo err >&2; printf 'no newline'; exit 3")
    assert res.output == "out\nerr\nno newline"
    assert res.exit_status == 3 and res.verdict == "fail" and res.duration > 0
    res = session.run(["printf", "%s|", "a b", "c'd", "$HOME", "*"])
    assert res.output == "a b|c'd|$HOME|*|" and res.ok
    assert session.run("exit 4").skipped


@pytest.mark.boot
@pytest.mark.kernel
def test_long_commands_cross_the_tty_line_limit(session):
    word = "x" * 9000
    res = session.run(f"echo {word} | wc -c")
    assert res.output.strip() == "9001"


@pytest.mark.boot
@pytest.mark.kernel
def test_kernel_messages_on_the_console_do_not_corrupt_output(session):
    # <0> (emergency) messages reach the console even at the session's loglevel 1.
    script = ("for i in 1 2 3 4 5 6; do printf 'part%d-' $i; "
              "echo '<0>mmlab console noise' > /dev/kmsg; done; echo end")
    res = session.run(script)
    assert res.output == "part1-part2-part3-part4-part5-part6-end\n"
    assert res.ok
    assert b"mmlab console noise" in session.console_log_path.read_bytes()


@pytest.mark.boot
@pytest.mark.kernel
def test_put_get_and_dmesg(session, tmp_path):
    src = tmp_path / "blob"
    src.write_bytes(os.urandom(20000) + b"\x00\r\n\x03tail")
    session.put(src, "/tmp/blob")
    assert session.run("wc -c < /tmp/blob").output.strip() == str(src.stat().st_size)
    dst = tmp_path / "back"
    session.get("/tmp/blob", dst)
    assert dst.read_bytes() == src.read_bytes()
    with pytest.raises(FileNotFoundError):
        session.get("/nonexistent", tmp_path / "x")
    log = session.dmesg()
    assert "Linux version" in log and "Run /init as init process" in log


@pytest.mark.boot
@pytest.mark.kernel
def test_a_hung_command_times_out_and_the_session_recovers(session):
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout) as exc:
        session.run("echo started; sleep 1000", timeout=0.5)
    assert exc.value.recovered and exc.value.log == str(session.console_log_path)
    assert time.monotonic() - t0 < 60
    assert session.run("echo still here").output == "still here\n"


# ---------------------------------------------------------------------------- boots of their own


@pytest.mark.boot
@pytest.mark.kernel
def test_clean_poweroff(kernel_artifact, tmp_path):
    s = QemuTarget("default").boot(kernel_artifact, console_log=tmp_path / "c.log")
    assert s.alive
    s.shutdown()
    assert s.clean_shutdown is True and not s.alive
    assert s.info.details["qemu_exit_status"] == 0
    s.shutdown()  # idempotent


@pytest.mark.boot
@pytest.mark.kernel
def test_kernel_panic_mid_session_fails_fast_with_the_log(kernel_artifact, tmp_path):
    log = tmp_path / "panic.log"
    s = QemuTarget("default").boot(kernel_artifact, console_log=log)
    t0 = time.monotonic()
    with pytest.raises(KernelPanic) as exc:
        s.run("echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger", timeout=120)
    assert time.monotonic() - t0 < 30  # not the 120 s (x scale) timeout
    err = exc.value
    assert "sysrq" in err.line.lower() or "sysrq" in log.read_text(errors="replace").lower()
    assert err.log == str(log) and "Kernel panic - not syncing" in log.read_text(errors="replace")
    assert err.verdict == "panic" and not s.alive
    s.shutdown()


@pytest.mark.boot
@pytest.mark.kernel
def test_init_dying_at_boot_is_a_panic_verdict(kernel_artifact, tmp_path):
    log = tmp_path / "initdies.log"
    with pytest.raises(KernelPanic) as exc:
        QemuTarget("default").boot(kernel_artifact, console_log=log,
                                   cmdline=["rdinit=/bin/false"])
    assert "Attempted to kill init" in exc.value.line
    assert exc.value.stage.startswith("boot") and log.is_file()


@pytest.mark.fault('guest never gets ready', 'boot timeout, the QEMU killed, the console log kept', 'n/a (target)')
@pytest.mark.boot
@pytest.mark.kernel
def test_a_guest_that_never_gets_ready_is_a_boot_timeout(kernel_artifact, tmp_path):
    # init replaced by `cat`: the kernel boots, nothing ever answers.
    log = tmp_path / "hang.log"
    t0 = time.monotonic()
    with pytest.raises(BootTimeout) as exc:
        QemuTarget("default").boot(kernel_artifact, console_log=log,
                                   cmdline=["rdinit=/bin/cat"], boot_timeout=2)
    assert time.monotonic() - t0 < 60
    assert exc.value.log == str(log) and log.is_file()
    assert "init_reached" not in exc.value.stage
    assert "last stage reached" in str(exc.value)


@pytest.mark.boot
@pytest.mark.kernel
def test_an_unresponsive_guest_gets_killed_after_a_timeout(kernel_artifact, tmp_path):
    s = QemuTarget("default").boot(kernel_artifact, console_log=tmp_path / "c.log")
    with pytest.raises(CommandTimeout) as exc:
        # $$ is the console agent itself: stopped, it can no longer answer even ^C.
        s.run("kill -STOP $$; sleep 1000", timeout=0.5)
    assert not exc.value.recovered and not s.alive
    with pytest.raises(GuestDied):
        s.run("echo too late")
    s.shutdown()


@pytest.mark.boot
@pytest.mark.kernel
def test_guest_killed_mid_output_is_guest_died_with_partial_output(kernel_artifact, tmp_path):
    log = tmp_path / "killed.log"
    s = QemuTarget("default").boot(kernel_artifact, console_log=log)

    def kill_when_output_flows() -> None:
        for _ in range(600):
            if log.stat().st_size > s_size + 20000:
                break
            time.sleep(0.05)
        os.kill(s.pid, signal.SIGKILL)

    s_size = log.stat().st_size
    killer = threading.Thread(target=kill_when_output_flows)
    killer.start()
    with pytest.raises(GuestDied) as exc:
        s.run("i=0; while :; do i=$((i+1)); echo line $i; done", timeout=120)
    killer.join()
    err = exc.value
    assert err.log == str(log) and err.exit_code == -signal.SIGKILL
    assert err.output.startswith("line 1\nline 2\n")
    assert not s.alive
    s.shutdown()


@pytest.mark.boot
@pytest.mark.kernel
def test_missing_module_is_a_skip_verdict(kernel_artifact, tmp_path):
    """A kernel built without test_vmalloc: the guest test says skip (exit 4), clearly."""
    art_dir = tmp_path / "artifact"
    shutil.copytree(kernel_artifact.path, art_dir,
                    ignore=shutil.ignore_patterns("vmlinux", "build.log", "test_vmalloc.ko*"))
    meta = dict(kernel_artifact.metadata, key="no-test-vmalloc-" + kernel_artifact.key[:16])
    (art_dir / "metadata.json").write_text(json.dumps(meta))
    dep = art_dir / "modules" / "lib" / "modules" / kernel_artifact.release / "modules.dep"
    if dep.exists():
        dep.write_text("".join(ln + "\n" for ln in dep.read_text().splitlines()
                               if "test_vmalloc" not in ln))
    art = Artifact.load(art_dir)
    assert art.module("test_vmalloc") is None
    with QemuTarget("default").boot(art, console_log=tmp_path / "c.log") as s:
        res = s.run(["vmalloc.sh", "smoke"])
        assert res.exit_status == 4 and res.skipped and res.verdict == "skip"
        assert "SKIP: test_vmalloc.ko not found" in res.output
        res = s.run(["ptdump_vmalloc_stress.sh"])
        assert res.skipped


@pytest.mark.boot
@pytest.mark.kernel
@pytest.mark.network
def test_user_mode_network_with_a_host_port_forward(kernel_artifact, tmp_path):
    import dataclasses
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    profile = dataclasses.replace(load_profile("net"),
                                  netdev_options=(f"hostfwd=tcp:127.0.0.1:{port}-:8080",))
    with QemuTarget(profile).boot(kernel_artifact, console_log=tmp_path / "c.log") as s:
        assert "inet 10.0.2.15/24" in s.run("ip addr show eth0").output
        s.run("(echo hello-from-guest | nc -l -p 8080 > /tmp/got) >/dev/null 2>&1 &")
        deadline = time.monotonic() + 30
        while True:  # user-mode net accepts at once; the guest listener may lag
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                    c.sendall(b"hello-from-host\n")
                    got = c.recv(100)
                if got:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "no answer through the port forward"
            time.sleep(0.5)
        assert got == b"hello-from-guest\n"
        assert s.run("sleep 0.5; cat /tmp/got").output == "hello-from-host\n"


@pytest.mark.boot
@pytest.mark.kernel
def test_qemu_refusing_the_machine_is_a_clear_error(kernel_artifact, tmp_path):
    import dataclasses

    bad = dataclasses.replace(load_profile("default"), accel="tcg", cpu="no-such-cpu",
                              cpu_options=())
    with pytest.raises(GuestDied) as exc:
        QemuTarget(bad).boot(kernel_artifact, console_log=tmp_path / "c.log")
    assert "QEMU exited before the kernel started" in str(exc.value)
    assert "no-such-cpu" in str(exc.value)


def test_target_specs():
    from orchestrator.targets import make_target

    assert make_target("qemu").profile.name == "default"
    assert make_target("qemu:cortex-a72").profile.cpu == "cortex-a72"
    assert make_target("qemu:smp1").name == "qemu:smp1"
    with pytest.raises(Exception, match="unknown target"):
        make_target("teleport:x")


@pytest.mark.boot
@pytest.mark.kernel
def test_mmlab_boot_command_runs_commands_and_returns_the_status(kernel_artifact, tmp_path):
    import subprocess
    import sys

    log = tmp_path / "cli.log"
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator", "boot", str(kernel_artifact.path),
         "--console-log", str(log), "-c", "echo first", "--", "sh", "-c", "echo second; exit 5"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "MMLAB_PROGRESS": "plain"})
    assert res.returncode == 5, res.stderr
    assert res.stdout == "first\nsecond\n"
    assert "guest_ready" in res.stderr and str(log) in res.stderr and log.is_file()


# ---------------------------------------------------------------------------- a FAKE guest

CONSOLE_DATA = Path(__file__).parent / "data" / "console"


def _fake_guest_driver(tmp_path: Path, crash: Path):
    """A ConsoleDriver on tests/data/console/fake_guest.py (a FAKE guest, see there)."""
    import sys

    import pexpect

    from orchestrator.targets.console import ConsoleDriver

    log_path = tmp_path / "fake-console.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed by the test
    child = pexpect.spawn(sys.executable, [str(CONSOLE_DATA / "fake_guest.py"), "tok123",
                                           str(crash)], echo=False, timeout=None)
    child.logfile_read = log
    return ConsoleDriver(child, log, log_path, "tok123", scale=1.0), log


@pytest.mark.fault('oops / panic_on_oops during an entry (a FAKE guest replaying a recorded oops: the test kernel cannot oops on demand)', 'detected from the console at once, the report kept in the log, verdict crashed', 'n/a (target)')
@pytest.mark.parametrize("panic_on_oops", [False, True])
def test_fake_guest_oops_is_detected_fast_with_the_report_in_the_log(tmp_path, panic_on_oops):
    """An oops that does not panic cannot be produced by the test kernel (no LKDTM; sysrq-c
    panics), so a FAKE guest replays a recorded arm64 oops on the console."""
    from orchestrator.targets import KernelOops

    crash = CONSOLE_DATA / "arm64-oops.txt"
    if panic_on_oops:
        crash = tmp_path / "oops-panic.txt"
        crash.write_bytes((CONSOLE_DATA / "arm64-oops.txt").read_bytes()
                          + b"[   41.518000] Kernel panic - not syncing: Oops: Fatal exception\n")
    driver, log = _fake_guest_driver(tmp_path, crash)
    try:
        assert set(driver.wait_ready(30)) == {"kernel_started", "init_reached", "guest_ready"}
        t0 = time.monotonic()
        expected = KernelPanic if panic_on_oops else KernelOops
        with pytest.raises(expected) as exc:
            driver.run("cat /proc/version", timeout=120)
        assert time.monotonic() - t0 < 20
        if panic_on_oops:
            assert exc.value.line == "Kernel panic - not syncing: Oops: Fatal exception"
        else:
            assert exc.value.line.startswith("Unable to handle kernel NULL pointer dereference")
            assert exc.value.verdict == "oops"
        assert driver.dead and not driver.child.isalive()
        text = Path(exc.value.log).read_bytes()
        assert b"Internal error: Oops" in text and b"pmd_free_pte_page" in text
    finally:
        driver.kill()
        log.close()
