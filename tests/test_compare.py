"""`mmlab compare`: definitions, patch selection, and a real A/A comparison end to end."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.paths import SERIES
from orchestrator.pipeline.compare import (
    ComparisonSpec,
    KernelSpec,
    _select_patches,
    barrier_rows,
    load_comparison,
    measured_per_loop,
    run_compare,
)


def test_default_comparison_is_three_kernels_with_a_baseline():
    spec = load_comparison("default")
    assert [k.name for k in spec.kernels] == ["v6.12", "batching", "nesting"]
    assert spec.baseline == "v6.12"
    assert spec.kernels[1].patches == "1-2" and spec.kernels[2].patches == "1-3"


def test_unknown_comparison_is_a_clear_error():
    with pytest.raises(InputError, match="unknown comparison"):
        load_comparison("nope")


def test_patch_selection_of_the_demo_series():
    from orchestrator.kernel.series import load_series

    s = load_series(str(SERIES / "lazy-mmu-6.12"))
    assert len(s.patches) == 3
    two = _select_patches(s, "1-2")
    assert [p.subject for p in two.patches] == [p.subject for p in s.patches[:2]]
    assert two.content_hash != s.content_hash
    assert [p.subject for p in _select_patches(s, "3").patches] == [s.patches[2].subject]
    assert len(_select_patches(s, "2-").patches) == 2
    with pytest.raises(InputError, match="outside 1-3"):
        _select_patches(s, "2-4")
    with pytest.raises(InputError, match="bad patch selection"):
        _select_patches(s, "x")


def test_measured_counts_leave_out_what_the_model_leaves_out():
    # per-function counts as the plugin reports them (6.12 default kernel, 256 pages)
    point = {"per_kind": {"isb": 258.1, "dsb.ishst": 256.0},
             "per_function": {"arch_counter_get_cntvct": {"isb": 1.5},
                              "arch_timer_handler_virt": {"isb": 0.6},
                              "__set_ptes.constprop.0": {"isb": 256.0, "dsb.ishst": 256.0},
                              "page_ref_dec_and_test#2": {"atomic.stlxr": 256.0,
                                                          "dmb.ish": 256.0},
                              "__raw_spin_trylock#4": {"atomic.stxr": 259.0},
                              "update_fast_timekeeper": {"dmb.ishst": 2.0}}}
    assert measured_per_loop(point, "isb") == pytest.approx(256.0)
    assert measured_per_loop(point, "dsb.ishst") == 256.0
    assert measured_per_loop(point, "atomic") == 256.0      # the lock's 259 left out
    assert measured_per_loop(point, "atomic.full") == 256.0
    assert measured_per_loop(point, "dmb.ishst") == 0.0     # timekeeping left out
    rows = barrier_rows("k", "fix_size_alloc_test nr_pages=256", [point],
                        {"dsb.ishst": 256, "isb": 256, "atomic.stlxr": 256, "dmb.ish": 256,
                         "atomic": 256})
    left = {r.quantity: r for r in rows if r.quantity.endswith("(left out)")}
    assert left["atomic (left out)"].measured == pytest.approx(259.0)
    assert "locks 259" in left["atomic (left out)"].note
    assert left["isb (left out)"].measured == pytest.approx(2.1)
    assert "interrupts" in left["isb (left out)"].note


@pytest.mark.kernel
@pytest.mark.boot
@pytest.mark.slow
def test_aa_comparison_end_to_end(tmp_path, kernel_artifact):
    from orchestrator.judge.comparison import validate_json

    spec = load_comparison("aa-6.12")
    out = tmp_path / "aa"
    report = run_compare(spec, out=out, resume=False, repeats=3,
                         profile=None, entries=["fix_size_p1", "fix_size_p256"],
                         barriers_on=True, command="pytest")
    data = json.loads((out / "results.json").read_text())
    validate_json(data)
    verdict = data["analysis"]["verdict"]
    assert verdict["status"] == "pass", verdict
    # the same kernel twice: no metric may be flagged, and counts match the 6.12 model
    metrics = data["analysis"]["metrics"]
    assert metrics and all(m["difference"]["verdict"] == "no change" for m in metrics)
    barriers = data["analysis"]["barriers"]
    dsb = [b for b in barriers if b["row"]["quantity"] == "dsb.ishst"]
    # fix_size_alloc at 1/16/256 pages, use_huge=1 at 16/256, full_fit, vm_map_ram at 1
    # and 256 pages, on both kernels; every compared quantity matches the 6.12 model
    assert len(dsb) == 16 and all(b["verdict"] == "match" for b in dsb)
    compared = [b for b in barriers if b["row"]["predicted"] is not None]
    assert len(compared) == 16 * 8 and all(b["verdict"] == "match" for b in compared), [
        (b["row"]["workload"], b["row"]["quantity"]) for b in compared
        if b["verdict"] != "match"]
    by_load = {" ".join(b["row"]["workload"].split()[:2]): b["row"]["measured"] for b in dsb}
    assert by_load["fix_size_alloc_test nr_pages=256"] == pytest.approx(256, abs=0.2)
    assert by_load["vm_map_ram_test nr_pages=1"] == pytest.approx(1, abs=0.15)
    html = report.read_text()
    assert "PASS" in html and "<script>" not in html.split("</head>")[1]
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.iter("testcase") and not list(suite.iter("failure"))


def test_compare_rejects_a_single_kernel():
    with pytest.raises(InputError, match="at least two kernels"):
        from orchestrator.pipeline.compare import _validate

        _validate(ComparisonSpec(name="x", kernels=[KernelSpec("a")], baseline="a"))


def _mmlab(*args: str, cwd=None):
    import subprocess
    import sys

    from orchestrator.paths import REPO_ROOT

    return subprocess.run([sys.executable, "-m", "orchestrator", "compare", *args],
                          capture_output=True, text=True, cwd=cwd or REPO_ROOT, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--boards", "b1"], "--boards needs --lab"),
    (["--lab", "lab.toml", "--profile", "default"], "--profile names a QEMU machine"),
    (["--repeats", "2"], "--repeats must be at least 3"),
])
def test_compare_target_options_are_checked_before_anything_runs(tmp_path, args, message):
    (tmp_path / "lab.toml").write_text('[[board]]\nname = "a"\naddress = "127.0.0.1"\n')
    res = _mmlab(*[str(tmp_path / a) if a == "lab.toml" else a for a in args],
                 "--out", str(tmp_path / "out"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and "hint:" in res.stderr
    assert not (tmp_path / "out").exists()          # nothing built, nothing written


def test_compare_on_a_lab_with_a_bad_inventory_stops_before_building(tmp_path):
    inv = tmp_path / "lab.toml"
    inv.write_text('[[board]]\nname = "a"\naddress = "h"\nprot = 22\n')
    res = _mmlab("--lab", str(inv), "--out", str(tmp_path / "out"), "--no-install-missing")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "unknown keys ['prot']" in res.stderr and "hint:" in res.stderr
    assert "build" not in res.stdout.lower() and not (tmp_path / "out").exists()
    # the chosen board must exist in the inventory
    inv.write_text('[[board]]\nname = "a"\naddress = "127.0.0.1"\n')
    res = _mmlab("--lab", str(inv), "--boards", "zz", "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "has no board(s) zz" in res.stderr, res.stdout + res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("body,match", [
    ('[[kernel]]\nname = "a/b"\n[[kernel]]\nname = "c"\n', "kernel name 'a/b' is not a short"),
    ('[[kernel]]\nname = "../x"\n[[kernel]]\nname = "c"\n', "kernel name '../x'"),
    ('[[kernel]]\nname = "my kernel"\n[[kernel]]\nname = "c"\n', "kernel name 'my kernel'"),
    ('[[kernel]]\nname = "a"\ncolour = 1\n[[kernel]]\nname = "c"\n',
     r"\[\[kernel\]\] 1 \(a\): unknown key\(s\) colour"),
    ('kernel = "a"\n', "`kernel` must be an array of tables"),
    ('baselin = "a"\n[[kernel]]\nname = "a"\n[[kernel]]\nname = "c"\n', "unknown key"),
    ('[barriers]\nnr_page = [1]\n[[kernel]]\nname = "a"\n[[kernel]]\nname = "c"\n',
     r"unknown \[barriers\] key\(s\) nr_page"),
    ('[[kernel]]\nseries = "x"\n[[kernel]]\nname = "c"\n', "has no name"),
])
@pytest.mark.fault('bad comparison file (hostile names, unknown keys, typos)', 'one-line error at load, before any build', '2')
def test_bad_comparison_files_fail_at_load_with_one_line(tmp_path, body, match):
    """Checked before any build (a name with a space used to cost ~35 min of builds first)."""
    f = tmp_path / "c.toml"
    f.write_text(body)
    with pytest.raises(InputError, match=match) as ei:
        load_comparison(str(f))
    assert "\n" not in str(ei.value) and ei.value.hint


def test_upstream_comparison_names_three_releases_with_their_trees():
    spec = load_comparison("upstream")
    assert [(k.name, k.tree) for k in spec.kernels] == [
        ("v6.12", "debian:6.12"), ("v6.18", "debian:6.18"), ("v7.3", "debian:7.3")]
    assert spec.baseline == "v6.12"


def test_a_result_that_drifts_from_the_schema_is_a_warning_not_a_lost_run(capsys):
    """compare and lab check what they write against the schema (the `kunit` check category
    was missing from it and no run noticed); a mismatch warns, the results stay."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_report import fixture

    from orchestrator.pipeline.compare import check_schema

    comp = fixture()
    comp.analyze()
    check_schema(comp)
    assert "does not match its schema" not in capsys.readouterr().err
    comp.configs = [{"property": "x"}]
    check_schema(comp)
    assert "does not match its schema" in capsys.readouterr().err
