"""The barrier-counting QEMU plugin on a hand-assembled bare-metal AArch64 program.

tests/data/plugin/barriers.S executes known numbers of each barrier kind in three functions
and six marker windows (its header comment has the table); these tests run it for real in
qemu-system-aarch64 with the plugin mmlab builds, and assert the exact counts, the
attribution by address range, the windows, -smp 2 under MTTCG, and the errors for each
missing piece. The plugin header is fetched from Debian's qemu source package on first use
(cached in ~/.cache/mmlab).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.barriers import plugin as bp
from orchestrator.errors import InputError, MissingToolError, TargetError

DATA = Path(__file__).parent / "data" / "plugin"
QEMU = "qemu-system-aarch64"
FUNC_C_LOOPS = 10_000_000  # keep in step with barriers.S


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"host tools missing: {', '.join(missing)}; run `mmlab doctor --install`")


@pytest.fixture(scope="session")
def plugin_so() -> Path:
    _need(QEMU, "gcc")
    return bp.ensure_plugin(install=True)


@pytest.fixture(scope="session")
def blob(tmp_path_factory) -> Path:
    _need("aarch64-linux-gnu-as", "aarch64-linux-gnu-ld")
    out = tmp_path_factory.mktemp("blob")
    subprocess.run(["aarch64-linux-gnu-as", "-march=armv8.1-a", "-o", str(out / "barriers.o"),
                    str(DATA / "barriers.S")], check=True)
    subprocess.run(["aarch64-linux-gnu-ld", "-Ttext=0x40100000", "-e", "_start", "-o",
                    str(out / "barriers.elf"), str(out / "barriers.o")], check=True)
    return out / "barriers.elf"


@pytest.fixture(scope="session")
def blob_ranges(blob):
    from orchestrator.kernel.elfinspect import symbol_ranges

    return symbol_ranges(blob, ["func_a", "func_b", "func_c", "func_d"])


def _qemu_argv(blob: Path, smp: int, extra: list[str]) -> list[str]:
    return [QEMU, "-M", "virt", "-cpu", "max", "-display", "none", "-nographic", "-nic",
            "none", "-smp", str(smp), "-accel", "tcg,thread=multi", "-kernel", str(blob),
            *extra]


def _run(blob: Path, smp: int, extra: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_qemu_argv(blob, smp, extra), capture_output=True, text=True,
                          timeout=120, check=False)


def _count_blob(blob, plugin_so, tmp_path, *, smp=1, ranges=(), insns=False) -> bp.Counts:
    counter = bp.BarrierCounter(ranges, insns=insns, plugin=plugin_so)
    out = tmp_path / f"smp{smp}.counts"
    res = _run(blob, smp, counter.qemu_args(out))
    assert res.returncode == 0, res.stderr
    return counter.read(out)


# --------------------------------------------------------------------------- exact counts


@pytest.mark.parametrize("smp", [1, 2])
def test_blob_exact_counts_per_window_and_function(blob, blob_ranges, plugin_so, tmp_path, smp):
    counts = _count_blob(blob, plugin_so, tmp_path, smp=smp, ranges=blob_ranges, insns=True)
    assert counts.complete and counts.vcpus == smp and counts.insns_counted
    assert [(w.seq, w.label) for w in counts.windows] == [
        (0, "boot"), (1, "1"), (2, "2"), (3, "2"), (4, "3"), (5, "4"), (6, "0")]
    assert all(w.closed for w in counts.windows)
    by_fn = [w.by_function() for w in counts.windows]
    assert by_fn[0] == {"(user)": {"dsb.sy": 1, "isb": 1}}
    assert by_fn[1] == {"func_a": {"dsb.ishst": 1000, "isb": 1000}}
    assert by_fn[2] == {
        "func_a": {"dsb.ishst": 7, "isb": 7},
        "func_b": {"dmb.ishld": 300, "dsb.ish": 301, "isb": 1, "tlbi.vaale1is": 300,
                   "tlbi.vmalle1is": 1},
    }
    assert by_fn[3] == {"func_a": {"dsb.ishst": 5, "isb": 5}}
    # -smp 2: both vCPUs run func_c at once; per-vCPU counters lose nothing
    assert by_fn[4] == {"func_c": {"dmb.ishst": FUNC_C_LOOPS * smp,
                                   "dsb.ish": FUNC_C_LOOPS * smp}}
    # atomics: LSE by ordering, CAS, and one store-exclusive per LL/SC attempt (the same
    # classification as orchestrator.kernel.aarch64.classify_atomic, checked against binutils)
    assert by_fn[5] == {"func_d": {"atomic.lse.al": 200, "atomic.lse": 100, "atomic.lse.l": 100,
                                   "atomic.cas.al": 100, "atomic.stxr": 100,
                                   "atomic.stlxr": 100, "dmb.ish": 100}}
    assert counts.windows[5].count("atomic") == 700
    assert by_fn[6] == {"(user)": {"dsb.nsh": 1}}
    # families and per-function queries
    w2 = counts.windows[2]
    assert w2.count("dsb") == 308 and w2.count("tlbi") == 301 and w2.count("dmb") == 300
    assert w2.count("dsb.ish", function="func_b") == 301
    assert w2.count("isb", function="func_a") == 7
    # a repeated marker: two windows, merged on request
    with pytest.raises(InputError):
        counts.window(2)
    merged = bp.merge_windows(counts.windows_with(2))
    assert merged.by_function()["func_a"] == {"dsb.ishst": 12, "isb": 12}
    assert counts.window(1).count("isb") == 1000
    # windows add up to the whole run
    total = counts.total()
    assert total.count("dsb.ishst") == 1012 and total.count("isb") == 1 + 1012 + 1
    # instructions are counted per translation block: exact up to the TB holding a marker
    assert 4000 <= counts.window(1).insns <= 4016
    # the two sites of dsb.ish in func_b (in the loop and after it) stay apart
    sites = sorted((s.vaddr, s.count) for s in w2.sites
                   if s.kind == "dsb.ish" and s.function == "func_b")
    assert [c for _, c in sites] == [300, 1]
    assert counts.to_json()["windows"][2]["by_function"]["func_b"]["tlbi.vaale1is"] == 300


def test_repeat_runs_identical(blob, blob_ranges, plugin_so, tmp_path):
    a = _count_blob(blob, plugin_so, tmp_path / "a", ranges=blob_ranges)
    b = _count_blob(blob, plugin_so, tmp_path / "b", ranges=blob_ranges)
    assert [w.by_function() for w in a.windows] == [w.by_function() for w in b.windows]


def test_without_ranges_everything_is_unattributed(blob, plugin_so, tmp_path):
    counts = _count_blob(blob, plugin_so, tmp_path)
    assert {f for w in counts.windows for f in w.by_function()} == {"(user)"}
    assert counts.window(1).by_kind() == {"dsb.ishst": 1000, "isb": 1000}
    assert counts.windows[0].insns is None


def test_output_through_qemu_log(blob, plugin_so, tmp_path):
    """Without out=, the plugin writes to QEMU's log (-d plugin -D file)."""
    log = tmp_path / "qemu.log"
    res = _run(blob, 1, ["-plugin", str(plugin_so), "-d", "plugin", "-D", str(log)])
    assert res.returncode == 0, res.stderr
    counts = bp.parse_counts(log.read_text(), log)
    assert counts.complete and counts.window(3).count("dsb.ish") == FUNC_C_LOOPS


