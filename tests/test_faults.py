"""Faults during real runs, through the command line (rows of docs/reliability.md's matrix).

Each test makes the fault happen for real on a real kernel in QEMU: an entry that hangs,
a kernel panic in the middle of a plan, a run killed by SIGINT/SIGTERM/SIGKILL and resumed,
a results disk that fills up mid-run, a malformed patch. Each asserts the exit status and
that no finished result is lost or redone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.paths import REPO_ROOT

ENV = dict(os.environ, MMLAB_PROGRESS="plain")


def mmlab(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=REPO_ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def results(out: Path) -> dict[tuple[str, int], dict]:
    res = {}
    for p in (out / "results").rglob("r*.json"):
        r = json.loads(p.read_text())
        res[(r["entry"], r["repeat"])] = r
    return res


@pytest.mark.kernel
@pytest.mark.boot
@pytest.mark.fault("guest hang (an entry that never returns)",
                   "stopped with ^C after its timeout: verdict timeout (recovered), the boot "
                   "goes on with the next entry", "1")
@pytest.mark.fault("kernel panic mid-plan (sysrq c)",
                   "verdict crashed with the console log; the entries after it are not-run "
                   "placeholders that --resume runs on a fresh boot", "1, then 0 on --resume")
def test_selfcheck_plan_hang_and_panic_then_resume(tmp_path, kernel_artifact):
    out = tmp_path / "run"
    first = mmlab("run", "--kernel", kernel_artifact.key, "--plan", "selfcheck", "--out",
                  str(out))
    assert first.returncode == 1, first.stderr[-2000:]
    assert "Traceback" not in first.stderr
    res = results(out)
    assert res[("fix_size_small", 0)]["verdict"] == "ok"
    assert res[("hang", 0)]["verdict"] == "timeout" and res[("hang", 0)]["recovered"]
    assert res[("crash", 0)]["verdict"] == "crashed"
    assert Path(res[("crash", 0)]["console_log"]).is_file()
    assert res[("after_crash", 0)]["verdict"] == "not-run"
    kept = {k: v for k, v in res.items() if v["verdict"] != "not-run"}
    again = mmlab("run", "--kernel", kernel_artifact.key, "--plan", "selfcheck", "--out",
                  str(out), "--resume")
    res2 = results(out)
    assert len(res2) == 4                                    # nothing lost, nothing doubled
    assert {k: res2[k] for k in kept} == kept                # finished results not redone
    assert res2[("after_crash", 0)]["verdict"] == "ok"       # the placeholder ran this time
    assert again.returncode == 1                             # the crash is still a failure


@pytest.mark.kernel
@pytest.mark.boot
@pytest.mark.parametrize("sig", [
    pytest.param(signal.SIGINT, marks=pytest.mark.fault(
        "SIGINT mid-run, then --resume", "finished results kept whole; --resume runs the "
        "rest and redoes none", "130, then 0")),
    pytest.param(signal.SIGTERM, marks=pytest.mark.fault(
        "SIGTERM mid-run, then --resume", "finished results kept whole; --resume runs the "
        "rest and redoes none", "143, then 0")),
], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_keeps_results_and_resumes(tmp_path, kernel_artifact, sig):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "orchestrator", "run", "--kernel", kernel_artifact.key,
            "--entries", "fix_size_p1,fix_size_p16,vm_map_ram", "--repeats", "2", "--out",
            str(out)]
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out / "results").exists() or \
            not list((out / "results").rglob("r*.json")):
        time.sleep(0.2)
        assert time.monotonic() < deadline, "no result appeared"
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (130, 143, -sig), (proc.returncode, err[-1000:])
    assert "Traceback" not in err
    before = {p: p.read_text() for p in (out / "results").rglob("r*.json")}
    assert before and all(json.loads(t)["verdict"] in ("ok", "not-run", "boot-failed")
                          for t in before.values())
    done = mmlab(*argv[3:], "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    after = {p: p.read_text() for p in (out / "results").rglob("r*.json")}
    assert len(after) == 6 and all(json.loads(t)["verdict"] == "ok" for t in after.values())
    for p, text in before.items():
        if json.loads(text)["verdict"] == "ok":
            assert after[p] == text, "a finished result was redone"


@pytest.mark.kernel
@pytest.mark.boot
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
@pytest.mark.fault("results disk full mid-run (a real tmpfs filled up)",
                   "one-line error; results written before it are whole; --resume after "
                   "freeing space completes the run", "2, then 0", lost=0)
def test_results_disk_filling_up_mid_run(tmp_path, kernel_artifact):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        out = mnt / "run"
        argv = [sys.executable, "-m", "orchestrator", "run", "--kernel", kernel_artifact.key,
                "--entries", "fix_size_p1,fix_size_p16", "--repeats", "2", "--out", str(out)]
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not list(out.glob("results/*/*/r*.json")):
            assert time.monotonic() < deadline, "no result appeared"
            time.sleep(0.1)
        filler = mnt / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 2, err[-2000:]
        assert "No space left on device" in err and "Traceback" not in err
        kept = {p: p.read_text() for p in out.glob("results/*/*/r*.json")}
        assert kept and all(json.loads(t)["verdict"] == "ok" for t in kept.values())
        filler.unlink()
        done = mmlab(*argv[3:], "--resume")
        assert done.returncode == 0, done.stderr[-2000:]
        after = {p: p.read_text() for p in out.glob("results/*/*/r*.json")}
        assert len(after) == 4 and all(after[p] == t for p, t in kept.items())
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.fault("malformed patch (no diff, a truncated hunk)",
                   "one line saying what is wrong and where, nothing applied", "2")
def test_malformed_patches_are_one_line_errors(tmp_path):
    tree = tmp_path / "tree"
    (tree / "arch" / "arm64").mkdir(parents=True)
    (tree / "a.c").write_text("one\ntwo\n")
    prose = tmp_path / "prose.mbox"
    prose.write_text("From: x <x@e.org>\nSubject: [PATCH] x\n\nJust words, no diff.\n"
                     "Signed-off-by: x <x@e.org>\n")
    trunc = tmp_path / "trunc.patch"
    trunc.write_text("Subject: [PATCH] t\n---\ndiff --git a/a.c b/a.c\n--- a/a.c\n+++ b/a.c\n"
                     "@@ -1,2 +1,3 @@\n one\n+new\n")
    for p in (prose, trunc):
        r = mmlab("series", "apply", str(p), "--tree", str(tree), timeout=60)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("mmlab: error:")
    assert (tree / "a.c").read_text() == "one\ntwo\n"
