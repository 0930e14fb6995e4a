"""The SSH board target against real boards: QEMU arm64 guests running dropbear.

Everything here happens for real: a board kernel built by the pipeline
(kernel_configs/board.config), the board image with dropbear/sftp-server/kexec-tools, SSH
over a 127.0.0.1 port forward with host-key checks, SFTP deploys, kexec, build-id checks,
restores by reboot, sshd killed with kill -9, boards power-cycled by their power hook.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import threading
import time
from pathlib import Path

import pytest

from orchestrator.errors import InputError, TargetError
from orchestrator.targets.ssh import (
    BoardConfig,
    ConnectionLost,
    HostKeyRefused,
    SshTarget,
    boot_token,
    parse_build_id,
)

DATA = Path(__file__).parent / "data" / "boards"


# ---------------------------------------------------------------------------- no board


def test_parse_build_id_from_elf_notes():
    def note(name: bytes, ntype: int, desc: bytes) -> bytes:
        pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
        return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)

    blob = note(b"Xen\0", 6, b"\1\2\3") + note(b"GNU\0", 3, bytes.fromhex("ab" * 20))
    assert parse_build_id(blob) == "ab" * 20
    assert parse_build_id(note(b"Linux\0", 0x100, b"\0" * 4)) is None


def test_board_config_validation():
    with pytest.raises(InputError, match="boot must be"):
        BoardConfig(name="x", address="h", boot="pxe")
    with pytest.raises(InputError, match="needs boot_hook"):
        BoardConfig(name="x", address="h", boot="hook")
    with pytest.raises(InputError, match="default_kernel"):
        BoardConfig(name="x", address="h", restore="kexec")
    assert BoardConfig(name="x", address="h", port=2222).host_key_name == "[h]:2222"


# ---------------------------------------------------------------------------- boards



@pytest.fixture(scope="module")
def board_kernel():
    from orchestrator.kernel.build import BuildRequest, build_kernel

    art = build_kernel(BuildRequest.default("board"))
    assert art.config().get("CONFIG_KEXEC_FILE") == "y"
    return art


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from orchestrator.image.board_image import board_keys

    return board_keys(tmp_path_factory.mktemp("board-keys"))


@pytest.fixture(scope="module")
def board(board_kernel, keys, tmp_path_factory):
    """One stand-in board booted on the board kernel (its default kernel)."""
    from orchestrator.image.board_image import build_board_image
    from orchestrator.targets.standin_board import QemuBoard

    image = build_board_image(board_kernel, keys)
    b = QemuBoard.start(tmp_path_factory.mktemp("board1"), board_kernel, image)
    try:
        b.wait_ssh(120)
        yield b
    finally:
        b.stop()


@pytest.fixture
def known_hosts(tmp_path, keys, board):
    return keys.write_known_hosts(tmp_path / "known_hosts", [("127.0.0.1", board.port)])


def _cfg(board, keys, known_hosts, **kw):
    from boards import board_config

    return board_config("b1", board, keys, known_hosts, **kw)


def _expected_fp(public: str) -> str:
    blob = base64.b64decode(public.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@pytest.mark.fault('SSH host-key mismatch / unknown key', 'refused with both fingerprints, nothing sent', '2')
@pytest.mark.kernel
@pytest.mark.boot
@pytest.mark.network
def test_wrong_and_unknown_host_key_are_refused_with_fingerprint(board, keys, tmp_path):
    fp = _expected_fp(keys.host_public)
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC/zfrxwb8fxnCu6UwWbjmyNS+NVxB73hHxC01rQk8jX"
    wrong = tmp_path / "wrong"
    wrong.write_text(f"[127.0.0.1]:{board.port} {other}\n")
    with pytest.raises(HostKeyRefused) as exc:
        SshTarget(_cfg(board, keys, wrong)).connect()
    assert fp in str(exc.value) and exc.value.fingerprint == fp
    assert _expected_fp(other) in str(exc.value)          # what known_hosts expected

    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(HostKeyRefused, match="unknown host key") as exc:
        SshTarget(_cfg(board, keys, empty)).connect()
    assert exc.value.fingerprint == fp

    # explicit opt-in: trust on first use records the key; later connects check it
    tofu = _cfg(board, keys, empty, trust_on_first_use=True)
    SshTarget(tofu).connect().close()
    assert keys.host_public in empty.read_text()
    SshTarget(_cfg(board, keys, empty)).connect().close()


@pytest.mark.kernel
@pytest.mark.boot
@pytest.mark.network
@pytest.mark.slow
def test_deploy_kexec_verify_run_restore(board, board_kernel, keys, known_hosts, tmp_path):
    target = SshTarget(_cfg(board, keys, known_hosts))
    log = tmp_path / "boot.log"
    before = target.running_kernel(target.connect())
    session = target.boot(board_kernel, console_log=log)
    try:
        running = session.info.details["running_kernel"]
        assert running["build_id"] == board_kernel.build_id
        assert running["release"] == board_kernel.release
        assert running["boot_id"] != before["boot_id"]                  # a new boot
        assert session.info.details["token"] in running["cmdline"].split()
        assert {"connected", "deployed", "boot_started", "guest_ready"} <= set(
            session.boot_stages)
        res = session.run(["/mmlab/tests/vmalloc.sh", "--direct", "run_test_mask=1",
                           "nr_pages=1", "test_loop_count=200"], timeout=60)
        assert res.ok, res.output
        from orchestrator.parsers import test_vmalloc

        parsed = test_vmalloc.parse(session.dmesg()).to_json()
        assert parsed["runs"] and not parsed.get("unexpected_failures")
        res = session.run(["/mmlab/tests/ptdump.sh", "-n", "2"], timeout=60)
        assert res.ok and "mmlab-ptdump: reads=2" in res.output, res.output
        assert session.run("exit 3").exit_status == 3
        src = tmp_path / "payload"
        src.write_bytes(bytes(range(256)) * 64)
        session.put(src, "/tmp/payload")
        session.get("/tmp/payload", tmp_path / "back")
        assert (tmp_path / "back").read_bytes() == src.read_bytes()
        # the dropbear process serving this connection dies mid-command: a clear error,
        # the session reconnects (the daemon still listens) and goes on
        with pytest.raises(ConnectionLost, match="connection lost during") as exc:
            session.run("sleep 1; kill -9 $PPID; sleep 5", timeout=60)
        assert exc.value.reconnected
        assert session.run(["uname", "-r"]).output.strip() == board_kernel.release
    finally:
        session.shutdown()
    # dmesg saved first, then the default kernel restored (a new boot, no token)
    assert "fix_size_alloc_test" in Path(session.info.details["dmesg"]).read_text()
    assert session.restored and session.info.details["restore"]["ok"]
    after = target.running_kernel(target.connect())
    assert after["boot_id"] not in (before["boot_id"], running["boot_id"])
    assert "mmlab.boot=" not in after["cmdline"]
    # the console command captured the kexec'd kernel's boot
    assert "Linux version" in log.read_text(errors="replace")


def test_boot_token_marks_only_kernels_mmlab_booted():
    assert boot_token({"cmdline": "console=ttyAMA0 mmlab.boot=0a1b2c3d4e5f quiet"}) == \
        "mmlab.boot=0a1b2c3d4e5f"
    assert boot_token({"cmdline": "console=ttyAMA0 root=/dev/vda2"}) is None
    assert boot_token({}) is None


@pytest.mark.kernel
@pytest.mark.boot
@pytest.mark.network
@pytest.mark.slow
def test_test_kernel_left_by_an_earlier_run_is_not_taken_for_the_default(
        board, board_kernel, keys, known_hosts, tmp_path):
    """An earlier run ended without restoring (here: restore = "none"); the next run must
    restore the board before it records the board's default kernel."""
    first = SshTarget(_cfg(board, keys, known_hosts, restore="none"))
    before = first.running_kernel(first.connect())
    assert boot_token(before) is None
    s1 = first.boot(board_kernel, console_log=tmp_path / "first.log")
    s1.shutdown()
    left = first.running_kernel(first.connect())
    assert boot_token(left) == s1.info.details["token"]               # still the test kernel

    # restore = "none" cannot bring the default back: a clear error, nothing booted
    stuck = SshTarget(_cfg(board, keys, known_hosts, restore="none"))
    with pytest.raises(TargetError, match="runs a test kernel") as exc:
        stuck.boot(board_kernel, console_log=tmp_path / "stuck.log")
    assert "reboot the board" in exc.value.hint

    second = SshTarget(_cfg(board, keys, known_hosts))             # restore = "reboot"
    s2 = second.boot(board_kernel, console_log=tmp_path / "second.log")
    try:
        leftover = s2.info.details["leftover"]
        assert leftover["kernel"]["boot_id"] == left["boot_id"] and leftover["restore"]["ok"]
        default = s2.info.details["default_kernel"]
        assert boot_token(default) is None and default["boot_id"] != left["boot_id"]
        assert s2.run(["true"]).ok
    finally:
        s2.shutdown()
    assert s2.restored
    after = second.running_kernel(second.connect())
    assert boot_token(after) is None