def test_killed_qemu_keeps_finished_windows(blob, blob_ranges, plugin_so, tmp_path):
    """-no-shutdown keeps QEMU alive after SYSTEM_OFF; SIGKILL then cuts it off for real."""
    counter = bp.BarrierCounter(blob_ranges, plugin=plugin_so)
    out = tmp_path / "killed.counts"
    proc = subprocess.Popen(_qemu_argv(blob, 1, ["-no-shutdown", *counter.qemu_args(out)]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.is_file() and "window 6 0" in out.read_text():
                break
            time.sleep(0.05)
        else:
            pytest.fail("the blob never reached its last window")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with pytest.raises(TargetError, match="incomplete"):
        counter.read(out)
    counts = counter.read(out, require_complete=False)
    assert not counts.complete
    assert [w.closed for w in counts.windows] == [True] * 6 + [False]
    assert counts.window(3).count("dsb.ish", function="func_c") == FUNC_C_LOOPS


def test_qemu_args_escape_commas_and_write_ranges(plugin_so, tmp_path, blob_ranges):
    out = tmp_path / "a,b" / "x.counts"
    args = bp.BarrierCounter(blob_ranges, insns=True, plugin=plugin_so).qemu_args(out)
    assert args[0] == "-plugin"
    assert f"out={str(out.resolve()).replace(',', ',,')}" in args[1]
    assert args[1].endswith(",insns=on")
    ranges = (out.parent / "x.counts.ranges").read_text().splitlines()
    assert ranges[1:] == [f"{s:#x} {e:#x} {n}" for n, s, e in blob_ranges]


def test_bad_ranges_file_is_refused_by_the_plugin(blob, plugin_so, tmp_path):
    bad = tmp_path / "bad.ranges"
    bad.write_text("0x40100000 func_a\n")
    res = _run(blob, 1, ["-plugin", f"{plugin_so},ranges={bad}"])
    assert res.returncode != 0
    assert "expected 'start end name'" in res.stderr


# --------------------------------------------------------------------------- header, build


def test_header_comes_from_debian_qemu_source(plugin_so):
    header = bp.ensure_plugin_header(install=False)
    assert header.name == "qemu-plugin.h"
    assert bp.header_api_version(header) == 1  # what qemu 7.2 accepts
    meta = (header.parent / "source.json").read_text()
    assert '"source_package": "qemu"' in meta and '"series": "7.2"' in meta
    assert bp.qemu_version().series == "7.2"


def test_plugin_build_is_cached(plugin_so):
    again = bp.ensure_plugin(install=False)
    assert again == plugin_so and again.stat().st_mtime == plugin_so.stat().st_mtime


def test_marker_encoding():
    assert bp.marker_word(0) == 0xD2E9A01F
    assert bp.marker_word(3) == 0xD2E9A07F  # as GNU as encodes `movz xzr, #0x4d03, lsl #48`
    with pytest.raises(InputError):
        bp.marker_word(256)


def test_marker_program(tmp_path):
    _need("qemu-aarch64-static")
    exe = bp.ensure_marker_binary()
    data = exe.read_bytes()
    for i in range(256):
        assert bp.marker_word(i).to_bytes(4, "little") in data
    for arg, rc in (["7"], 0), (["255"], 0), (["256"], 2), (["x"], 2), ([], 2):
        res = subprocess.run(["qemu-aarch64-static", str(exe), *arg], capture_output=True,
                             text=True, check=False)
        assert res.returncode == rc, (arg, res.stderr)
        assert ("usage: mmlab-mark" in res.stderr) == (rc == 2)


# --------------------------------------------------------------------------- parsing


def test_parse_recorded_output():
    counts = bp.parse_counts((DATA / "blob-smp2.counts").read_text())
    assert counts.complete and counts.vcpus == 2
    assert counts.window(3).by_function() == {
        "func_c": {"dmb.ishst": 2 * FUNC_C_LOOPS, "dsb.ish": 2 * FUNC_C_LOOPS}}
    # kinds are re-derived from the encoding with the census classifier
    from orchestrator.kernel.aarch64 import classify

    assert all(s.kind == classify(s.word) for w in counts.windows for s in w.sites)


def test_parse_rejects_other_files(tmp_path):
    with pytest.raises(TargetError, match="not mmlab_barriers output"):
        bp.parse_counts("hello\n")
    with pytest.raises(TargetError, match="cannot parse"):
        bp.parse_counts("mmlab-barriers 1\nwindow 0 boot vcpu=0\nsite 0x1 zz\n")
    with pytest.raises(TargetError, match="no barrier counts"):
        bp.BarrierCounter(plugin=Path("/nonexistent.so")).read(tmp_path / "none")


def test_ranges_forms_and_errors():
    a = bp.as_ranges([("f", 0x10, 0x20), (0x20, 0x30, "g"), bp.FunctionRange(0, 8, "h")])
    assert [r.name for r in a] == ["h", "f", "g"]
    with pytest.raises(InputError):
        bp.as_ranges([("f", 0x20, 0x20)])
    with pytest.raises(InputError):
        bp.as_ranges([("a b", 0, 4)])


# --------------------------------------------------------------------------- missing pieces


def test_missing_header_is_a_clear_error(monkeypatch, tmp_path):
    _need(QEMU)
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path))
    monkeypatch.delenv(bp.HEADER_ENV, raising=False)
    with pytest.raises(MissingToolError) as exc:
        bp.ensure_plugin_header(install=False)
    assert "qemu-plugin.h" in str(exc.value) and "source package qemu" in str(exc.value)
    assert "mmlab doctor --install" in exc.value.hint
    with pytest.raises(MissingToolError):  # building needs it too
        bp.ensure_plugin(install=False)


