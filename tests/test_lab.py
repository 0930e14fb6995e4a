"""The lab: inventories, leases, a plan across two real stand-in boards in parallel, and a
board whose kernel never comes back (power hook, retry, marked, the other board goes on)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError, InputError
from orchestrator.lab.runtime import BoardBusy, Lease, load_inventory

DATA = Path(__file__).parent / "data" / "boards"
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- no board


def _inv(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "lab.toml"
    p.write_text(textwrap.dedent(text))
    return p


def test_inventory_loads_with_defaults_and_tags(tmp_path):
    inv = load_inventory(_inv(tmp_path, """
        lease_dir = "leases"
        [defaults]
        user = "lab"
        key = "keys/id"
        known_hosts = "/etc/mmlab/known_hosts"
        [[board]]
        name = "a"
        address = "10.0.0.7"
        tags = { soc = "rk3588", memory = "16G" }
        power = ["pdu", "cycle", "4"]
        [[board]]
        name = "b"
        address = "10.0.0.8"
        port = 2200
        user = "root"
        tags = { soc = "imx8mp" }
    """))
    a, b = inv.boards
    assert (a.user, b.user, b.port) == ("lab", "root", 2200)
    assert a.key == str(tmp_path / "keys/id")             # relative to the inventory
    assert a.known_hosts == "/etc/mmlab/known_hosts"
    assert inv.lease_dir == tmp_path / "leases"
    assert [x.name for x in inv.select(tags={"soc": "imx8mp"})] == ["b"]
    with pytest.raises(InputError, match="no board"):
        inv.select(["zz"])


@pytest.mark.parametrize("body, message", [
    ("[[board]]\naddress = \"h\"\n", r"board #1 \(\?\): `name` is missing"),
    ("[[board]]\nname = \"a\"\n", r"board #1 \(a\): `address` is missing"),
    ("[[board]]\nname = \"a\"\naddress = \"h\"\nprot = 22\n", r"unknown keys \['prot'\]"),
    ("[[board]]\nname = \"a\"\naddress = \"h\"\n[[board]]\nname = \"a\"\naddress = \"i\"\n",
     "board #2 .*duplicate board name"),
    ("[[board]]\nname = \"a\"\naddress = \"h\"\nport = \"22\"\n", "`port` must be"),
    ("[[board]]\nname = \"a\"\naddress = \"h\"\npower = \"pdu cycle 4\"\n",
     "`power` must be a list of strings"),
    ("[[board]]\nname = \"a\"\naddress = \"h\"\nrestore = \"kexec\"\n", "default_kernel"),
    ("[[board]]\nname = \"a\"\naddress = \"h\"\ntags = \"x\"\n", "`tags` must be a table"),
    ("boards = 1\n", "unknown top-level keys"),
    ("", r"no \[\[board\]\] entries"),
    ("[[board]\n", "not valid TOML"),
    # a name with ../ escaped --out and put the lease file at the filesystem root
    ("[[board]]\nname = \"../../x\"\naddress = \"h\"\n", "is not a short name"),
    ("[[board]]\nname = \"a b\"\naddress = \"h\"\n", "is not a short name"),
])
@pytest.mark.fault('bad inventory (missing keys, typos, shell strings, hostile names, bad TOML)', 'one-line error naming the board and key, before any build', '2')
def test_inventory_errors_are_clear(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load_inventory(_inv(tmp_path, body))


def test_lease_cannot_be_held_twice_even_across_processes(tmp_path):
    with Lease(tmp_path, "a", {"run": "first"}):
        with pytest.raises(BoardBusy, match="leased by another run.*first"):
            Lease(tmp_path, "a").acquire()
        # another process sees the same lock (flock on the same file)
        code = ("import sys; from orchestrator.lab.runtime import Lease, BoardBusy\n"
                "try:\n Lease(sys.argv[1], 'a').acquire(); print('got')\n"
                "except BoardBusy as e: print('busy')")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                             text=True, check=True).stdout.strip()
        assert out == "busy"
    Lease(tmp_path, "a").acquire().release()                # free again once released


def test_a_second_lab_run_finds_the_board_busy(tmp_path):
    """While one run holds a board's lease, another lab run marks it busy and never
    touches it (the address is not even reachable here)."""
    from orchestrator.lab.runtime import run_board
    from orchestrator.run.plans import load_plan
    from orchestrator.targets.ssh import BoardConfig

    cfg = BoardConfig(name="a", address="127.0.0.1", port=9, known_hosts=str(tmp_path / "kh"))
    plan = load_plan(str(DATA / "plan.toml"))
    with Lease(tmp_path / "leases", "a", {"run": "nightly-1"}):
        status = run_board(cfg, [], plan, tmp_path / "out", tmp_path / "leases", retries=0)
    assert status["status"] == "busy" and "nightly-1" in status["error"]
    assert json.loads((tmp_path / "out/boards/a/status.json").read_text())["status"] == "busy"


# ---------------------------------------------------------------------------- boards


@pytest.fixture(scope="module")
def board_kernel():
    from orchestrator.kernel.build import BuildRequest, build_kernel

    return build_kernel(BuildRequest.default("board"))


@pytest.fixture(scope="module")
def lab_boards(board_kernel, tmp_path_factory):
    """Two stand-in boards, started in parallel, with a known_hosts for both."""
    from orchestrator.image.board_image import board_keys, build_board_image
    from orchestrator.targets.standin_board import QemuBoard

    keys = board_keys(tmp_path_factory.mktemp("lab-keys"))
    image = build_board_image(board_kernel, keys)
    boards = [QemuBoard.start(tmp_path_factory.mktemp(f"labboard{i}"), board_kernel, image)
              for i in (1, 2)]
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda b: b.wait_ssh(180), boards))
        kh = keys.write_known_hosts(tmp_path_factory.mktemp("kh") / "known_hosts",
                                    [("127.0.0.1", b.port) for b in boards])
        yield boards, keys, kh
    finally:
        for b in boards:
            b.stop()


def _write_inventory(path: Path, boards, keys, kh, bad_second: bool = False) -> Path:
    from orchestrator.targets.standin_board import CMDLINE

    def q(words):
        return "[" + ", ".join(json.dumps(w) for w in words) + "]"

    text = [f'lease_dir = "{path.parent / "leases"}"', "", "[defaults]", 'user = "root"',
            f'key = "{keys.client_key}"', f'known_hosts = "{kh}"', "agent = false",
            f'board_keys = "{keys.directory}"',
            "timeout_scale = 4.0", "restore_timeout = 90"]
    for i, b in enumerate(boards, 1):
        cmdline = list(CMDLINE)
        boot_timeout = 90
        if bad_second and i == 2:
            # a kernel that never comes back: no init, and panic=0 waits forever
            cmdline += ["rdinit=/nonexistent", "panic=0"]
            boot_timeout = 30
        text += ["", "[[board]]", f'name = "b{i}"', 'address = "127.0.0.1"',
                 f"port = {b.port}", f"cmdline = {q(cmdline)}",
                 f"boot_timeout = {boot_timeout}",
                 f"power = {q([sys.executable, '-m', 'orchestrator.targets.standin_board', 'power-cycle', str(b.state_dir)])}",
                 f"console = {q(['tail', '-n', '0', '-F', str(b.console_log)])}",
                 f'tags = {{ soc = "qemu-virt", cpu = "max", memory = "512M", n = "{i}" }}']
    path.write_text("\n".join(text) + "\n")
    return path


@pytest.mark.kernel
@pytest.mark.boot
@pytest.mark.network
@pytest.mark.slow
def test_lab_runs_plan_on_two_boards_in_parallel(lab_boards, board_kernel, tmp_path):
    from orchestrator.lab.runtime import run_lab
    from orchestrator.run.plans import load_plan
    from orchestrator.run.runner import KernelUnderTest

    boards, keys, kh = lab_boards
    inv = load_inventory(_write_inventory(tmp_path / "lab.toml", boards, keys, kh))
    plan = load_plan(str(DATA / "plan.toml"))
    out = tmp_path / "out"
    summary = run_lab(inv, inv.boards, [KernelUnderTest("board", board_kernel)], plan, out,
                      retries=0)
    assert summary["ok"] == ["b1", "b2"], json.dumps(summary["boards"], indent=1)
    for name in ("b1", "b2"):
        root = out / "boards" / name
        results = {p.parent.name: json.loads(p.read_text())
                   for p in (root / "results").rglob("r0.json")}
        assert results["fix_size_p1"]["verdict"] == "ok"
        assert results["fix_size_p1"]["build_id"] == board_kernel.build_id
        assert results["fix_size_p1"]["parsed"]["test_vmalloc"]["runs"]
        assert results["ptdump_loop"]["verdict"] == "ok"
        assert "reads=3" in Path(results["ptdump_loop"]["output"]).read_text()
        status = json.loads((root / "status.json").read_text())
        assert status["status"] == "ok" and status["attempts"] == 1
        # dmesg saved, board restored (boot logs and .dmesg beside them)
        assert list((root / "logs").rglob("*.log.dmesg"))
    # the two boards ran at the same time: their busy windows overlap
    s1, s2 = (summary["boards"][n] for n in ("b1", "b2"))
    assert s1["started"] < s2["finished"] and s2["started"] < s1["finished"]
    assert "fix_size_p1" in summary["metrics"]
    assert set(summary["metrics"]["fix_size_p1"]) == {"b1", "b2"}


@pytest.mark.kernel
@pytest.mark.boot
@pytest.mark.network
@pytest.mark.slow
def test_lab_check_reaches_each_board_and_names_the_one_that_fails(lab_boards, board_kernel,
                                                                    tmp_path):
    """`mmlab lab check`: SSH with the verified host key and the running kernel of each
    board; a board nobody answers for is a FAIL line and exit status 1, the others still OK."""
    import socket

    boards, keys, kh = lab_boards
    inv = _write_inventory(tmp_path / "lab.toml", boards, keys, kh)

    def check():
        return subprocess.run([sys.executable, "-m", "orchestrator", "lab", "check",
                               "--inventory", str(inv)], capture_output=True, text=True,
                              cwd=REPO, timeout=300)

    res = check()
    assert res.returncode == 0, res.stdout + res.stderr
    lines = {ln.split()[0]: ln for ln in res.stdout.splitlines() if ln.strip()}
    for name in ("b1", "b2"):
        assert lines[name].split()[1] == "OK", res.stdout
        assert board_kernel.build_id in lines[name] and board_kernel.release in lines[name]
    # a third board on a loopback port where nothing listens
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    inv.write_text(inv.read_text() + f'\n[[board]]\nname = "b3"\naddress = "127.0.0.1"\n'
                   f"port = {dead_port}\nconnect_timeout = 5\n")
    res = check()
    assert res.returncode == 1, res.stdout + res.stderr
    lines = {ln.split()[0]: ln for ln in res.stdout.splitlines() if ln.strip()}
    assert lines["b1"].split()[1] == "OK" and lines["b2"].split()[1] == "OK"
    assert lines["b3"].split()[1] == "FAIL" and str(dead_port) in lines["b3"], res.stdout


@pytest.mark.fault('board not coming back (kexec into a kernel that hangs)', 'power-cycled, retried once, marked failed; the other boards finish', '1')
@pytest.mark.kernel
@pytest.mark.boot
@pytest.mark.network
@pytest.mark.slow
def test_lab_board_that_never_comes_back_is_retried_marked_and_lab_goes_on(
        lab_boards, board_kernel, tmp_path):
    """b2 kexecs into a kernel that panics and waits forever (panic=0): the boot times out,
    the power hook restarts its QEMU, the board is retried once, then marked failed; b1
    finishes the plan. Through the real CLI (exit status 1 for a failed board)."""
    boards, keys, kh = lab_boards
    inv = _write_inventory(tmp_path / "lab.toml", boards, keys, kh, bad_second=True)
    cycles = boards[1].state()["power_cycles"]
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "orchestrator", "lab", "run", "--inventory",
                          str(inv), "--plan", str(DATA / "plan.toml"), "--entries",
                          "fix_size_p1", "--kernel", str(board_kernel.path), "--retries", "1",
                          "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                         timeout=900)
    assert res.returncode == 1, res.stdout + res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == ["b1"] and summary["failed"] == ["b2"]
    b2 = summary["boards"]["b2"]
    assert b2["attempts"] == 2 and "not running after 30 s" in b2["error"]
    assert boards[1].state()["power_cycles"] == cycles + 2        # once per attempt
    # the first attempt's failed result is kept aside, the last one is in results/
    assert list((out / "boards" / "b2" / "attempts" / "1").rglob("r0.json"))
    r = json.loads(next((out / "boards" / "b2" / "results").rglob("r0.json")).read_text())
    assert r["verdict"] == "boot-failed"
    # the console log shows why
    log = Path(r["console_log"]).read_text(errors="replace")
    assert "Kernel panic" in log or "nonexistent" in log
    assert "B2" in res.stdout.upper() and "FAILED" in res.stdout
    b1 = json.loads(next((out / "boards" / "b1" / "results").rglob("r0.json")).read_text())
    assert b1["verdict"] == "ok"


@pytest.mark.kernel
@pytest.mark.boot
@pytest.mark.network
@pytest.mark.long  # ~5 min each: in `nox -s long`, not in the default run (CI time budget)
@pytest.mark.parametrize("cli", ["lab run --comparison", "compare --lab"])
def test_lab_renders_the_comparison_report_per_board(lab_boards, board_kernel, tmp_path, cli):
    """`mmlab lab run --comparison C` and `mmlab compare C --lab INV`: the kernels of a
    comparison file (here the A/A one, built with the board config: both are the same
    artifact) run on a board through the SSH target, and the board gets the same comparison
    model, HTML report and JUnit as a QEMU run."""
    boards, keys, kh = lab_boards
    inv = _write_inventory(tmp_path / "lab.toml", boards, keys, kh)
    out = tmp_path / "out"
    common = ["--boards", "b1", "--plan", str(DATA / "plan.toml"), "--entries", "fix_size_p1",
              "--repeats", "3", "--config", "board", "--out", str(out)]
    if cli == "compare --lab":
        args = ["compare", "aa-6.12", "--lab", str(inv), "--exit-code", *common]
    else:
        args = ["lab", "run", "--inventory", str(inv), "--comparison", "aa-6.12", *common]
    res = subprocess.run([sys.executable, "-m", "orchestrator", *args],
                         capture_output=True, text=True, cwd=REPO, timeout=1200)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == ["b1"] and set(summary["reports"]) == {"b1"}
    assert summary["verdicts"]["b1"]["status"] == "pass"
    root = out / "boards" / "b1"
    comp = json.loads((root / "results.json").read_text())
    assert comp["plan"]["target"].startswith("ssh board b1")
    assert {k["id"] for k in comp["kernels"]} == {"A", "B"}
    assert comp["analysis"]["verdict"]["headline"].startswith("PASS")
    html = (root / "report.html").read_text()
    assert "ssh board b1" in html and "fix_size" in html
    assert (root / "junit.xml").is_file()
    if cli == "compare --lab":
        assert "b1: PASS" in res.stdout and f"report:  {root / 'report.html'}" in res.stdout
    else:
        assert "report b1:" in res.stdout


@pytest.mark.fault('lab run into an existing --out without --resume', 'refused: results of two plans are never mixed', '2')
def test_lab_run_into_an_existing_out_needs_resume(tmp_path):
    """A second lab run into the same --out used to resume silently, mixing two plans."""
    inv = _inv(tmp_path, "[[board]]\nname = \"a\"\naddress = \"127.0.0.1\"\nport = 9\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "lab.json").write_text("{}")
    r = subprocess.run([sys.executable, "-m", "orchestrator", "lab", "run", "--inventory",
                        str(inv), "--kernel", "nope", "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "already holds a lab run" in r.stderr


def test_stand_in_power_off_kills_only_the_process_it_started(tmp_path):
    """The stand-in board's power hook killed whatever had the pid in board.json; a pid
    reused by another process after the board died must be left alone."""
    from orchestrator.targets.standin_board import power

    other = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "board.json").write_text(json.dumps(
            {"argv": ["qemu-system-aarch64", "-M", "virt"], "pid": other.pid}))
        power(tmp_path, "off")
        assert other.poll() is None, "an unrelated process was killed"
        (tmp_path / "board.json").write_text(json.dumps(
            {"argv": ["sleep", "30"], "pid": other.pid}))
        power(tmp_path, "off")                      # the same command line: it is ours
        assert other.wait(timeout=60) is not None
    finally:
        other.kill()
