"""The KTAP parser against the kernel's own KTAP test logs (tests/data/ktap, from
tools/testing/kunit/test_data of Linux 7.3) and the outcomes kunit_tool_test.py expects."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.parsers import ktap

DATA = Path(__file__).parent / "data" / "ktap"


def parse(name: str) -> dict:
    return ktap.parse((DATA / name).read_text(errors="replace")).to_json()


@pytest.mark.parametrize("name,status,passed,failed,skipped", [
    # kunit_tool_test.py: SUCCESS, 10 passed (mixed in kernel messages and prefixes)
    ("test_is_test_passed-all_passed_nested.log", "pass", 7, 0, 0),
    ("test_multiple_prefixes.log", "pass", 10, 0, 0),
    ("test_interrupted_tap_output.log", "pass", 10, 0, 0),
    ("test_is_test_passed-missing_plan.log", "pass", 10, 0, 0),  # a missing plan is no error
    # FAILURE
    ("test_is_test_passed-failure.log", "fail", 9, 1, 0),
    ("test_is_test_passed-failure-nested.log", "incomplete", 1, 1, 0),
    # kselftest's TAP 13 with '# '-prefixed nested output: SUCCESS, one skip
    ("test_is_test_passed-kselftest.log", "pass", 2, 0, 1),
    # SKIP: one skipped case; all skipped
    ("test_skip_tests.log", "pass", 4, 0, 1),
    ("test_skip_all_tests.log", "skip", 0, 0, 5),
    # TEST_CRASHED: a panic in the middle of string-stream-test
    ("test_kernel_panic_interrupt.log", "incomplete", 8, 0, 0),
    # NO_TESTS
    ("test_is_test_passed-no_tests_run_with_header.log", "no tests", 0, 0, 0),
    # no KUnit output at all (the kernel ran out of memory)
    ("test_insufficient_memory.log", "no output", 0, 0, 0),
])
def test_kernel_ktap_logs(name, status, passed, failed, skipped):
    r = parse(name)
    assert r["status"] == status
    assert (r["counts"]["pass"], r["counts"]["fail"], r["counts"]["skip"]) == (
        passed, failed, skipped)
    assert r["passed"] is (status in ("pass", "skip"))


def test_a_crash_names_what_is_missing():
    r = parse("test_kernel_panic_interrupt.log")
    doc = r["documents"][0]
    assert not r["complete"]
    assert any("string-stream-test" in p for t in doc["tests"] for p in t["problems"])
    # the suite the panic cut short is the third of the three planned, marked incomplete
    assert [t["status"] for t in doc["tests"]] == ["pass", "pass", "incomplete"]
    assert "1 of 3 planned results" in " ".join(doc["tests"][2]["problems"])
    assert "string-stream-test.string_stream_test_empty_on_creation" in r["results"]


def test_results_are_named_by_suite_and_case():
    r = parse("test_skip_tests.log")
    assert r["results"]["example.example_skip_test"] == "skip"
    assert r["results"]["string-stream-test.string_stream_test_get_string"] == "pass"


def test_directives_and_kunit_module_output_in_dmesg():
    text = "\n".join([
        "[    2.10] mmlab-kunit: start 1",
        "[    2.11] KTAP version 1",
        "[    2.11] 1..1",
        "[    2.12]     KTAP version 1",
        "[    2.12]     # Subtest: lazy_mmu_mode",
        "[    2.12]     # module: lazy_mmu_mode_kunit",
        "[    2.12]     1..5",
        "[    2.13]     ok 1 lazy_mmu_mode_active",
        "[    2.13] random: crng init done",
        "[    2.14]     ok 2 case_b # SKIP not here",
        "[    2.14]     not ok 3 case_c # TODO known bug",
        "[    2.14]     not ok 4 case_d # XFAIL",
        "[    2.14]     not ok 5 case_e # TIMEOUT",
        "[    2.15] # lazy_mmu_mode: pass:1 fail:1 skip:1 total:5",
        "[    2.15] not ok 1 lazy_mmu_mode",
    ])
    r = ktap.parse(text).to_json()
    res = r["results"]
    assert res == {"lazy_mmu_mode.lazy_mmu_mode_active": "pass", "lazy_mmu_mode.case_b": "skip",
                   "lazy_mmu_mode.case_c": "todo", "lazy_mmu_mode.case_d": "xfail",
                   "lazy_mmu_mode.case_e": "error"}
    assert r["status"] == "fail" and r["failed"] == ["lazy_mmu_mode.case_e"]
    assert r["complete"]


def test_a_suite_that_says_not_ok_fails_even_if_its_cases_pass():
    text = "KTAP version 1\n1..1\n    KTAP version 1\n    1..1\n    ok 1 a\nnot ok 1 s\n"
    r = ktap.parse(text).to_json()
    assert r["status"] == "fail" and r["results"]["s"] == "fail"


def test_two_documents_and_tap_14():
    text = "TAP version 14\n1..1\nok 1 - one\nKTAP version 1\n1..2\nok 1 two\nnot ok 2 three\n"
    r = ktap.parse(text).to_json()
    assert len(r["documents"]) == 2 and r["results"] == {"one": "pass", "two": "pass",
                                                         "three": "fail"}


def test_the_real_lazy_mmu_suite_on_7_3():
    r = parse("lazy_mmu_mode_kunit_7.3.4.dmesg")
    assert r["status"] == "pass" and r["complete"]
    assert r["results"] == {"lazy_mmu_mode.lazy_mmu_mode_active": "pass"}