def test_qemu_without_plugin_support(plugin_so):
    """Debian's qemu-user-static is built without plugins: a real qemu that lacks them."""
    _need("qemu-aarch64-static")
    with pytest.raises(MissingToolError, match="no TCG plugin support") as exc:
        bp.check_plugin_support("qemu-aarch64-static")
    assert "--enable-plugins" in exc.value.hint
    bp.check_plugin_support(QEMU)  # the real one has them


def test_qemu_missing():
    with pytest.raises(MissingToolError) as exc:
        bp.check_plugin_support("qemu-system-nonexistent")
    assert "qemu-system-arm" in exc.value.hint


def test_gcc_missing(monkeypatch, tmp_path, plugin_so):
    header = bp.ensure_plugin_header(install=False)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / QEMU).symlink_to(shutil.which(QEMU))
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "cache"))  # no cached build
    monkeypatch.setenv(bp.HEADER_ENV, str(header))
    with pytest.raises(MissingToolError, match="gcc not found") as exc:
        bp.ensure_plugin(install=False)
    assert "apt-get install gcc" in exc.value.hint


def test_header_for_another_api_is_refused(monkeypatch, tmp_path):
    """A fake header claiming plugin API 9 (no such qemu here): refused before building."""
    fake = tmp_path / "qemu-plugin.h"
    fake.write_text("#define QEMU_PLUGIN_VERSION 9\n")
    monkeypatch.setenv(bp.HEADER_ENV, str(fake))
    with pytest.raises(InputError, match="plugin API 9"):
        bp.ensure_plugin_header(install=False)


