"""Barriers per workload loop, from plugin counts taken around guest workloads.

A test_vmalloc run executes fixed work besides its loop (exec of the loader, module load
and relocation, the test's kthread, module unload) plus the loop itself. To get what one
loop iteration executes, each workload point is run at two loop counts, each inside its
own marker window, and the per-loop count is the slope:

    per_loop = (count(window at loops_hi) - count(window at loops_lo)) / (loops_hi - loops_lo)

Fixed costs cancel exactly; what remains is the loop body plus any background work that
scales with run time (timer interrupts, the lazy vmap purge, context switches). Counts are
kept per function, so the pte-write barriers (``__set_ptes``) can be told apart from timer
ISBs (``arch_counter_get_cntvct``).

Pieces:

* :func:`fix_size_points` and :func:`guest_script`: the guest commands (markers around
  ``mmlab-load test_vmalloc.ko run_test_mask=1 test_loop_count=N nr_pages=P``);
* :func:`per_loop`: slopes per point, per kind, per function, from a :class:`Counts`;
* :func:`repeat_summary`: mean and spread over repeat runs;
* :func:`run_direct`: a self-contained measurement (builds an initramfs with the workload
  as ``/mmlab/init.local``, boots the kernel in QEMU with the plugin, powers off) for when
  no target session is at hand; the run pipeline can instead send :func:`guest_script` to
  its own guest and pass :meth:`BarrierCounter.qemu_args` to its QEMU.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from orchestrator import progress
from orchestrator.barriers.plugin import QEMU, BarrierCounter, Counts, Window, ensure_marker_binary
from orchestrator.errors import InputError, MmlabError, TargetError
from orchestrator.paths import cache_dir

MODULE_PATH = "/lib/modules/test_vmalloc.ko"
DEFAULT_KINDS = ("dsb", "dsb.ishst", "dsb.ish", "isb", "dmb", "dmb.ish", "tlbi", "atomic",
                 "atomic.lse.al", "atomic.stlxr")
# Where the pte-write barriers land, across kernels: 6.12 and the demo series in
# __set_ptes*/__set_pte (inlined there), 6.16+ in queue_pte_barriers'/emit's callers and the
# out-of-line arch_flush/leave_lazy_mmu_mode copies (7.3: arch_flush_lazy_mmu_mode#N).
PTE_WRITE_FUNCTIONS = (r"^(__set_ptes|__set_pte|set_pte|__set_ptes_anysz|emit_pte_barriers|"
                       r"queue_pte_barriers|arch_flush_lazy_mmu_mode|arch_leave_lazy_mmu_mode)")
# Interrupt work the model leaves out on purpose (the timer tick and its GIC entry): their
# ISBs and DSBs are the "remainder" of a loop's count.
INTERRUPT_FUNCTIONS = r"^(arch_timer_|arch_counter_|gic_handle_irq|gic_)"


@dataclass(frozen=True)
class LoopPoint:
    """One test_vmalloc run inside its own window."""

    nr_pages: int
    loops: int
    marker: int  # window id (1..255)
    run_test_mask: int = 1  # fix_size_alloc_test
    use_huge: int = 0  # test_vmalloc's use_huge (vmalloc_huge in fix_size_alloc_test)

    def params(self) -> str:
        return (f"run_test_mask={self.run_test_mask} test_loop_count={self.loops} "
                f"nr_pages={self.nr_pages}" + (" use_huge=1" if self.use_huge else ""))


def fix_size_points(nr_pages: Iterable[int] = (1, 16, 256),
                    loops: tuple[int, int] = (1000, 2000),
                    run_test_mask: int = 1, use_huge: int = 0) -> list[LoopPoint]:
    """Two windows (low and high loop count) per nr_pages, markers 1, 2, 3, ...

    ``run_test_mask`` picks the test_vmalloc test (1 fix_size_alloc, 1024 vm_map_ram: both
    take nr_pages)."""
    lo, hi = loops
    if not 0 < lo < hi:
        raise InputError(f"loop counts {loops} must be 0 < low < high",
                         hint="e.g. (1000, 2000): the slope between them is the per-loop count")
    points = []
    for p in nr_pages:
        for n in (lo, hi):
            points.append(LoopPoint(nr_pages=p, loops=n, marker=len(points) + 1,
                                    run_test_mask=run_test_mask, use_huge=int(bool(use_huge))))
    if len(points) > 255:
        raise InputError("more than 255 windows", hint="split the points over several boots")
    return points


def guest_script(points: Sequence[LoopPoint], *, module: str = MODULE_PATH,
                 loader: str = "mmlab-load", mark: str = "mmlab-mark",
                 warmup: bool = True) -> str:
    """Shell commands that run each point inside its window (marker 0 closes it).

    ``loader`` must load the module with exactly one finit_module() call (busybox insmod
    retries and would run the tests twice). ``warmup`` first runs the first point once
    outside any window, so one-off work after boot (first module load, page cache, deferred
    kernel work) does not land in the first window and bias the slope.
    """
    lines = ["set -e"]
    if warmup and points:
        lines.append(f"{loader} {module} {points[0].params()} >/dev/null || [ $? -eq 11 ]")
    for pt in points:
        lines += [f"{mark} {pt.marker}",
                  f"{loader} {module} {pt.params()} || [ $? -eq 11 ]  # EAGAIN: tests done",
                  f"{mark} 0"]
    return "\n".join(lines) + "\n"


@dataclass
class PointResult:
    """Per-loop counts of one nr_pages, from the slope between two windows."""

    nr_pages: int
    loops: tuple[int, int]
    per_kind: dict[str, float]                      # family or exact kind -> per loop
    per_function: dict[str, dict[str, float]]       # function -> exact kind -> per loop
    fixed: dict[str, float] = field(default_factory=dict)  # kind -> count outside the loop

    def to_json(self) -> dict[str, Any]:
        return {"nr_pages": self.nr_pages, "loops": list(self.loops),
                "per_kind": self.per_kind, "per_function": self.per_function,
                "fixed": self.fixed}


def _slope(a: float, b: float, la: int, lb: int) -> float:
    return (b - a) / (lb - la)


def per_loop(counts: Counts, points: Sequence[LoopPoint], *,
             kinds: Sequence[str] = DEFAULT_KINDS, min_per_loop: float = 0.005
             ) -> dict[int, PointResult]:
    """Per-loop counts for each nr_pages of ``points`` (two loop counts each).

    ``per_function`` keeps (function, kind) pairs whose slope is at least ``min_per_loop``
    in magnitude, to drop one-off noise.
    """
    groups: dict[int, list[LoopPoint]] = defaultdict(list)
    for pt in points:
        groups[pt.nr_pages].append(pt)
    out: dict[int, PointResult] = {}
    for nr, pts in sorted(groups.items()):
        if len(pts) != 2 or pts[0].loops == pts[1].loops:
            raise InputError(f"nr_pages={nr}: need exactly two windows with different loop "
                             "counts", hint="build the points with fix_size_points()")
        lo, hi = sorted(pts, key=lambda p: p.loops)
        wl, wh = _window(counts, lo.marker), _window(counts, hi.marker)
        per_kind = {k: _slope(wl.count(k), wh.count(k), lo.loops, hi.loops) for k in kinds}
        fixed = {k: wl.count(k) - per_kind[k] * lo.loops for k in kinds}
        if wl.insns is not None and wh.insns is not None:  # plugin run with insns=on
            per_kind["insns"] = _slope(wl.insns, wh.insns, lo.loops, hi.loops)
            fixed["insns"] = wl.insns - per_kind["insns"] * lo.loops
        fl, fh = wl.by_function(), wh.by_function()
        per_fn: dict[str, dict[str, float]] = {}
        for fn in sorted(set(fl) | set(fh)):
            ks = set(fl.get(fn, {})) | set(fh.get(fn, {}))
            row = {k: _slope(fl.get(fn, {}).get(k, 0), fh.get(fn, {}).get(k, 0), lo.loops,
                             hi.loops) for k in sorted(ks)}
            row = {k: v for k, v in row.items() if abs(v) >= min_per_loop}
            if row:
                per_fn[fn] = row
        out[nr] = PointResult(nr, (lo.loops, hi.loops), per_kind, per_fn, fixed)
    return out


def _window(counts: Counts, marker: int) -> Window:
    w = counts.window(marker)
    if not w.closed:
        raise TargetError(f"window {marker} was not closed (the guest stopped inside it)",
                          hint="check the guest console log for a failure in that workload")
    return w


@dataclass
class Spread:
    mean: float
    low: float
    high: float
    n: int

    @property
    def rel(self) -> float:
        """(max - min) / mean: 0.01 means the repeats agree within 1%."""
        return (self.high - self.low) / self.mean if self.mean else 0.0

    def to_json(self) -> dict[str, float]:
        return {"mean": self.mean, "min": self.low, "max": self.high, "n": self.n,
                "rel_spread": self.rel}


def repeat_summary(runs: Sequence[dict[int, PointResult]]) -> dict[int, dict[str, Spread]]:
    """nr_pages -> kind -> spread of the per-loop counts over repeat runs."""
    out: dict[int, dict[str, Spread]] = {}
    for nr in runs[0]:
        out[nr] = {}
        for k in runs[0][nr].per_kind:
            vals = [r[nr].per_kind[k] for r in runs]
            out[nr][k] = Spread(statistics.fmean(vals), min(vals), max(vals), len(vals))
    return out


def function_per_loop(result: PointResult, function_pattern: str, kind: str) -> float:
    """Sum of per-loop ``kind`` over functions matching a regex (e.g. ``__set_ptes``:
    elfinspect names duplicate local symbols ``name#2``...)."""
    rx = re.compile(function_pattern)
    return sum(row.get(kind, 0.0) for fn, row in result.per_function.items() if rx.search(fn))


# ----------------------------------------------------------------- modelled vs remainder

# The quantities a loop's counts are compared in (measured and predicted alike).
COMPARED = ("dsb.ishst", "dsb.ish", "isb", "dmb.ish", "dmb.ishst", "tlbi", "atomic",
            "atomic.full")
FULL_ATOMICS = ("atomic.stlxr", "atomic.lse.al", "atomic.cas.al")  # fully ordered RMWs


def families(kinds: dict[str, float]) -> dict[str, float]:
    """Exact plugin/model kinds -> the COMPARED quantities (tlbi.* -> tlbi, atomic.* ->
    atomic, fully ordered atomics also -> atomic.full); other exact kinds kept as they are."""
    out: dict[str, float] = defaultdict(float)
    for k, v in kinds.items():
        if k.startswith("tlbi."):
            out["tlbi"] += v
        elif k.startswith("atomic."):
            out["atomic"] += v
            if k in FULL_ATOMICS:
                out["atomic.full"] += v
        elif k in ("atomic", "tlbi"):
            continue  # totals: the exact kinds carry the same counts
        else:
            out[k] += v
    return dict(out)


def left_out() -> dict[str, tuple[str, re.Pattern[str]]]:
    """orchestrator/barriers/left_out.toml: category -> (why, function pattern)."""
    import tomllib

    data = tomllib.loads((Path(__file__).with_name("left_out.toml")).read_text())
    return {name: (d["why"], re.compile(d["functions"])) for name, d in data.items()}


def left_out_category(function: str, table: dict | None = None) -> str | None:
    for name, (_why, rx) in (table or left_out()).items():
        if rx.match(function):
            return name
    return None


def split_remainder(per_function: dict[str, dict[str, float]]
                    ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(modelled, remainder) per loop from a point's per-function counts: the functions of a
    left_out.toml category go to ``remainder[category]``, all others are modelled work."""
    table = left_out()
    modelled: dict[str, float] = defaultdict(float)
    remainder: dict[str, dict[str, float]] = {}
    for fn, kinds in per_function.items():
        cat = left_out_category(fn, table)
        target = modelled if cat is None else remainder.setdefault(cat, defaultdict(float))
        for k, v in families(kinds).items():
            target[k] += v
    return (dict(modelled), {c: dict(v) for c, v in remainder.items()})


# --------------------------------------------------------------------------- static check


@dataclass(frozen=True)
class Scaling:
    """How a function's per-loop DSBs grow with nr_pages: ``per_page * nr_pages + base``."""

    function: str
    per_page: float
    base: float

    @property
    def placement(self) -> str:
        """"in-loop" when the DSBs follow the page count (one per pte written), else
        "per-call"."""
        return "in-loop" if self.per_page >= 0.5 else "per-call"


def dsb_scaling(results: dict[int, PointResult], *, min_per_loop: float = 0.5
                ) -> dict[str, Scaling]:
    """Least-squares fit of each function's DSBs per loop against nr_pages.

    Functions that execute fewer than ``min_per_loop`` DSBs per loop at every nr_pages are
    background (timer, purge) and left out.
    """
    xs = sorted(results)
    if len(xs) < 2:
        raise InputError("need at least two nr_pages values to see how DSBs scale",
                         hint="e.g. fix_size_points(nr_pages=(1, 16, 256))")
    fns = {f for r in results.values() for f in r.per_function}
    out: dict[str, Scaling] = {}
    mx = statistics.fmean(xs)
    sxx = sum((x - mx) ** 2 for x in xs)
    for fn in sorted(fns):
        ys = [sum(v for k, v in results[x].per_function.get(fn, {}).items()
                  if k.startswith("dsb.")) for x in xs]
        if max(abs(y) for y in ys) < min_per_loop:
            continue
        my = statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        out[fn] = Scaling(fn, slope, my - slope * mx)
    return out


@dataclass(frozen=True)
class CrossCheck:
    function: str
    dynamic: str         # "in-loop" / "per-call", from the counts
    static: str          # "in-loop" / "after-loop" / "straight" / "no DSB", from the census
    evidence: str        # where the static placement comes from
    agree: bool


def crosscheck_census(scaling: dict[str, Scaling], census: dict[str, Any]) -> list[CrossCheck]:
    """Hold the dynamic placement of each function's DSBs against the ELF census
    (``elfinspect.barrier_census``): a DSB executed once per page must sit in a loop, in
    the function itself (``dsb_in_loop``) or in a helper its caller calls inside a loop
    (``calls_in_loop``, e.g. ``__set_ptes.constprop.0`` from ``__vmap_pages_range_noflush``
    on 6.12); a DSB executed once per call must not."""
    callers_in: dict[str, list[str]] = defaultdict(list)
    callers_after: dict[str, list[str]] = defaultdict(list)
    for name, fc in census.items():
        for callee in fc.calls_in_loop:
            callers_in[callee].append(name)
        for callee in fc.calls_after_loop:
            callers_after[callee].append(name)
    rows = []
    for fn, sc in sorted(scaling.items()):
        fc = census.get(fn)
        if fc is None:
            static, evidence = "unknown", "not in the census"
        elif fc.dsb_total == 0:
            static, evidence = "no DSB", "census finds no DSB in it"
        elif fc.dsb_in_loop:
            static, evidence = "in-loop", f"{fc.dsb_in_loop} DSB inside its own loop"
        elif callers_in.get(fn):
            static, evidence = "in-loop", "called in a loop by " + ", ".join(callers_in[fn])
        elif fc.dsb_after_loop or callers_after.get(fn):
            static, evidence = "after-loop", "DSB after the loop" + (
                " of " + ", ".join(callers_after[fn]) if callers_after.get(fn) else "")
        else:
            static, evidence = "straight", "DSB outside any loop"
        agree = (sc.placement == "in-loop") == (static == "in-loop") and static != "unknown"
        rows.append(CrossCheck(fn, sc.placement, static, evidence, agree))
    return rows


# --------------------------------------------------------------------------- direct runs


@dataclass
class DirectRun:
    counts: Counts
    console: str
    summaries: list[str]  # test_vmalloc "Summary:" lines, in order (the warm-up run first)
    machine: dict[str, Any] = field(default_factory=dict)  # the QEMU machine counted on


_SUMMARY = re.compile(r"Summary: (\S+) passed: (\d+) failed: (\d+).*loops: (\d+)")


def run_direct(image: Path, vmlinux: Path, module_ko: Path, points: Sequence[LoopPoint], *,
               functions: Iterable[str] | str = "*", smp: int = 1, memory: str | None = None,
               timeout: float = 600, workdir: Path | None = None, qemu: str = QEMU,
               insns: bool = False, icount_shift: int | None = None,
               profile: str = "default") -> DirectRun:
    """Boot ``image`` once under the plugin, run ``points``, power off; return the counts.

    ``functions`` (names or glob patterns, default all) are attributed by their vmlinux
    address ranges; the kernel is booted with ``nokaslr`` so those addresses hold.
    ``icount_shift`` runs QEMU with ``-icount shift=N,sleep=off``: guest time follows the
    instruction count (2**N ns per instruction), so timer interrupts, and the barriers their
    handlers execute, no longer depend on host speed (single-threaded TCG, even at -smp 2).
    ``profile``: the QEMU machine profile (qemu_profiles/) whose machine, GIC, CPU model and
    memory the count runs on: the same command-line builder as the timed runs
    (targets.qemu.qemu_argv), with TCG (the plugin needs it), ``smp`` vCPUs, no network.
    """
    from orchestrator.image.initramfs import build_initramfs
    from orchestrator.kernel.elfinspect import symbol_ranges

    ranges = symbol_ranges(vmlinux, functions, strict=False)
    script = "#!/bin/sh\n" + guest_script(points) + "poweroff -f\n"
    # init.local runs before the console agent; a failing workload still powers off
    init_local = ("#!/bin/sh\n( sh /mmlab/barrier-workload.sh ) 2>&1\n"
                  "echo mmlab-barrier-workload-exit=$?\npoweroff -f\n")
    img = build_initramfs(None, extra_files={
        "usr/bin/mmlab-mark": ensure_marker_binary().read_bytes(),
        MODULE_PATH.lstrip("/"): Path(module_ko).read_bytes(),
        "mmlab/barrier-workload.sh": script.encode(),
        "mmlab/init.local": init_local.encode(),
    })
    scratch = workdir is None  # removed after a good run; kept (with its logs) on failure
    work = Path(workdir or tempfile.mkdtemp(dir=cache_dir("tmp"), prefix="barriers."))
    work.mkdir(parents=True, exist_ok=True)
    counter = BarrierCounter(ranges, insns=insns, qemu=qemu)
    out = work / "barriers.counts"
    import dataclasses

    from orchestrator.targets.qemu import load_profile, qemu_argv

    prof = dataclasses.replace(load_profile(profile), smp=smp, accel="tcg", network=False,
                               memory=memory or load_profile(profile).memory)
    append = " ".join([*prof.cmdline, "nokaslr", "norandmaps", "mmlab.net=0"])
    argv = [*qemu_argv(prof, Path(image), img.path, append, qemu=qemu),
            *counter.qemu_args(out)]
    machine = {"profile": profile, "machine": prof.machine, "gic_version": prof.gic_version,
               "cpu": ",".join([prof.cpu, *prof.cpu_options]), "smp": smp,
               "memory": prof.memory, "accel": "tcg",
               "icount_shift": icount_shift}
    if icount_shift is not None:
        argv[1:1] = ["-icount", f"shift={icount_shift},sleep=off"]
    with progress.phase("barriers", f"count {len(points)} windows, -smp {smp}"):
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                 stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as exc:
            console = (exc.stdout or b"").decode(errors="replace") if isinstance(
                exc.stdout, bytes) else (exc.stdout or "")
            (work / "console.log").write_text(console)
            raise TargetError(f"guest did not power off within {timeout:.0f}s",
                              log=str(work / "console.log"),
                              hint="see the console log; raise the timeout for big loops"
                              ) from None
    console = res.stdout + res.stderr
    (work / "console.log").write_text(console)
    if res.returncode != 0:
        raise TargetError(f"qemu exited with {res.returncode}", log=str(work / "console.log"),
                          hint="see the console log")
    summaries = [m.group(0) for m in _SUMMARY.finditer(console)]
    failed = [s for s in summaries if _SUMMARY.search(s).group(3) != "0"]
    if failed or len(summaries) != len(points) + 1:  # + the warm-up run
        raise TargetError(f"expected {len(points) + 1} passing test_vmalloc runs, console has "
                          f"{len(summaries)} ({len(failed)} failing)",
                          log=str(work / "console.log"), hint="see the console log")
    counts = counter.read(out)
    if scratch:
        shutil.rmtree(work, ignore_errors=True)
        counts.path = None
    return DirectRun(counts, console, summaries, machine)


# --------------------------------------------------------------------------- CLI


@dataclass(frozen=True)
class KernelFiles:
    image: Path
    vmlinux: Path
    module: Path
    label: str


def kernel_files(spec: str) -> KernelFiles:
    """An artifact (directory or key prefix) or a kernel build directory (O=...)."""
    p = Path(spec)
    if p.is_dir() and not (p / "metadata.json").is_file():
        files = KernelFiles(p / "arch/arm64/boot/Image", p / "vmlinux",
                            p / "lib/test_vmalloc.ko", str(p))
        missing = [f for f in (files.image, files.vmlinux, files.module) if not f.is_file()]
        if missing:
            raise InputError(f"{p} is no built kernel tree: {missing[0]} missing",
                             hint="pass an artifact (from `mmlab build`) or a build directory "
                                  "with CONFIG_TEST_VMALLOC=m built")
        return files
    from orchestrator.kernel.artifacts import find

    art = find(spec)
    ko = art.module("test_vmalloc")
    if ko is None:
        raise InputError(f"kernel {art.name} has no test_vmalloc module",
                         hint="build it with kernel_configs/test_vmalloc.config")
    return KernelFiles(art.image, art.vmlinux, ko, art.name)


def measure(files: KernelFiles, *, nr_pages: Sequence[int] = (1, 16, 256),
            loops: tuple[int, int] = (1000, 2000), smp: int = 1, repeat: int = 3,
            icount_shift: int | None = 3, workdir: Path | None = None,
            run_test_mask: int = 1, insns: bool = True, use_huge: int = 0,
            profile: str = "default") -> dict[str, Any]:
    """Repeat runs of the test's points; per-loop counts (barriers, TLBI, atomics and, with
    ``insns``, executed instructions), spreads, pte-write and interrupt parts, static check."""
    from orchestrator.kernel.elfinspect import barrier_census

    points = fix_size_points(nr_pages, loops, run_test_mask, use_huge)
    pte_pattern = PTE_WRITE_FUNCTIONS
    try:  # where this kernel's code issues the pte barriers (kernelcode), besides the names
        from orchestrator.kernel.kernelcode import read_kernel_code

        sites = read_kernel_code(files.vmlinux).pte_sites
        if sites:
            pte_pattern = PTE_WRITE_FUNCTIONS + "|^(" + "|".join(
                re.escape(s) for s in sites) + ")$"
    except MmlabError:
        pass
    runs = []
    machine: dict[str, Any] = {}
    for r in range(repeat):
        wd = (workdir / f"run{r}") if workdir else None
        d = run_direct(files.image, files.vmlinux, files.module, points, smp=smp,
                       icount_shift=icount_shift, workdir=wd, insns=insns, profile=profile)
        machine = d.machine
        runs.append(per_loop(d.counts, points))
    pte = {nr: [(function_per_loop(run[nr], pte_pattern, "dsb.ishst"),
                 function_per_loop(run[nr], pte_pattern, "isb")) for run in runs]
           for nr in runs[0]}
    irq = {nr: [{k: function_per_loop(run[nr], INTERRUPT_FUNCTIONS, k)
                 for k in ("isb", "dsb.ish", "dsb.ishst")} for run in runs]
           for nr in runs[0]}
    spreads = repeat_summary(runs)
    scaling = dsb_scaling(runs[0]) if len(runs[0]) > 1 else {}
    checks = crosscheck_census(scaling, barrier_census(files.vmlinux)) if scaling else []
    return {
        "kernel": files.label, "smp": smp, "repeat": repeat, "loops": list(loops),
        "run_test_mask": run_test_mask,
        "use_huge": int(bool(use_huge)),
        "icount_shift": icount_shift,
        "machine": machine,
        "per_loop": {str(nr): {k: v.to_json() for k, v in ks.items()}
                     for nr, ks in spreads.items()},
        "pte_write_per_loop": {str(nr): [{"dsb.ishst": a, "isb": b} for a, b in v]
                               for nr, v in pte.items()},
        "interrupt_per_loop": {str(nr): v for nr, v in irq.items()},
        "runs": [{str(nr): res.to_json() for nr, res in run.items()} for run in runs],
        "dsb_scaling": {f: {"per_page": s.per_page, "base": s.base, "placement": s.placement}
                        for f, s in scaling.items()},
        "census_check": [c.__dict__ for c in checks],
    }


def _print_measurement(m: dict[str, Any]) -> None:
    test = {1: "fix_size_alloc_test", 2: "full_fit_alloc_test",
            1024: "vm_map_ram_test"}.get(m.get("run_test_mask", 1), f"mask {m.get('run_test_mask')}")
    if m.get("use_huge"):
        test += " use_huge=1"
    mach = m.get("machine") or {}
    if mach:
        click.echo(f"machine: qemu profile {mach.get('profile')}: {mach.get('machine')} "
                   f"gic-version={mach.get('gic_version')} -cpu {mach.get('cpu')} "
                   f"-m {mach.get('memory')}, TCG")
    click.echo(f"kernel {m['kernel']}  {test}  -smp {m['smp']}  repeats {m['repeat']}  loops "
               f"{m['loops'][0]}->{m['loops'][1]}  icount "
               f"{'off' if m['icount_shift'] is None else m['icount_shift']}  (per loop)")
    click.echo(f"{'nr_pages':>8} {'DSB':>9} {'ISB':>9} {'DMB':>8} {'TLBI':>7} {'atomics':>8} "
               f"{'insns':>9} | {'pte DSB':>8} {'pte ISB':>8} | {'irq ISB':>7}  spread")
    for nr, ks in m["per_loop"].items():
        pte = m["pte_write_per_loop"][nr]
        pd = statistics.fmean(x["dsb.ishst"] for x in pte)
        pi = statistics.fmean(x["isb"] for x in pte)
        irq = m.get("interrupt_per_loop", {}).get(nr) or [{"isb": 0.0}]
        ii = statistics.fmean(x["isb"] for x in irq)
        ins = ks.get("insns", {}).get("mean")
        spread = max(ks[k]["rel_spread"] for k in ("dsb", "isb"))
        click.echo(f"{nr:>8} {ks['dsb']['mean']:>9.3f} {ks['isb']['mean']:>9.3f} "
                   f"{ks['dmb']['mean']:>8.2f} {ks['tlbi']['mean']:>7.3f} "
                   f"{ks.get('atomic', {}).get('mean', 0.0):>8.2f} "
                   f"{(f'{ins:9.0f}' if ins is not None else '        -')} | {pd:>8.3f} "
                   f"{pi:>8.3f} | {ii:>7.3f}  {spread:.2%}")
    click.echo("pte DSB/ISB: in the functions that write kernel ptes or flush lazy-MMU "
               "sections; irq ISB: timer and GIC interrupt work (the model leaves it out)")
    for c in m["census_check"]:
        verdict = "agrees" if c["agree"] else "DISAGREES"
        click.echo(f"census: {c['function']}: dynamic {c['dynamic']}, static {c['static']} "
                   f"({c['evidence']}): {verdict}")


def model_comparison(kernel: str, m: dict[str, Any]) -> dict[str, Any]:
    """The reference model beside a measurement: the kernel's variant inferred from its code,
    and per nr_pages each COMPARED quantity measured (left-out work subtracted) and
    predicted, plus the left-out remainder by category."""
    from orchestrator.sim import predict
    from orchestrator.sim.infer import infer_kernel
    from orchestrator.sim.workloads import with_kernel_params

    try:
        inf = infer_kernel(kernel)
    except MmlabError as exc:
        return {"error": str(exc)}
    out: dict[str, Any] = {"variant": inf.variant, "params": inf.params,
                           "conflicts": inf.conflicts, "points": {}}
    for nr in m["per_loop"]:
        w = (f"test_vmalloc run_test_mask={m.get('run_test_mask', 1)} nr_pages={nr}"
             + (" use_huge=1" if m.get("use_huge") else ""))
        pred = families(predict(inf.variant, with_kernel_params(w, inf.params),
                                check=False).per_loop)
        splits = [split_remainder(run[nr]["per_function"]) for run in m["runs"]]
        measured = {q: statistics.fmean(sp[0].get(q, 0.0) for sp in splits) for q in COMPARED}
        left: dict[str, dict[str, float]] = {}
        for sp in splits:
            for cat, kinds in sp[1].items():
                for q, v in kinds.items():
                    left.setdefault(cat, {})[q] = left.get(cat, {}).get(q, 0.0) + v / len(splits)
        out["points"][nr] = {"measured": measured, "predicted": {q: pred.get(q, 0.0)
                                                                 for q in COMPARED},
                             "left_out": left}
    return out


def _print_model(model: dict[str, Any]) -> None:
    if "error" in model:
        click.echo(f"model: not compared ({model['error']})")
        return
    params = " ".join(f"{k}={v}" for k, v in model["params"].items())
    click.echo(f"model: variant {model['variant']} (inferred from the kernel's code; {params})"
               + ("; CONFLICTS: " + "; ".join(model["conflicts"]) if model["conflicts"] else ""))
    click.echo(f"{'nr_pages':>8} " + " ".join(f"{q:>17}" for q in COMPARED))
    for nr, pt in model["points"].items():
        cells = [f"{pt['measured'][q]:8.2f}/{pt['predicted'][q]:<8.2f}" for q in COMPARED]
        click.echo(f"{nr:>8} " + " ".join(f"{c:>17}" for c in cells))
    click.echo("measured/predicted per loop, measured without the work the model leaves out "
               "(orchestrator/barriers/left_out.toml):")
    for nr, pt in model["points"].items():
        parts = []
        for cat, kinds in sorted(pt["left_out"].items()):
            ks = ", ".join(f"{q} {v:.2f}" for q, v in sorted(kinds.items()) if abs(v) >= 0.01)
            if ks:
                parts.append(f"{cat}: {ks}")
        click.echo(f"  {nr} pages: " + ("; ".join(parts) or "nothing"))


def _make_command() -> click.Command:
    @click.command("barriers")
    @click.argument("kernel")
    @click.option("--nr-pages", "nr_pages", default="1,16,256", show_default=True,
                  help="Comma-separated nr_pages values of fix_size_alloc_test.")
    @click.option("--loops", default="1000,2000", show_default=True,
                  help="Two loop counts; the per-loop count is the slope between them.")
    @click.option("--mask", "run_test_mask", default=1, show_default=True, type=int,
                  help="test_vmalloc run_test_mask: 1 fix_size_alloc, 2 full_fit_alloc, "
                  "1024 vm_map_ram (any single test).")
    @click.option("--use-huge", "use_huge", is_flag=True,
                  help="test_vmalloc use_huge=1 (vmalloc_huge in fix_size_alloc_test).")
    @click.option("--profile", default="default", show_default=True,
                  help="QEMU machine profile (qemu_profiles/) to count on.")
    @click.option("--smp", default=1, show_default=True, type=int)
    @click.option("--repeat", default=3, show_default=True, type=int)
    @click.option("--icount", "icount_shift", default=3, show_default=True, type=int,
                  help="QEMU -icount shift (deterministic guest time); -1 for real time.")
    @click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
                  help="Write the full measurement as JSON here.")
    def barriers_command(kernel: str, nr_pages: str, loops: str, run_test_mask: int,
                         use_huge: bool, profile: str, smp: int, repeat: int,
                         icount_shift: int, json_out: Path | None) -> None:
        """Count the barriers, TLBIs, atomics and instructions a kernel executes per
        test_vmalloc loop (fix_size_alloc by default; --mask picks another test).

        KERNEL: an artifact (directory or key prefix) or a kernel build directory.
        """
        from orchestrator.atomic import atomic_write_json

        try:
            pages = [int(x) for x in nr_pages.split(",") if x]
            lo, hi = (int(x) for x in loops.split(","))
        except ValueError:
            raise InputError(f"bad --nr-pages {nr_pages!r} or --loops {loops!r}",
                             hint="comma-separated integers, e.g. --loops 1000,2000") from None
        if run_test_mask <= 0 or run_test_mask & (run_test_mask - 1):
            raise InputError(f"--mask {run_test_mask}: give one test's bit (1, 2, 4, ... 1024)",
                             hint="per-loop counts need a single test per run")
        m = measure(kernel_files(kernel), nr_pages=pages, loops=(lo, hi), smp=smp,
                    repeat=repeat, icount_shift=None if icount_shift < 0 else icount_shift,
                    run_test_mask=run_test_mask, use_huge=int(use_huge), profile=profile)
        m["model"] = model_comparison(kernel, m)
        _print_measurement(m)
        _print_model(m["model"])
        if json_out:
            atomic_write_json(json_out, m)

    return barriers_command


barriers_command = _make_command()