@pytest.mark.fault('SSH drop mid-run (sshd killed on the board)', 'the entry is a guest-died verdict, finished results kept', '1')
@pytest.mark.kernel
@pytest.mark.boot
@pytest.mark.network
@pytest.mark.slow
def test_sshd_killed_mid_run_keeps_finished_results(board, board_kernel, keys, known_hosts,
                                                    tmp_path):
    """run_plan on a board (the runner QEMU uses); sshd is killed with kill -9 during the
    second entry: the first result stays, the second is a clear connection-lost failure,
    and the power hook brings the board back on its default kernel."""
    from orchestrator.run.plans import load_plan
    from orchestrator.run.results import RunStore
    from orchestrator.run.runner import KernelUnderTest, run_plan

    cfg = _cfg(board, keys, known_hosts, reconnect_timeout=8)
    plan = load_plan(str(DATA / "plan-slow-second.toml"))
    store = RunStore(tmp_path / "run")
    store.start({"kind": "test"}, resume=False)
    first = store.result_path("board", "fix_size_p1", 0)
    killed = threading.Event()

    def killer():
        deadline = time.monotonic() + 400
        while not first.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # the second entry is running
        conn = SshTarget(cfg).connect()
        try:
            conn.exec("kill -9 $(pidof dropbear)", 10)
        except Exception:  # noqa: BLE001 - our own connection dies with sshd
            pass
        killed.set()

    cycles_before = board.state()["power_cycles"]
    t = threading.Thread(target=killer, daemon=True)
    t.start()
    sessions = []

    class Recording(SshTarget):
        def boot(self, *a, **kw):
            s = super().boot(*a, **kw)
            sessions.append(s)
            return s

    run_plan([KernelUnderTest("board", board_kernel)], plan, store, lambda: Recording(cfg))
    t.join(5)
    assert killed.is_set()
    results = {r["entry"]: r for r in store.load_all()}
    assert results["fix_size_p1"]["verdict"] == "ok"                  # kept
    lost = results["ptdump_long"]
    assert lost["verdict"] != "ok" and "SSH connection lost" in lost["error"], lost
    details = sessions[0].info.details
    assert details["restore"]["ok"] and details["restore"].get("power_hook")
    assert board.state()["power_cycles"] == cycles_before + 1
    # and the board is usable again
    SshTarget(cfg).connect().close()