# --------------------------------------------------------------------------- per-loop counts

from orchestrator.barriers import counts as bc  # noqa: E402

KERNEL_COUNTS = DATA / "kernel-6.12-fix_size-smp1.counts.gz"


def test_fix_size_points_and_guest_script():
    pts = bc.fix_size_points((1, 256), (1000, 2000))
    assert [(p.nr_pages, p.loops, p.marker) for p in pts] == [
        (1, 1000, 1), (1, 2000, 2), (256, 1000, 3), (256, 2000, 4)]
    script = bc.guest_script(pts).splitlines()
    assert script[0] == "set -e"
    assert script[1].startswith("mmlab-load /lib/modules/test_vmalloc.ko run_test_mask=1 "
                                "test_loop_count=1000 nr_pages=1 >/dev/null")  # warm-up
    assert script[2:5] == [
        "mmlab-mark 1",
        "mmlab-load /lib/modules/test_vmalloc.ko run_test_mask=1 test_loop_count=1000 "
        "nr_pages=1 || [ $? -eq 11 ]  # EAGAIN: tests done",
        "mmlab-mark 0"]
    with pytest.raises(InputError):
        bc.fix_size_points((1,), (2000, 1000))


def test_per_loop_from_recorded_6_12_run():
    """Counts recorded with run_direct on the default 6.12 artifact (-smp 1, icount shift=3,
    nokaslr norandmaps, loops 1000/2000, after a warm-up load)."""
    import gzip

    counts = bp.parse_counts(gzip.decompress(KERNEL_COUNTS.read_bytes()).decode())
    res = bc.per_loop(counts, bc.fix_size_points())
    for nr in (1, 16, 256):
        # the pte-write barrier pair of 6.12 (no batching): exactly one per page
        assert bc.function_per_loop(res[nr], r"^__set_ptes", "dsb.ishst") == nr
        assert bc.function_per_loop(res[nr], r"^__set_ptes", "isb") == nr
        assert res[nr].per_kind["dsb"] == pytest.approx(nr, rel=0.01, abs=0.01)
        # every other ISB per loop comes from the timer interrupt (not modelled) or from
        # the lazy purge's TLB flush (1/32 per loop at 256 pages)
        timer = sum(row.get("isb", 0) for fn, row in res[nr].per_function.items()
                    if fn.startswith(("arch_timer", "arch_counter", "gic_")))
        assert res[nr].per_kind["isb"] - timer == pytest.approx(nr, abs=0.04)
        assert 0 < timer < 0.02 * nr + 0.1
    # nr_pages=256 purges the lazy vmap area every 32 loops (lazy_max_pages): one
    # flush_tlb_kernel_range = dsb ishst; tlbi vmalle1is; dsb ish; isb
    flush = res[256].per_function["flush_tlb_kernel_range"]
    assert flush["tlbi.vmalle1is"] == pytest.approx(1 / 32, abs=0.001)
    scaling = bc.dsb_scaling(res)
    assert list(scaling) == ["__set_ptes.constprop.0#3"]
    assert scaling["__set_ptes.constprop.0#3"].per_page == pytest.approx(1.0)
    assert scaling["__set_ptes.constprop.0#3"].placement == "in-loop"


