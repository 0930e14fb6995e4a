"""JUnit XML for CI gating (orchestrator.report.junit), from the report test fixture."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from orchestrator.judge import comparison as cmp
from orchestrator.report.junit import to_junit_xml, write_junit

FIXTURE = Path(__file__).parent / "data" / "report" / "demo_inputs.json"


def fixture() -> cmp.Comparison:
    return cmp.Comparison.from_dict(json.loads(FIXTURE.read_text()))


def parse(comp: cmp.Comparison) -> ET.Element:
    return ET.fromstring(to_junit_xml(comp))


def cases(root: ET.Element, outcome: str) -> list[ET.Element]:
    out = []
    for tc in root.iter("testcase"):
        if outcome == "pass" and tc.find("failure") is None and tc.find("skipped") is None:
            out.append(tc)
        elif outcome != "pass" and tc.find(outcome) is not None:
            out.append(tc)
    return out


def test_clean_comparison_has_no_failures():
    comp = fixture()
    root = parse(comp)
    a = comp.analysis
    expected = len(a.checks) + len(a.metrics) + len(a.barriers)
    assert int(root.get("tests")) == expected == len(list(root.iter("testcase")))
    assert root.get("failures") == "0" and root.get("skipped") == "0"
    suites = {s.get("name") for s in root.iter("testsuite")}
    assert suites == {"correctness.6.12", "correctness.batching", "correctness.nesting",
                      "performance.batching", "performance.nesting", "model.barriers"}
    # classnames carry no dots from kernel ids like "6.12"
    assert any(tc.get("classname") == "mmlab.correctness.6_12.test_vmalloc"
               for tc in root.iter("testcase"))
    xfail = [tc for tc in root.iter("testcase") if tc.get("name") == "align_shift_alloc_test"]
    assert len(xfail) == 3 and all(tc.find("failure") is None for tc in xfail)


def test_regressions_and_correctness_failures_fail():
    comp = fixture()
    m = comp.metric("vm_map_ram_test avg usec")
    m.samples["batching"] = [v * 1.5 for v in m.samples["6.12"]]
    comp.dmesg.append(cmp.DmesgFinding("nesting", "Unable to handle kernel paging request",
                                       "oops", excerpt="Internal error: Oops: \x07\x00bad"))
    comp.barriers[2].measured = 200.0
    root = parse(comp)
    failed = cases(root, "failure")
    names = sorted(tc.get("name") for tc in failed)
    assert names == sorted(["vm_map_ram_test avg usec",
                            "Unable to handle kernel paging request",
                            "vmalloc nr_pages=256 (run_test_mask=1) B per call"])
    assert root.get("failures") == "3"
    oops = next(tc for tc in failed if "paging" in tc.get("name"))
    assert "Internal error: Oops: bad" in oops.find("failure").text   # control chars dropped
    reg = next(tc for tc in failed if tc.get("name") == "vm_map_ram_test avg usec")
    assert "slower on vm_map_ram_test" in reg.find("failure").get("message")


def test_known_problems_and_missing_data_are_skipped_not_failed():
    comp = fixture()
    sig = "WARNING: at kernel/smp.c:815 smp_call_function_many_cond"
    comp.dmesg += [cmp.DmesgFinding("6.12", sig, "warning"),
                   cmp.DmesgFinding("nesting", sig, "warning")]
    comp.metrics[3].samples["nesting"] = comp.metrics[3].samples["nesting"][:2]
    comp.barriers[1].measured = None
    comp.barriers[1].samples = []
    root = parse(comp)
    assert root.get("failures") == "0"
    skipped = {tc.get("name") for tc in cases(root, "skipped")}
    assert sig in skipped
    assert comp.metrics[3].id in skipped
    assert "vmalloc nr_pages=256 (run_test_mask=1) B per call" in skipped


def test_write_junit_is_atomic_and_parseable(tmp_path):
    out = write_junit(fixture(), tmp_path / "junit.xml")
    assert out.read_bytes().startswith(b"<?xml")
    ET.parse(out)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_predicted_regression_is_skipped_unpredicted_is_a_failure():
    comp = fixture()
    m = comp.metric("vm_map_ram_test avg usec")
    for k in ("batching", "nesting"):
        m.samples[k] = [v * 1.15 for v in m.samples["6.12"]]
    comp.timing_predictions.append(cmp.TimingPrediction(m.id, "nesting", 0.065))
    comp.analyze()
    root = parse(comp)
    by_name = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    nesting = by_name[("mmlab.performance.nesting", m.id)]
    batching = by_name[("mmlab.performance.batching", m.id)]
    assert nesting.find("skipped") is not None and nesting.find("failure") is None
    assert "regressed as the model predicts" in nesting.find("skipped").get("message")
    assert batching.find("failure") is not None
