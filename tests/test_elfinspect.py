"""vmlinux introspection (orchestrator.kernel.elfinspect) on real aarch64 code.

The small "kernels" are assembled and linked here with the cross binutils from
tests/data/elf/*.s (functions with known barrier contents, loops closed by each branch
kind, a banner and an IKCONFIG blob), at a kernel-like address (0xffff8000...). The
``kernel`` test reads the default 6.12 kernel built by the real pipeline.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.kernel.elfinspect import (
    FunctionCensus,
    barrier_census,
    compare_census,
    read_info,
    symbol_ranges,
    with_barriers,
)

DATA = Path(__file__).parent / "data" / "elf"
TEXT_BASE = "0xffff800080010000"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} missing: apt-get install binutils-aarch64-linux-gnu")
    return path


def _link(out: Path, *defsyms: str) -> Path:
    """Assemble census.s (+ second.s) with the given --defsym flags and link at TEXT_BASE."""
    work = out.parent
    gz = work / "config_data.gz"
    if not gz.exists():
        gz.write_bytes(gzip.compress((DATA / "config.txt").read_bytes(), mtime=0))
    as_, ld = _tool("aarch64-linux-gnu-as"), _tool("aarch64-linux-gnu-ld")
    flags = [f for d in defsyms for f in ("--defsym", d)]
    objs = []
    for src in ("census.s", "second.s"):
        obj = work / f"{out.name}.{src}.o"
        subprocess.run([as_, *flags, "-I", str(work), str(DATA / src), "-o", str(obj)],
                       check=True)
        objs.append(str(obj))
    subprocess.run([ld, "--build-id=sha1", f"-Ttext={TEXT_BASE}", "-e", "counts_fn", *objs,
                    "-o", str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def elfdir(tmp_path_factory):
    return tmp_path_factory.mktemp("elf")


@pytest.fixture(scope="session")
def vmlinux(elfdir):
    return _link(elfdir / "vmlinux")


@pytest.fixture(scope="session")
def vmlinux_batched(elfdir):
    return _link(elfdir / "vmlinux-batched", "BATCHED=1")


def _readelf_build_id(path: Path) -> str:
    out = subprocess.run([_tool("aarch64-linux-gnu-readelf"), "-n", str(path)], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "Build ID:" in line:
            return line.split("Build ID:")[1].strip()
    raise AssertionError("no build id from readelf")


# --- identity ---------------------------------------------------------------------------


def test_read_info(vmlinux):
    info = read_info(vmlinux)
    assert info.build_id == _readelf_build_id(vmlinux)
    assert len(info.build_id) == 40
    assert info.release == "6.12.0-mmlab-test"
    assert info.banner.startswith("Linux version 6.12.0-mmlab-test (test@example)")
    assert info.config["CONFIG_ARM64_VA_BITS"] == "48"
    assert info.config["CONFIG_TEST_VMALLOC"] == "m"
    assert info.config["CONFIG_LOCALVERSION"] == '"-mmlab-test"'
    assert "CONFIG_DEBUG_PAGEALLOC" not in info.config  # "is not set" lines are absent
    assert len(info.config) == 10
    assert info.config_summary()["CONFIG_PGTABLE_LEVELS"] == "4"


def test_read_info_without_ikconfig(elfdir):
    info = read_info(_link(elfdir / "vmlinux-noconfig", "NO_IKCONFIG=1"))
    assert info.config is None
    assert info.release == "6.12.0-mmlab-test"


def test_read_info_stripped_finds_markers_by_scanning(vmlinux, elfdir):
    stripped = elfdir / "vmlinux-stripped"
    subprocess.run([_tool("aarch64-linux-gnu-strip"), "-o", str(stripped), str(vmlinux)],
                   check=True)
    info = read_info(stripped)
    assert info.release == "6.12.0-mmlab-test"  # banner found in .rodata without symbols
    assert info.config["CONFIG_NR_CPUS"] == "4"  # IKCFG_ST ... IKCFG_ED scan
    assert info.build_id == read_info(vmlinux).build_id
    with pytest.raises(InputError, match="no symbol table"):
        barrier_census(stripped)


# --- census -----------------------------------------------------------------------------


def test_census_exact_counts(vmlinux):
    census = barrier_census(vmlinux)
    c = census["counts_fn"]
    assert c.counts == {
        "dsb.ishst": 2, "dsb.ish": 1, "dsb.sy": 1, "dsb.nsh": 1, "dsb.oshst": 1,
        "isb": 3,
        "dmb.ish": 1, "dmb.ishld": 2, "dmb.oshld": 1,
        "tlbi.vaale1is": 1, "tlbi.vaae1is": 1, "tlbi.vmalle1is": 1, "tlbi.vale1is": 2,
        "tlbi.aside1is": 1, "tlbi.vae1": 1,
    }  # ssbb, pssbb and sb are not counted
    assert c.aliases == ("__pi_counts_fn",)
    assert (c.dsb_in_loop, c.dsb_after_loop) == (0, 0)
    assert c.address == int(TEXT_BASE, 16) and c.size == 24 * 4
    assert c.dsb_total == 6 and c.total == 6 + 3 + 4 + 7


def test_census_loop_placement(vmlinux):
    census = barrier_census(vmlinux)

    def placement(name):
        return census[name].dsb_in_loop, census[name].dsb_after_loop

    assert census["vmap_pte_range"].counts == {"dsb.ishst": 1, "isb": 1}
    assert placement("vmap_pte_range") == (1, 0)      # 6.12 shape: barrier per pte
    assert placement("before_loop_fn") == (0, 0)      # DSB before the only loop
    assert placement("nested_fn") == (2, 2)           # TBNZ/CBNZ loops, DSB at the target
    assert placement("uncond_loop_fn") == (1, 0)      # loop closed by an unconditional B
    assert placement("tail_fn") == (0, 0)             # backward BL and tail call: no loop
    assert placement("shared_tail_fn") == (0, 1)      # backward loop exit is no loop
    assert placement("spin_fn") == (0, 1)             # self loop; BRK does not fall through
    assert census["shared_tail_fn"].counts == {"dsb.ishst": 2, "dsb.ish": 1, "isb": 1,
                                               "tlbi.vmalle1is": 1, "tlbi.vaale1is": 1}
    assert census["nested_fn"].counts == {"dsb.ishst": 1, "dsb.ish": 1, "dsb.sy": 1,
                                          "dsb.nsh": 1}


def test_census_calls_to_barrier_functions(vmlinux):
    census = barrier_census(vmlinux)
    caller = census["vmap_caller_fn"]
    assert caller.counts == {}
    assert caller.calls_in_loop == {"set_pte_helper": 1}
    assert caller.calls_after_loop == {"helper": 1, "init_fn": 1}  # init_fn: .init.text
    assert census["set_pte_helper"].counts == {"dsb.ishst": 1, "isb": 1}
    assert census["vmap_pte_range"].calls_in_loop == {}
    # selected alone, the callees' barriers are still known
    assert barrier_census(vmlinux, "vmap_caller_fn")["vmap_caller_fn"] == caller


def test_census_batched_variant(vmlinux_batched):
    census = barrier_census(vmlinux_batched)
    v = census["vmap_pte_range"]
    assert v.counts == {"dsb.ishst": 1, "isb": 1}
    assert (v.dsb_in_loop, v.dsb_after_loop) == (0, 1)  # 6.16 shape: once after the loop
    assert census["arch_leave_lazy_mmu_mode"].counts == {"dsb.ishst": 1, "isb": 1}


def test_census_duplicates_other_sections_and_empty(vmlinux):
    census = barrier_census(vmlinux)
    assert census["helper"].counts == {"dmb.ish": 1}       # census.s, linked first
    assert census["helper#2"].counts == {"isb": 2}         # second.s's static helper
    assert census["init_fn"].counts == {"tlbi.vmalle1": 1, "dsb.nsh": 1, "isb": 1}
    assert census["plain_fn"].counts == {}                 # present, no barriers
    assert "plain_fn" not in with_barriers(census)
    addresses = [c.address for c in census.values()]
    assert addresses == sorted(addresses)
    assert "__pi_counts_fn" not in census                  # aliases count once


def test_census_function_selection(vmlinux):
    sel = barrier_census(vmlinux, ["vmap_pte_range", "nested*"])
    assert list(sel) == ["vmap_pte_range", "nested_fn"]
    # an alias name selects its function under the requested name
    sel = barrier_census(vmlinux, "__pi_counts_fn")
    assert list(sel) == ["__pi_counts_fn"]
    assert sel["__pi_counts_fn"].counts["isb"] == 3
    assert barrier_census(vmlinux, ["nope"]) == {}


def test_census_json_roundtrip(vmlinux):
    c = barrier_census(vmlinux)["nested_fn"]
    data = json.loads(json.dumps(c.to_json()))
    assert data["counts"] == {"dsb.ish": 1, "dsb.ishst": 1, "dsb.nsh": 1, "dsb.sy": 1}
    assert data["dsb_in_loop"] == 2 and data["dsb_after_loop"] == 2
    assert data["address"] == c.address
    assert FunctionCensus.from_json(data) == c


def test_compare(vmlinux, vmlinux_batched):
    changes = compare_census(barrier_census(vmlinux), barrier_census(vmlinux_batched))
    by_name = {c.name: c for c in changes}
    assert set(by_name) == {"vmap_pte_range", "arch_leave_lazy_mmu_mode"}
    assert by_name["vmap_pte_range"].kind == "changed"
    assert by_name["vmap_pte_range"].details == ("dsb in loop 1->0", "dsb after loop 0->1")
    assert by_name["arch_leave_lazy_mmu_mode"].kind == "added"
    back = {c.name: c.kind for c in compare_census(barrier_census(vmlinux_batched),
                                                    barrier_census(vmlinux))}
    assert back["arch_leave_lazy_mmu_mode"] == "removed"
    assert compare_census(barrier_census(vmlinux), barrier_census(vmlinux)) == []


def test_symbol_ranges(vmlinux):
    base = int(TEXT_BASE, 16)
    assert symbol_ranges(vmlinux, ["counts_fn"]) == [("counts_fn", base, base + 96)]
    assert symbol_ranges(vmlinux, "__pi_counts_fn") == [("__pi_counts_fn", base, base + 96)]
    names = [r[0] for r in symbol_ranges(vmlinux, ["helper*", "init_fn"])]
    assert names == ["helper", "helper#2", "init_fn"]
    nm = subprocess.run([_tool("aarch64-linux-gnu-nm"), "-S", str(vmlinux)], check=True,
                        capture_output=True, text=True).stdout
    sizes = {ln.split()[3]: (int(ln.split()[0], 16), int(ln.split()[1], 16))
             for ln in nm.splitlines() if len(ln.split()) == 4}
    (name, start, end), = symbol_ranges(vmlinux, "vmap_pte_range")
    assert (start, end - start) == sizes["vmap_pte_range"]
    with pytest.raises(InputError, match="no function missing_fn"):
        symbol_ranges(vmlinux, ["counts_fn", "missing_fn"])
    assert symbol_ranges(vmlinux, ["missing_fn"], strict=False) == []


# --- bad input --------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="vmlinux not found"):
        read_info(tmp_path / "nope")
    with pytest.raises(InputError, match="vmlinux not found"):
        barrier_census(tmp_path / "nope")


def test_not_elf(tmp_path):
    image = tmp_path / "Image"
    image.write_bytes(b"MZ\x00\x00" + b"\x00" * 60)  # what an arm64 Image starts with
    with pytest.raises(InputError, match="is not an ELF file") as exc:
        read_info(image)
    assert "compressed boot Image" in exc.value.hint or "vmlinux" in exc.value.hint
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="is not an ELF file"):
        barrier_census(empty)


def test_truncated_elf(vmlinux, tmp_path):
    cut = tmp_path / "cut"
    cut.write_bytes(vmlinux.read_bytes()[:100])
    with pytest.raises(InputError):
        read_info(cut)


def test_x86_elf(tmp_path):
    as_x86 = shutil.which("x86_64-linux-gnu-as")
    if as_x86 is None:
        pytest.skip("x86_64-linux-gnu-as not installed (binutils-x86-64-linux-gnu)")
    obj = tmp_path / "x86.o"
    subprocess.run([as_x86, str(DATA / "x86_ret.s"), "-o", str(obj)], check=True)
    with pytest.raises(InputError, match="ELF file for x86-64, not aarch64"):
        read_info(obj)
    with pytest.raises(InputError, match="not aarch64"):
        barrier_census(obj)


def test_directory_inputs(vmlinux, tmp_path):
    # a build directory holding vmlinux
    assert read_info(vmlinux.parent).path == vmlinux.parent / "vmlinux"
    with pytest.raises(InputError, match="no vmlinux"):
        read_info(tmp_path)


def test_artifact_inputs(vmlinux, tmp_path, monkeypatch):
    from orchestrator.kernel.artifacts import Artifact

    key = "ab12" + "0" * 60
    art_dir = tmp_path / "cache" / "artifacts" / key
    art_dir.mkdir(parents=True)
    shutil.copy(vmlinux, art_dir / "vmlinux")
    (art_dir / "metadata.json").write_text(json.dumps(
        {"key": key, "release": "6.12.0-mmlab-test"}))
    art = Artifact.load(art_dir)
    assert read_info(art).build_id == read_info(vmlinux).build_id
    assert read_info(art_dir).path == art_dir / "vmlinux"
    assert barrier_census(art, "vmap_pte_range")["vmap_pte_range"].dsb_in_loop == 1
    # the CLI also takes an artifact key prefix from the cache
    env_cache = str(tmp_path / "cache")
    r = subprocess.run([sys.executable, "-m", "orchestrator", "inspect", "ab12", "-f",
                        "vmap_pte_range"], capture_output=True, text=True,
                       env={**os.environ, "MMLAB_CACHE": env_cache})
    assert r.returncode == 0, r.stderr
    assert "vmap_pte_range" in r.stdout and "6.12.0-mmlab-test" in r.stdout


# --- CLI --------------------------------------------------------------------------------


def _mmlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_inspect_text_and_json(vmlinux):
    r = _mmlab("inspect", str(vmlinux))
    assert r.returncode == 0, r.stderr
    assert "release:  6.12.0-mmlab-test" in r.stdout
    assert "build-id: " + read_info(vmlinux).build_id in r.stdout
    assert "10 options set" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("vmap_pte_range "))
    assert "1/0" in line and "dsb.ishst=1 isb=1" in line
    assert "plain_fn" not in r.stdout  # no barriers: only with --all

    r = _mmlab("inspect", str(vmlinux), "--json", "--functions", "vmap*,nested_fn")
    data = json.loads(r.stdout)
    assert set(data["functions"]) == {"vmap_pte_range", "vmap_caller_fn", "nested_fn"}
    assert data["functions"]["vmap_caller_fn"]["calls_in_loop"] == {"set_pte_helper": 1}
    assert data["release"] == "6.12.0-mmlab-test"
    assert data["config"]["options"] == 10

    r = _mmlab("inspect", str(vmlinux), "--all", "-f", "plain_fn")
    assert "plain_fn" in r.stdout

    r = _mmlab("inspect", str(vmlinux), "-f", "vmap_*")  # also functions calling barriers
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("vmap_caller_fn "))
    assert "[loop calls: set_pte_helper] [after-loop calls: helper, init_fn]" in line


def test_cli_compare(vmlinux, vmlinux_batched):
    r = _mmlab("inspect", str(vmlinux), "--compare", str(vmlinux_batched))
    assert r.returncode == 0, r.stderr
    assert "dsb in loop 1->0; dsb after loop 0->1" in r.stdout
    assert "arch_leave_lazy_mmu_mode" in r.stdout and "added" in r.stdout
    assert "2 function(s) changed" in r.stdout
    r = _mmlab("inspect", str(vmlinux), "--compare", str(vmlinux_batched), "--json")
    kinds = {c["name"]: c["kind"] for c in json.loads(r.stdout)["changes"]}
    assert kinds == {"vmap_pte_range": "changed", "arch_leave_lazy_mmu_mode": "added"}


def test_cli_bad_input_is_one_clear_error(tmp_path):
    r = _mmlab("inspect", str(tmp_path / "vmlinux"))
    assert r.returncode == 2
    assert r.stderr.startswith("mmlab: error: vmlinux not found")
    assert "Traceback" not in r.stderr and "mmlab: hint:" in r.stderr
    junk = tmp_path / "junk"
    junk.write_text("hello")
    r = _mmlab("inspect", str(junk))
    assert r.returncode == 2 and "is not an ELF file" in r.stderr
    assert "Traceback" not in r.stderr


# --- the real kernel --------------------------------------------------------------------


def check_real_6_12_kernel(vmlinux) -> dict[str, FunctionCensus]:
    """The 6.12 vmap pte path issues its dsb ishst once per pte, inside the per-pte loop.

    Either the barrier is inlined into the loop (-O2: ``dsb_in_loop``), or, as in the
    default -Os tinyconfig build, ``__set_pte`` stays out of line as a
    ``__set_ptes.constprop.0`` clone that the loop calls (``calls_in_loop``).
    Returns the vmap functions that show it.
    """
    t0 = time.monotonic()
    census = barrier_census(vmlinux)
    elapsed = time.monotonic() - t0
    assert len(census) > 5000
    assert elapsed < 10, f"full census took {elapsed:.1f}s"

    def ishst_per_pte(c: FunctionCensus) -> bool:
        if c.counts.get("dsb.ishst") and c.dsb_in_loop:
            return True
        return any(census[callee].counts.get("dsb.ishst") and
                   callee.split(".")[0].split("#")[0] in ("__set_ptes", "__set_pte",
                                                          "set_pte_at", "__set_pte_at")
                   for callee in c.calls_in_loop)

    vmap = {n: c for n, c in census.items()
            if n.lstrip("_").startswith("vmap") and ishst_per_pte(c)}
    # the vmalloc path (test_vmalloc's) and the vmap_page_range/ioremap path
    assert any(n.startswith("__vmap_pages_range_noflush") for n in vmap), sorted(vmap)
    assert any(n.startswith("vmap_range_noflush") or n.startswith("vmap_pte_range")
               for n in vmap), sorted(vmap)
    # and, being 6.12, no lazy-MMU flush after the loop: nothing queued, nothing to flush
    for c in vmap.values():
        assert not any(k.startswith("arch_leave_lazy_mmu") for k in c.calls_after_loop)
    # the kernel TLB flush is there, with the ops of arch/arm64/include/asm/tlbflush.h
    flush = census["flush_tlb_kernel_range"] if "flush_tlb_kernel_range" in census else None
    if flush is not None:
        assert flush.counts.get("tlbi.vaale1is") and flush.counts.get("tlbi.vmalle1is")
    return vmap


@pytest.mark.kernel
def test_real_kernel_vmap_pte_barrier_inside_loop(kernel_artifact):
    info = read_info(kernel_artifact)
    assert info.release == kernel_artifact.release
    assert info.release.startswith("6.12")
    if kernel_artifact.build_id:
        assert info.build_id == kernel_artifact.build_id
    assert info.config is not None  # IKCONFIG is in the default fragments
    assert info.config["CONFIG_TEST_VMALLOC"] == "m"
    assert info.config == kernel_artifact.config()
    check_real_6_12_kernel(kernel_artifact.vmlinux)