def test_census_crosscheck_logic():
    """Census entries as `elfinspect.barrier_census` reported them for the 6.12 vmlinux."""
    from orchestrator.kernel.elfinspect import FunctionCensus

    census = {
        "__set_ptes.constprop.0#3": FunctionCensus("__set_ptes.constprop.0#3", 0, 108,
                                                   {"dsb.ishst": 1, "isb": 1}),
        "__vmap_pages_range_noflush": FunctionCensus(
            "__vmap_pages_range_noflush", 0, 900, {},
            calls_in_loop={"__set_ptes.constprop.0#3": 1}),
        "flush_tlb_kernel_range": FunctionCensus("flush_tlb_kernel_range", 0, 200,
                                                 {"dsb.ishst": 1, "dsb.ish": 1}),
    }
    scaling = {"__set_ptes.constprop.0#3": bc.Scaling("__set_ptes.constprop.0#3", 1.0, 0.0),
               "flush_tlb_kernel_range": bc.Scaling("flush_tlb_kernel_range", 0.0, 1.0)}
    rows = {r.function: r for r in bc.crosscheck_census(scaling, census)}
    assert rows["__set_ptes.constprop.0#3"].agree
    assert rows["__set_ptes.constprop.0#3"].static == "in-loop"
    assert rows["flush_tlb_kernel_range"].agree
    assert rows["flush_tlb_kernel_range"].static == "straight"
    # a per-page DSB the census places outside any loop is a disagreement
    wrong = {"flush_tlb_kernel_range": bc.Scaling("flush_tlb_kernel_range", 1.0, 0.0)}
    assert not bc.crosscheck_census(wrong, census)[0].agree


@pytest.mark.kernel
@pytest.mark.boot
@pytest.mark.slow
def test_fix_size_barriers_on_default_kernel(kernel_artifact, plugin_so):
    """DSB/ISB per fix_size_alloc loop on the default 6.12 build, booted for real."""
    from orchestrator.kernel.elfinspect import barrier_census

    files = bc.KernelFiles(kernel_artifact.image, kernel_artifact.vmlinux,
                           kernel_artifact.module("test_vmalloc"), kernel_artifact.name)
    pts = bc.fix_size_points((1, 16, 256), (1000, 2000))
    runs = [bc.run_direct(files.image, files.vmlinux, files.module, pts, icount_shift=3)
            for _ in range(2)]
    results = [bc.per_loop(r.counts, pts) for r in runs]
    for res in results:
        for nr in (1, 16, 256):
            assert bc.function_per_loop(res[nr], r"^__set_ptes", "dsb.ishst") == nr
            assert bc.function_per_loop(res[nr], r"^__set_ptes", "isb") == nr
    spread = bc.repeat_summary(results)
    for nr in (1, 16, 256):
        assert spread[nr]["dsb"].rel < 0.01 and spread[nr]["isb"].rel < 0.01
    checks = bc.crosscheck_census(bc.dsb_scaling(results[0]), barrier_census(files.vmlinux))
    assert checks and all(c.agree for c in checks)


def test_barriers_command_rejects_a_non_kernel(tmp_path):
    from click.testing import CliRunner

    from orchestrator.cli.main import cli

    with pytest.raises(InputError, match="no built kernel tree"):
        bc.kernel_files(str(tmp_path))
    res = CliRunner().invoke(cli, ["barriers", "--help"])
    assert res.exit_code == 0 and "--mask" in res.output and "atomics and instructions" in res.output
