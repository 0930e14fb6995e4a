"""test_vmalloc parser: every output variant, per test/worker results, runs cut short."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.parsers.test_vmalloc import cases_for_mask, parse_test_vmalloc, worse_status

DATA = Path(__file__).parent / "data" / "parsers"
ALL_612 = [
    "fix_size_alloc_test",
    "full_fit_alloc_test",
    "long_busy_list_alloc_test",
    "random_size_alloc_test",
    "fix_align_alloc_test",
    "random_size_align_alloc_test",
    "align_shift_alloc_test",
    "pcpu_alloc_test",
    "kvfree_rcu_1_arg_vmalloc_test",
    "kvfree_rcu_2_arg_vmalloc_test",
    "vm_map_ram_test",
]


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_real_612_console_two_loads():
    """Real guest output: nr_threads=2 run_test_mask=2047, then a single fix_size run."""
    res = parse_test_vmalloc(read("real_boot_612.log"))
    assert len(res.runs) == 2 and res.complete and res.passed
    first, second = res.runs
    assert first.format == "classic"
    assert [w.index for w in first.workers] == [0, 1]
    assert [w.took for w in first.workers] == [461145133, 444691656]
    assert {w.unit for w in first.workers} == {"cycles"} and {w.label for w in first.workers} == {
        "worker"
    }
    tot = first.totals()
    assert list(tot) == ALL_612
    assert tot["full_fit_alloc_test"].avg_usec == [966599, 4189616]
    assert tot["fix_size_alloc_test"].loops == 2000 and tot["fix_size_alloc_test"].passed == 2
    # align_shift_alloc_test fails on purpose: known, not a regression
    assert (tot["align_shift_alloc_test"].failed, tot["align_shift_alloc_test"].status) == (
        2,
        "xfail",
    )
    assert first.unexpected == []
    assert (first.first_line, first.last_line) == (230, 253)
    assert [t.name for t in second.workers[0].tests] == ["fix_size_alloc_test"]
    assert second.workers[0].tests[0].avg_usec == 1612255


def test_real_612_with_known_parameters():
    res = parse_test_vmalloc(
        read("real_boot_612.log").split("=== test_vmalloc end")[0], nr_threads=2, run_test_mask=2047
    )
    assert res.complete and res.runs[0].problems == []


def test_classic_format_two_workers_with_warn_alloc_noise():
    res = parse_test_vmalloc(
        read("vmalloc_612_two_workers.log"), nr_threads=2, run_test_mask=0x7FFFFFFF
    )
    (run,) = res.runs
    assert run.complete and run.passed
    j = run.to_json()
    assert j["workers"][0]["failed"] == 1 and j["workers"][0]["passed"] == 10
    assert j["tests"]["align_shift_alloc_test"]["expected_failure"] is True
    assert j["tests"]["vm_map_ram_test"]["workers"] == 2


def test_xfailed_nsecs_and_caller_ids():
    res = parse_test_vmalloc(read("vmalloc_xfailed_nsecs.log"))
    (run,) = res.runs
    assert run.format == "xfailed" and run.complete and run.passed
    (w,) = run.workers
    assert (w.label, w.index, w.took, w.unit) == ("worker", 0, 1834220199, "nsecs")
    tot = run.totals()
    assert (tot["align_shift_alloc_test"].xfailed, tot["align_shift_alloc_test"].status) == (
        3,
        "xfail",
    )
    assert tot["vrealloc_test"].status == "pass" and tot["fix_size_alloc_test"].repeat == 3


def test_per_cpu_kernels_without_timestamps():
    res = parse_test_vmalloc(read("vmalloc_cpu_cycles.log"))
    (run,) = res.runs
    assert [(w.label, w.index) for w in run.workers] == [("CPU", 0), ("CPU", 1)]
    assert run.passed and len(run.totals()) == 7


def test_cut_short_run_says_so():
    res = parse_test_vmalloc(read("vmalloc_cut_short.log"), nr_threads=2)
    (run,) = res.runs
    assert not run.complete and not res.complete and not res.passed
    assert any("cut short" in p for p in run.problems)
    assert any("1 of 2 workers" in p for p in run.problems)
    assert run.workers[-1].index is None and len(run.workers[-1].tests) == 4
    # even without the parameters the missing "All test took" line is noticed
    assert not parse_test_vmalloc(read("vmalloc_cut_short.log")).complete


def test_missing_worker_only_visible_with_nr_threads():
    text = read("vmalloc_612_two_workers.log")
    one_worker = text.split("All test took worker0")[0] + "All test took worker0=123 cycles\n"
    assert parse_test_vmalloc(one_worker).complete
    assert not parse_test_vmalloc(one_worker, nr_threads=2).complete


def test_missing_test_from_mask():
    text = "\n".join(
        line
        for line in read("vmalloc_cpu_cycles.log").splitlines()
        if "random_size_alloc" not in line
    )
    res = parse_test_vmalloc(text, run_test_mask=0x7F)
    assert any("random_size_alloc_test" in p for p in res.runs[0].problems)
    assert any("different sets" in p for p in res.runs[0].problems) is False


def test_real_failure_is_a_regression():
    text = read("vmalloc_cpu_cycles.log").replace(
        "Summary: fix_size_alloc_test passed: 1 failed: 0",
        "Summary: fix_size_alloc_test passed: 0 failed: 1",
        1,
    )
    (run,) = parse_test_vmalloc(text).runs
    assert run.unexpected == ["fix_size_alloc_test"] and not run.passed and run.complete


@pytest.mark.parametrize(
    "line,status",
    [
        (
            "Summary: align_shift_alloc_test passed: 1 failed: 0 repeat: 1 loops: 1 avg: 1 usec",
            "xpass",
        ),
        (
            "Summary: align_shift_alloc_test passed: 0 failed: 1 repeat: 1 loops: 1 avg: 1 usec",
            "xfail",
        ),
        (
            "Summary: align_shift_alloc_test passed: 0 failed: 0 xfailed: 1 repeat: 1 loops: 1 avg: 1 usec",
            "xfail",
        ),
        (
            "Summary: align_shift_alloc_test passed: 0 failed: 1 xfailed: 0 repeat: 1 loops: 1 avg: 1 usec",
            "xpass",
        ),
        # 7.3 counts an expected failure that did not happen as passed (6.18: as failed)
        (
            "Summary: align_shift_alloc_test passed: 1 failed: 0 xfailed: 0 repeat: 1 loops: 1 avg: 1 usec",
            "xpass",
        ),
        # no_block_alloc_test (7.x) may fail: a failure is xfailed, a pass is a pass (as
        # measured on 7.3.4), never an xpass
        (
            "Summary: no_block_alloc_test passed: 0 failed: 0 xfailed: 1 repeat: 1 loops: 1 avg: 1 usec",
            "xfail",
        ),
        (
            "Summary: no_block_alloc_test passed: 2 failed: 0 xfailed: 0 repeat: 2 loops: 1000 avg: 12515 usec",
            "pass",
        ),
        (
            "Summary: vm_map_ram_test passed: 0 failed: 1 xfailed: 0 repeat: 1 loops: 1 avg: 1 usec",
            "fail",
        ),
    ],
)
def test_expected_failure_statuses(line, status):
    (run,) = parse_test_vmalloc(line + "\nAll test took worker0=1 cycles\n").runs
    assert run.workers[0].tests[0].status == status


def test_busybox_double_load_gives_two_runs():
    text = read("vmalloc_cpu_cycles.log") * 2
    res = parse_test_vmalloc(text)
    assert len(res.runs) == 2 and all(r.complete for r in res.runs)


def test_restart_in_the_middle_of_a_worker():
    lines = read("vmalloc_cpu_cycles.log").splitlines()
    text = "\n".join(lines[:3] + lines)  # 3 Summary lines, then a fresh load
    res = parse_test_vmalloc(text)
    assert [r.complete for r in res.runs] == [False, True]


def test_mailed_log():
    text = "".join("> " + line + "\n" for line in read("vmalloc_612_two_workers.log").splitlines())
    res = parse_test_vmalloc(text, nr_threads=2)
    assert res.passed and len(res.runs[0].totals()) == 11


def test_no_output():
    res = parse_test_vmalloc("[    1.0] Run /init as init process\n")
    assert res.runs == [] and not res.complete and not res.passed
    assert res.to_json() == {
        "runs": [],
        "complete": False,
        "passed": False,
        "unexpected_failures": [],
    }


def test_json_roundtrip():
    j = json.loads(json.dumps(parse_test_vmalloc(read("real_boot_612.log")).to_json()))
    assert j["runs"][0]["tests"]["align_shift_alloc_test"]["status"] == "xfail"
    assert j["runs"][0]["workers"][1]["took"] == 444691656


def test_mask_helper():
    assert cases_for_mask(1) == ["fix_size_alloc_test"]
    assert cases_for_mask(2047) == ALL_612
    assert cases_for_mask(1 << 12) == ["vrealloc_test"]


def test_worse_status_one_ranking_for_all_consumers():
    # pass < xfail < xpass < fail: the worst of the runs wins, and an expected failure that
    # stopped happening (xpass) is not hidden behind the runs where it did happen.
    assert worse_status(None, "pass") == "pass"
    assert worse_status("pass", None) == "pass"
    assert worse_status("pass", "xfail") == "xfail"
    assert worse_status("xfail", "xpass") == "xpass"
    assert worse_status("xpass", "xfail") == "xpass"
    assert worse_status("xpass", "fail") == "fail"
    assert worse_status("fail", "pass") == "fail"
    # a status this version does not know is treated as badly as a failure
    assert worse_status("pass", "mystery") == "mystery"
    assert worse_status(None, None) is None


def test_real_7_3_smoke_run_covers_every_case_the_module_offers():
    """Real 7.3.4 output: 13 cases at mask 8191, xfailed format, nothing unexpected."""
    from orchestrator.parsers.test_vmalloc import parse_with_guest

    d = Path(__file__).parent / "data" / "parsers"
    res = parse_with_guest((d / "test_vmalloc_7.3.4_smoke.dmesg").read_text(),
                           (d / "test_vmalloc_7.3.4_smoke.out").read_text())
    run = res["runs"][0]
    assert run["format"] == "xfailed" and run["complete"] and res["passed"]
    assert len(run["tests"]) == 13 and res["coverage"]["offered"] == 13
    assert res["coverage"]["warnings"] == []
    assert run["tests"]["align_shift_alloc_test"]["status"] == "xfail"
    assert run["tests"]["no_block_alloc_test"]["status"] == "pass"
    assert res["unexpected_failures"] == []


def test_a_run_on_the_module_default_mask_is_a_warning():
    """7.x defaults run_test_mask to 7: a smoke run without a mask covers 3 of 13 cases."""
    from orchestrator.parsers.test_vmalloc import parse_with_guest

    d = Path(__file__).parent / "data" / "parsers"
    dmesg = "\n".join(ln for ln in (d / "test_vmalloc_7.3.4_smoke.dmesg").read_text().splitlines()
                      if "Summary:" not in ln or any(t in ln for t in (
                          "fix_size_alloc_test", "full_fit_alloc_test", "long_busy_list")))
    out = ("mmlab-vmalloc: mode=smoke cpus=2 params=test_loop_count=1000 test_repeat_count=2\n"
           "mmlab-vmalloc: offered_mask=8191\n")
    res = parse_with_guest(dmesg, out)
    (w,) = res["coverage"]["warnings"]
    assert "default run_test_mask: 3 of 13 test cases" in w and "run_test_mask=8191" in w
