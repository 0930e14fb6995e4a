"""Linux 7.3 from Debian's archive, built, booted and tested by mmlab (what CI checks on a
kernel nobody here wrote): gated fragments, the guest tests on 7.x (every test_vmalloc case
the module offers, the lazy-MMU KUnit suite), and the report's config table against 6.12."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.run.plans import load_plan_with
from orchestrator.run.results import RunStore

pytestmark = [pytest.mark.kernel]


@pytest.mark.upstream
@pytest.mark.archive
def test_7_3_is_built_from_debian_with_its_own_fragments(upstream_artifact):
    m = upstream_artifact.metadata
    assert m["release"].startswith("7.3.")
    assert m["tree"]["kind"] == "debian" and m["tree"]["debian"]["package"] == "linux-source-7.3"
    assert len(m["tree"]["debian"]["sha256"]) == 64
    assert [f["name"] for f in m["fragments"]] == ["qemu-virt", "sysctl", "test_vmalloc",
                                                   "ptdump", "kunit-lazy-mmu"]
    assert "sysctl-proc" in m["skipped_fragments"]
    cfg = upstream_artifact.config()
    assert cfg.get("CONFIG_SYSCTL") == "y" and cfg.get("CONFIG_LAZY_MMU_MODE_KUNIT_TEST") == "m"
    assert upstream_artifact.module("test_vmalloc") is not None


@pytest.mark.boot
@pytest.mark.upstream
@pytest.mark.archive
def test_7_3_runs_every_test_vmalloc_case_and_its_kunit_suite(tmp_path, upstream_artifact):
    from orchestrator.run.runner import KernelUnderTest, run_plan
    from orchestrator.targets.qemu import QemuTarget

    plan = replace(load_plan_with("default", entries="smoke,kunit_lazy_mmu,fix_size_p256"),
                   repeats=1)
    store = RunStore(tmp_path / "run")
    store.start({"fingerprint": "upstream"}, resume=False)
    run_plan([KernelUnderTest("v7.3", upstream_artifact)], plan, store,
             lambda: QemuTarget("default"))
    res = {r["entry"]: r for r in store.load_all()}
    smoke = res["smoke"]
    assert smoke["verdict"] == "ok", smoke.get("error")
    tv = smoke["parsed"]["test_vmalloc"]
    cov = tv["coverage"]
    # 7.3 offers 13 cases (run_test_mask defaults to 7 there: 3 cases); all ran
    assert cov["offered"] == 13 and len(cov["ran"]) == 13 and cov["warnings"] == []
    assert tv["runs"][0]["format"] == "xfailed" and tv["unexpected_failures"] == []
    assert smoke["parsed"]["dmesg"]["unexpected"] == 0   # align_shift's error is expected
    kunit = res["kunit_lazy_mmu"]
    assert kunit["verdict"] == "ok"
    kt = kunit["parsed"]["ktap"]
    assert kt["status"] == "pass" and kt["results"]["lazy_mmu_mode.lazy_mmu_mode_active"] == "pass"
    p256 = res["fix_size_p256"]["parsed"]["test_vmalloc"]["runs"][0]["tests"]
    assert p256["fix_size_alloc_test"]["status"] == "pass"


@pytest.mark.boot
def test_the_6_12_kernel_skips_the_kunit_suite(tmp_path, kernel_artifact):
    from orchestrator.run.runner import KernelUnderTest, run_plan
    from orchestrator.targets.qemu import QemuTarget

    plan = replace(load_plan_with("default", entries="kunit_lazy_mmu"), repeats=1)
    store = RunStore(tmp_path / "run")
    store.start({"fingerprint": "612"}, resume=False)
    run_plan([KernelUnderTest("v6.12", kernel_artifact)], plan, store,
             lambda: QemuTarget("default"))
    (r,) = store.load_all()
    assert r["verdict"] == "skipped"


@pytest.mark.boot
@pytest.mark.upstream
@pytest.mark.archive
def test_compare_across_trees_6_12_and_7_3(tmp_path, kernel_artifact, upstream_artifact):
    """A comparison file naming a tree per kernel, end to end through `mmlab compare`: the
    report has the config table with the atomics difference as a warning, the KUnit suite
    on 7.3 (and its absence on 6.12), every test case on both, and the attribution."""
    import json
    import subprocess
    import sys

    comp = tmp_path / "x.toml"
    comp.write_text('name = "x"\nbaseline = "v6.12"\nplan = "default"\n'
                    '[[kernel]]\nname = "v6.12"\ntree = "debian:6.12"\nvariant = "v6.12"\n'
                    '[[kernel]]\nname = "v7.3"\ntree = "debian:7.3"\nvariant = "v7.3"\n')
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "orchestrator", "compare", str(comp), "--out",
                        str(out), "--repeats", "3", "--entries",
                        "fix_size_p256,smoke,kunit_lazy_mmu", "--no-barriers"],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    from orchestrator.judge.comparison import validate_json

    validate_json(data)                       # what was written matches the published schema
    atomics = next(row for row in data["configs"] if row["property"] == "atomics")
    assert atomics["values"]["v6.12"] == "LL/SC" and atomics["values"]["v7.3"].startswith("LSE")
    reasons = " | ".join(data["analysis"]["verdict"]["reasons"])
    assert "the kernels differ in atomics" in reasons
    kunit = {(c["kernel"], c["status"]) for c in data["analysis"]["checks"]
             if c["category"] == "kunit"}
    assert ("v7.3", "pass") in kunit and ("v6.12", "info") in kunit
    tests = {(o["kernel"], o["test"]) for o in data["correctness"]["test_vmalloc"]}
    assert sum(1 for k, _ in tests if k == "v7.3") == 13
    assert sum(1 for k, _ in tests if k == "v6.12") == 11
    assert any(r["feature"] == "arm64_lazy_mmu_batching"
               for r in data["attributions"]["v7.3"])
    assert "a cost the series is expected to have" not in reasons
    assert (out / "report.html").is_file()
