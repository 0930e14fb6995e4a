"""Plans, the results store, the runner (real boots) and `mmlab run` with resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.paths import REPO_ROOT
from orchestrator.run.plans import load_plan, plan_from_dict
from orchestrator.run.results import RunStore


def test_default_plan_loads_with_timed_and_once_entries():
    plan = load_plan("default")
    ids = [e.id for e in plan.entries]
    assert {"fix_size_p1", "fix_size_p256", "smoke", "ptdump_stress"} <= set(ids)
    assert plan.repeats >= 3
    smoke = next(e for e in plan.entries if e.id == "smoke")
    assert smoke.once and smoke.runs_in(0) and not smoke.runs_in(1)


@pytest.mark.parametrize("data, match", [
    ({"entry": []}, "no \\[\\[entry\\]\\] tables"),
    ({"entry": [{"id": "a"}]}, "needs an id and a run list"),
    ({"entry": [{"id": "a", "run": ["nope.sh"]}]}, "guest_tests/nope.sh does not exist"),
    ({"entry": [{"id": "a", "run": ["ptdump.sh"], "parse": ["magic"]}]}, "unknown parser"),
    ({"entry": [{"id": "a", "run": ["ptdump.sh"]}, {"id": "a", "run": ["ptdump.sh"]}]},
     "not a unique simple name"),
    ({"entry": [{"id": "a", "run": "ptdump.sh -n 3"}]}, "non-empty list of strings"),
    ({"entry": [{"id": "a", "run": ["ptdump.sh"], "colour": 1}]}, "unknown keys"),
    ({"repeats": 0, "entry": [{"id": "a", "run": ["ptdump.sh"]}]}, "repeats must be a whole number >= 1"),
    # `repeat = 1` (a typo) was ignored and gave the default 3 repeats
    ({"repeat": 1, "entry": [{"id": "a", "run": ["ptdump.sh"]}]}, "unknown key\\(s\\) repeat "),
    ({"entry": [{"id": "a", "run": ["ptdump.sh"], "timeout": -5}]}, "timeout must be a positive"),
    ({"entry": [{"id": "a", "run": ["ptdump.sh"], "timeout": "soon"}]}, "is not a number"),
])
def test_bad_plans_are_clear_errors(data, match):
    with pytest.raises(InputError, match=match):
        plan_from_dict(data)


def test_unknown_plan_names_the_known_ones():
    with pytest.raises(InputError, match="unknown plan") as ei:
        load_plan("no-such-plan")
    assert "default" in ei.value.hint


def test_command_line_overrides_of_a_plan():
    from orchestrator.run.plans import load_plan_with

    plain = load_plan("default")
    same = load_plan_with("default")
    assert same == plain
    some = load_plan_with("default", entries="fix_size_p1,,smoke", repeats=7, profile="x")
    assert [e.id for e in some.entries] == ["fix_size_p1", "smoke"]
    assert (some.repeats, some.profile) == (7, "x")
    listed = load_plan_with("default", entries=["vm_map_ram"], repeats=1)
    assert [e.id for e in listed.entries] == ["vm_map_ram"] and listed.repeats == 1
    assert listed.profile == plain.profile
    # --repeats 0 or negative ran nothing and exited 0: now refused before any work
    for bad in (0, -2):
        with pytest.raises(InputError, match=f"--repeats {bad}: a plan runs each entry"):
            load_plan_with("default", repeats=bad)
    with pytest.raises(InputError, match="has no entries nope"):
        load_plan_with("default", entries="smoke,nope")


def test_store_refuses_to_mix_runs(tmp_path):
    store = RunStore(tmp_path / "r")
    store.start({"fingerprint": "one"}, resume=False)
    with pytest.raises(InputError, match="already holds a run"):
        RunStore(tmp_path / "r").start({"fingerprint": "one"}, resume=False)
    with pytest.raises(InputError, match="different run"):
        RunStore(tmp_path / "r").start({"fingerprint": "two"}, resume=True)
    with pytest.raises(InputError, match="nothing to resume"):
        RunStore(tmp_path / "other").start({"fingerprint": "one"}, resume=True)
    ok = {"kernel": "k", "entry": "e", "repeat": 0, "verdict": "ok"}
    store.write("k", "e", 0, ok)
    assert store.has("k", "e", 0) and not store.has("k", "e", 1)
    assert store.load_all() == [ok]
    assert not list((tmp_path / "r").rglob("*.tmp")), "no temporary files left"


@pytest.mark.kernel
@pytest.mark.boot
def test_crash_becomes_a_verdict_and_the_run_goes_on(tmp_path, kernel_artifact):
    from orchestrator.run.runner import KernelUnderTest, run_plan
    from orchestrator.targets.qemu import QemuTarget

    plan = replace(load_plan("selfcheck"), repeats=2)
    store = RunStore(tmp_path / "run")
    store.start({"fingerprint": "selfcheck"}, resume=False)
    run_plan([KernelUnderTest("k", kernel_artifact)], plan, store,
             lambda: QemuTarget("default"))
    res = {(r["entry"], r["repeat"]): r for r in store.load_all()}
    assert res[("fix_size_small", 0)]["verdict"] == "ok"
    tv = res[("fix_size_small", 0)]["parsed"]["test_vmalloc"]
    assert tv["runs"][0]["tests"]["fix_size_alloc_test"]["passed"] == 1
    hang = res[("hang", 0)]
    assert hang["verdict"] == "timeout" and hang["recovered"] is True
    crash = res[("crash", 0)]   # ran: a recovered timeout no longer ends the boot
    assert crash["verdict"] == "crashed"
    assert Path(crash["console_log"]).is_file()
    assert "sysrq" in Path(crash["console_log"]).read_text(errors="replace").lower()
    assert res[("after_crash", 0)]["verdict"] == "not-run"
    # the next repeat boots afresh: the first entry works again
    assert res[("fix_size_small", 1)]["verdict"] == "ok"


@pytest.mark.fault('SIGKILL mid-run, then --resume', 'finished results kept whole; --resume runs the rest and redoes none', '-9, then 0')
@pytest.mark.kernel
@pytest.mark.boot
def test_killed_run_keeps_results_and_resumes(tmp_path, kernel_artifact):
    out = tmp_path / "run"
    mmlab = [sys.executable, "-m", "orchestrator", "run", "--kernel", kernel_artifact.key,
             "--entries", "fix_size_p1,fix_size_p16,vm_map_ram", "--repeats", "2",
             "--out", str(out)]
    env = dict(os.environ, MMLAB_PROGRESS="plain")
    proc = subprocess.Popen(mmlab, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    first = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first is None:
        found = sorted((out / "results").rglob("r*.json")) if out.exists() else []
        first = found[0] if found else None
        time.sleep(0.2)
    assert first is not None, "no result appeared"
    os.killpg(proc.pid, signal.SIGKILL)  # as hard as an interruption gets
    proc.wait()
    kept = first.read_text()
    assert json.loads(kept)["verdict"] == "ok"
    done = subprocess.run(mmlab + ["--resume"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert first.read_text() == kept, "a finished result must not be redone"
    results = [json.loads(p.read_text()) for p in (out / "results").rglob("r*.json")]
    assert len(results) == 6 and all(r["verdict"] == "ok" for r in results)
    assert "fix_size_alloc_test pass" in done.stdout


def test_summary_lines_name_kernel_messages_ktap_and_coverage(tmp_path):
    """`mmlab run`'s summary on results with kernel messages (the dmesg parser's
    `unexpected` is a count: the summary crashed on it), a KTAP result and a coverage
    warning."""
    from orchestrator.run.runner import summarize

    r = {"kernel": "v7.3", "entry": "smoke", "repeat": 0, "verdict": "failed",
         "parsed": {"dmesg": {"unexpected": 2, "messages": [
             {"kind": "warning", "expected": None}, {"kind": "oops", "expected": None},
             {"kind": "alloc_failure", "expected": "align_shift_alloc_test"}]},
             "test_vmalloc": {"runs": [], "coverage": {"warnings": ["only 3 of 13 cases"]}},
             "ktap": {"documents": [{}], "status": "fail", "counts": {"pass": 1, "fail": 1}}}}
    (line,) = summarize([r])
    assert "2 kernel message(s): oops, warning" in line
    assert "KTAP fail: 1 pass, 1 fail" in line and "warning: only 3 of 13 cases" in line


@pytest.mark.fault('damaged result file / placeholder results', 'not counted as done: --resume runs them again; never dropped silently', '1 (mmlab run)')
def test_resume_reruns_placeholders_and_damaged_results(tmp_path):
    store = RunStore(tmp_path / "r")
    store.start({"fingerprint": "x"}, resume=False)
    base = {"kernel": "k", "entry": "e", "repeat": 0}
    store.write("k", "e", 0, base | {"verdict": "ok"})
    store.write("k", "e", 1, base | {"repeat": 1, "verdict": "not-run"})
    store.write("k", "e", 2, base | {"repeat": 2, "verdict": "boot-failed"})
    store.write("k", "e", 3, base | {"repeat": 3, "verdict": "failed"})
    store.result_path("k", "e", 4).write_text('{"kernel": "k", "entry": "e", "rep')
    assert [store.has("k", "e", r) for r in range(5)] == [True, False, False, True, False]
    results = store.load_all()
    assert len(results) == 4                       # the damaged one is not a result ...
    assert store.unreadable == [store.result_path("k", "e", 4)]   # ... and is said so


@pytest.mark.fault('unknown QEMU profile', 'one-line error before any build or run.json', '2')
def test_a_bad_profile_fails_before_anything_is_written(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "orchestrator", "run", "--kernel", "nope",
                        "--profile", "no-such-machine", "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no QEMU profile 'no-such-machine'" in r.stderr
    assert not out.exists()