def test_connection_lost_is_a_guest_died():
    from orchestrator.targets.base import GuestDied

    assert issubclass(ConnectionLost, GuestDied)


@pytest.mark.kernel
@pytest.mark.boot
@pytest.mark.network
@pytest.mark.slow
def test_boot_by_hook_and_restore_by_power(board, board_kernel, keys, known_hosts, tmp_path):
    """boot = "hook": a host command installs the kernel for the next boot and reboots the
    board (here: the stand-in's boot-once entry + power cycle); restore = "power"."""
    import sys

    hook = [sys.executable, "-m", "orchestrator.targets.standin_board", "boot-once", str(board.state_dir),
            "{local_image}", "{local_initrd}", "{cmdline}"]
    target = SshTarget(_cfg(board, keys, known_hosts, boot="hook", boot_hook=hook,
                            restore="power"))
    cycles = board.state()["power_cycles"]
    with target.boot(board_kernel, console_log=tmp_path / "boot.log") as session:
        running = session.info.details["running_kernel"]
        assert running["build_id"] == board_kernel.build_id
        assert session.info.details["token"] in running["cmdline"].split()
        assert session.run(["uname", "-r"]).output.strip() == board_kernel.release
    assert session.restored
    assert board.state()["power_cycles"] == cycles + 2          # the hook's, the restore's
    after = target.running_kernel(target.connect())
    assert session.info.details["token"] not in after["cmdline"]


def test_a_malformed_known_hosts_line_is_a_one_line_error(tmp_path):
    """A damaged known_hosts line was a traceback (paramiko's InvalidHostKey is no
    SSHException); nothing is contacted before the file is read."""
    from orchestrator.targets.ssh import _Connection

    kh = tmp_path / "known_hosts"
    kh.write_text("[127.0.0.1]:2222 ssh-ed25519 AAAA!!!notbase64\n")
    cfg = BoardConfig(name="b1", address="127.0.0.1", port=9, known_hosts=str(kh), agent=False)
    with pytest.raises(InputError, match="malformed entry") as ei:
        _Connection(cfg).open(timeout=1)
    assert "\n" not in str(ei.value) and "known_hosts" in ei.value.hint
