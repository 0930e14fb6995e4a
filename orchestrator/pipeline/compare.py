"""``mmlab compare``: the main job.

Build a baseline and one or more patched kernels, run the same plan on all of them
(interleaved: A B C A B C ...), count the barriers each executes per workload loop with the
QEMU plugin, predict the same with the reference simulator, and judge:

- correctness: test_vmalloc failures, kernel messages new in a patched kernel, W+X check
  failures, crashes and hangs (from every run);
- performance: per metric, median and spread per kernel, the change against the baseline
  with a confidence interval, a significance test and a verdict (orchestrator.judge.stats);
- theory: measured barrier counts per loop against the simulator's prediction for the
  kernel's variant (inferred from the series and the vmlinux barrier census, and checked
  against the variant the comparison declares), and measured timing changes next to the
  cost model's prediction and the published deltas.

Outputs in the run directory: results/ (one JSON per run, written as they arrive),
barriers/<kernel>.json, results.json (the comparison, schema in docs/results-schema.md),
report.html (self-contained) and junit.xml. ``--resume`` continues an interrupted run.

The default (no arguments) is ``comparisons/default.toml``: Linux 6.12 against the demo
lazy-MMU series in two steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from orchestrator import datafiles, progress
from orchestrator.atomic import atomic_write_json
from orchestrator.errors import InputError, MmlabError
from orchestrator.kernel.artifacts import Artifact
from orchestrator.kernel.build import BuildRequest, build_kernel, load_series_spec
from orchestrator.kernel.sources import resolve_tree
from orchestrator.parsers.test_vmalloc import worse_status
from orchestrator.paths import REPO_ROOT
from orchestrator.run.plans import Plan, load_plan_with
from orchestrator.run.results import RunStore, host_info, new_run_id
from orchestrator.run.runner import KernelUnderTest, run_plan

COMPARISONS = REPO_ROOT / "comparisons"
# Tolerances of measured vs predicted counts per loop (|measured - predicted| <= max(abs,
# rel * predicted); see docs/compare.md). Measured is the loop's count minus what the model
# leaves out on purpose (orchestrator/barriers/left_out.toml: interrupts, timekeeping, scheduler,
# RCU, locks, vmstat, slab, page-allocator internals), which is shown as its own rows.
# What remains differs from the model only by work that lands in a window by timing: the
# lazy purge (once per 33 loops at 256 pages: its dsb/tlbi/atomics) and per-cpu counter
# spills; measured at -smp 1 under -icount across 6.12, 6.18, 7.3 and the demo series,
# every quantity was within 0.2 per loop of the model (docs/simulator.md).
TOLERANCE = {
    "dsb.ishst": (0.1, 0.01), "isb": (0.1, 0.01), "dsb.ish": (0.05, 0.1),
    "dmb.ish": (0.2, 0.005), "dmb.ishst": (0.1, 0.01), "tlbi": (0.02, 0.1),
    "atomic": (0.3, 0.005), "atomic.full": (0.2, 0.005),
}
QUANTITY_NOTES = {
    "dsb.ishst": "dsb ishst: pte barriers, table publication, TLB flush preambles",
    "isb": "isb: pte barriers and TLB flushes",
    "dsb.ish": "dsb ish: TLB flushes and table setters",
    "dmb.ish": "dmb ish: ends every fully ordered LL/SC atomic (none with LSE)",
    "dmb.ishst": "dmb ishst: smp_wmb() before a new table, clear_vm_uninitialized_flag()",
    "tlbi": "every TLBI: the lazy purge's flush",
    "atomic": "atomic RMWs: lazy-MMU thread flags, pte clears (xchg), page refcounts, "
              "vmap counters",
    "atomic.full": "the fully ordered ones among them (stlxr / LSE .al)",
}
# Measured per loop and shown without a prediction.
MEASURED_ONLY = {
    "insns": "instructions executed per loop (the plugin's count): the work a loop does, "
             "deterministic under -icount; not predicted by the model",
}
# plan-entry parameters that identify a metric (others, e.g. loop counts, do not)
METRIC_PARAMS = ("nr_pages", "use_huge", "nr_threads", "run_test_mask")


@dataclass
class KernelSpec:
    name: str
    series: str | None = None
    patches: str | None = None      # "1-2", "1,3", "2-" (1-based, inclusive)
    variant: str | None = None      # the simulator variant this kernel is declared to be
    ref: str | None = None          # a git ref (with a git --tree)
    tree: str | None = None         # this kernel's tree (default: the comparison's)
    config: str | None = None       # this kernel's fragment set (default: the comparison's)
    artifact: str | None = None     # a prebuilt kernel (artifact key prefix or directory)
    note: str | None = None         # free text shown in the report


KERNEL_KEYS = {f.name for f in dataclasses.fields(KernelSpec)}
TOP_KEYS = {"name", "description", "tree", "config", "plan", "profile", "baseline", "barriers",
            "kernel"}
BARRIER_KEYS = {"nr_pages", "use_huge_nr_pages", "vm_map_ram_nr_pages", "full_fit", "loops",
                "repeat"}


@dataclass
class ComparisonSpec:
    name: str
    kernels: list[KernelSpec]
    baseline: str
    tree: str | None = None
    config: str = "default"
    plan: str = "default"
    profile: str | None = None
    description: str = ""
    barriers: dict = field(default_factory=lambda: {
        "nr_pages": [1, 16, 256], "use_huge_nr_pages": [16, 256],
        "vm_map_ram_nr_pages": [1, 256], "full_fit": True,
        "loops": [1000, 2000], "repeat": 2})
    path: Path | None = None


def load_comparison(name_or_path: str) -> ComparisonSpec:
    data, path = datafiles.load("comparison", COMPARISONS, name_or_path)
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}",
                         hint=f"known keys: {', '.join(sorted(TOP_KEYS))}")
    if not isinstance(data.get("kernel", []), list) or not all(
            isinstance(k, dict) for k in data.get("kernel", [])):
        raise InputError(f"{path}: `kernel` must be an array of tables ([[kernel]])",
                         hint="write each kernel as a [[kernel]] table")
    bad = set(data.get("barriers", {})) - BARRIER_KEYS
    if bad:
        raise InputError(f"{path}: unknown [barriers] key(s) {', '.join(sorted(bad))}",
                         hint=f"known: {', '.join(sorted(BARRIER_KEYS))}")
    for i, k_ in enumerate(data.get("kernel", []), 1):
        unknown = set(k_) - KERNEL_KEYS
        if unknown:
            raise InputError(f"{path}: [[kernel]] {i} ({k_.get('name', '?')}): unknown key(s) "
                             f"{', '.join(sorted(unknown))}",
                             hint=f"known keys: {', '.join(sorted(KERNEL_KEYS))}")
        if "name" not in k_:
            raise InputError(f"{path}: [[kernel]] {i} has no name", hint="add name = \"...\"")
    kernels = [KernelSpec(**{k: v for k, v in k_.items()}) for k_ in data.get("kernel", [])]
    spec = ComparisonSpec(
        name=data.get("name", path.stem), kernels=kernels,
        baseline=data.get("baseline", kernels[0].name if kernels else ""),
        tree=data.get("tree"), config=data.get("config", "default"),
        plan=data.get("plan", "default"), profile=data.get("profile"),
        description=data.get("description", ""), path=path)
    if "barriers" in data:
        spec.barriers = spec.barriers | data["barriers"]
    _validate(spec)
    return spec


def _validate(spec: ComparisonSpec) -> None:
    from orchestrator.names import check_name

    names = [k.name for k in spec.kernels]
    for n in names:
        check_name(n, "kernel name", f"comparison {spec.name}")
    if len(names) < 2:
        raise InputError(f"comparison {spec.name} needs at least two kernels",
                         hint="add [[kernel]] tables, or pass --series")
    if len(set(names)) != len(names):
        raise InputError(f"comparison {spec.name}: kernel names repeat: {names}",
                         hint="give every kernel its own name")
    if spec.baseline not in names:
        raise InputError(f"comparison {spec.name}: baseline {spec.baseline!r} is not one of "
                         f"{names}", hint="set baseline to a kernel name")


def _select_patches(series, spec: str | None):
    """A sub-series: patches '1-2' / '1,3' / '2-' (1-based) of a loaded Series."""
    if not spec:
        return series
    n = len(series.patches)
    chosen: list[int] = []
    for part in str(spec).split(","):
        m = re.fullmatch(r"\s*(\d+)?\s*(-)?\s*(\d+)?\s*", part)
        if not m or not (m.group(1) or m.group(3)):
            raise InputError(f"bad patch selection {spec!r}", hint="use e.g. 1-2, 1,3 or 2-")
        lo = int(m.group(1) or 1)
        hi = int(m.group(3) or (n if m.group(2) else lo))
        if not 1 <= lo <= hi <= n:
            raise InputError(f"patch selection {spec!r} is outside 1-{n} of {series.name}",
                             hint=f"the series has {n} patches")
        chosen += range(lo, hi + 1)
    patches = tuple(series.patches[i - 1] for i in chosen)
    return dataclasses.replace(series, patches=patches, name=f"{series.name}[{spec}]")


# --- stages -----------------------------------------------------------------------------

def build_all(spec: ComparisonSpec) -> dict[str, Artifact]:
    """Every kernel of the comparison, built (or found, for ``artifact =``) in order.

    Each kernel may name its own ``tree`` and ``config`` (a comparison across releases);
    the fragments are resolved per tree, so version-gated fragments follow each kernel.
    Trees are resolved (fetched, verified) for every kernel before the first build, so a
    bad tree fails in seconds, not after an earlier kernel's build.
    """
    from orchestrator.kernel.artifacts import find

    arts: dict[str, Artifact] = {}
    sources = {k.name: resolve_tree(k.tree or spec.tree, k.ref) for k in spec.kernels
               if not k.artifact}
    for i, k in enumerate(spec.kernels, 1):
        progress.info(f"compare: kernel {i}/{len(spec.kernels)}: {k.name}")
        if k.artifact:
            arts[k.name] = find(k.artifact)
            continue
        source = sources[k.name]
        series = []
        if k.series:
            path = Path(k.series)
            if not path.is_absolute() and (REPO_ROOT / path).exists() and not path.exists():
                path = REPO_ROOT / path
            series = [_select_patches(load_series_spec(str(path), source), k.patches)]
        req = BuildRequest.for_tree(source, k.config or spec.config, series=series,
                                    name=k.name)
        arts[k.name] = build_kernel(req)
    return arts


def infer_variants(spec: ComparisonSpec, arts: dict[str, Artifact]) -> dict[str, dict]:
    """Each kernel's simulator variant: inferred from evidence, checked against the spec."""
    from orchestrator.sim.infer import infer_kernel

    out = {}
    for k in spec.kernels:
        art = arts[k.name]
        inf = infer_kernel(art)
        declared = k.variant
        chosen = declared or inf.variant
        agree = declared is None or _same_variant(declared, inf)
        out[k.name] = {"declared": declared, "inferred": inf.to_json(), "used": chosen,
                       "agrees": agree, "params": inf.params}
        msg = f"compare: {k.name}: simulator variant {chosen}"
        if declared and not agree:
            msg += f" (declared; the evidence says {inf.variant}: see the report)"
        elif not declared:
            msg += " (inferred: " + "; ".join(inf.reasons[:2]) + ")"
        progress.info(msg)
    return out


def _same_variant(declared: str, inf) -> bool:
    from orchestrator.sim import resolve_variant

    try:
        return set(resolve_variant(declared).features) == set(inf.features)
    except (KeyError, ValueError, MmlabError):
        return declared == inf.variant


@dataclass(frozen=True)
class CountedTest:
    """A test_vmalloc test whose loop is counted and predicted."""

    test: str            # the test's name in test_vmalloc
    mask: int            # its run_test_mask bit
    use_huge: int = 0
    pages_key: str | None = None  # [barriers] key with its nr_pages; None: one run (nr_pages=1)

    @property
    def label(self) -> str:
        return self.test + (" use_huge=1" if self.use_huge else "")

    @property
    def slug(self) -> str:
        return self.test + ("-huge" if self.use_huge else "")

    def pages(self, barriers: dict) -> list[int]:
        if self.pages_key is None:
            return [1] if barriers.get("full_fit", True) else []
        return [int(n) for n in barriers.get(self.pages_key, [])]

    def workload(self, nr: int, params: str = "") -> str:
        return (f"test_vmalloc run_test_mask={self.mask} nr_pages={nr}"
                + (" use_huge=1" if self.use_huge else "") + (f" {params}" if params else ""))


COUNTED = (
    CountedTest("fix_size_alloc_test", 1, 0, "nr_pages"),
    CountedTest("fix_size_alloc_test", 1, 1, "use_huge_nr_pages"),
    CountedTest("full_fit_alloc_test", 2, 0, None),
    CountedTest("vm_map_ram_test", 1024, 0, "vm_map_ram_nr_pages"),
)
COUNTED_BY_LABEL = {t.label: t for t in COUNTED}


def counted_workloads(spec: ComparisonSpec) -> list[tuple[CountedTest, int]]:
    """(test, nr_pages) pairs whose barriers are counted and predicted."""
    return [(t, nr) for t in COUNTED for nr in t.pages(spec.barriers)]


def count_barriers(spec: ComparisonSpec, arts: dict[str, Artifact], out: Path,
                   profile: str = "default") -> dict:
    """Per kernel and test: the plugin's per-loop counts (cached in out/barriers/), measured
    on the plan profile's QEMU machine (its machine, GIC, CPU model and memory; TCG and
    -smp 1 for exact counts)."""
    from orchestrator.barriers.counts import kernel_files, measure

    b = spec.barriers
    res: dict = {}
    for k in spec.kernels:
        for t in COUNTED:
            pages = tuple(t.pages(b))
            if not pages:
                continue
            path = out / "barriers" / f"{k.name}-{t.slug}.json"
            if not path.is_file():
                with progress.phase("barriers", f"{k.name}: count per {t.label} loop"):
                    m = measure(kernel_files(str(arts[k.name].path)), nr_pages=pages,
                                loops=tuple(b["loops"]), repeat=int(b["repeat"]),
                                run_test_mask=t.mask, use_huge=t.use_huge, profile=profile)
                atomic_write_json(path, m)
            res.setdefault(k.name, {})[t.label] = json.loads(path.read_text())
    return res


def predictions(variants: dict[str, dict], workloads: list[tuple[CountedTest, int]]) -> dict:
    """Per kernel and "label:nr_pages": the model's per-loop counts for the kernel's variant
    and kernel parameters (atomics, HUGETLB_PAGE, ... from its config)."""
    from orchestrator.sim import predict
    from orchestrator.sim.workloads import with_kernel_params

    out: dict = {}
    for kname, v in variants.items():
        out[kname] = {}
        for t, nr in workloads:
            w = with_kernel_params(t.workload(nr), v.get("params"))
            p = predict(v["used"], w, check=False)
            out[kname][f"{t.label}:{nr}"] = {"per_loop": p.per_loop,
                                             "B": p.barrier_pairs_per_loop, "workload": w}
    return out


def timing_predictions(variants: dict[str, dict], baseline: str, plan: Plan,
                       platform: str = "qemu-tcg") -> dict:
    """The cost model's relative time change per plan workload and candidate kernel."""
    from orchestrator.sim import CostModel, predict
    from orchestrator.sim.workloads import with_kernel_params

    try:
        model = CostModel.load(platform)
    except (KeyError, MmlabError):
        return {}
    out: dict = {}
    for e in plan.entries:
        if not e.workload:
            continue
        try:
            before = predict(variants[baseline]["used"], with_kernel_params(
                e.workload, variants[baseline].get("params")))
        except MmlabError:
            continue
        for kname, v in variants.items():
            if kname == baseline:
                continue
            after = predict(v["used"], with_kernel_params(e.workload, v.get("params")))
            out.setdefault(e.id, {})[kname] = model.relative_change(before, after)
    return out


HARDWARE = ("apple-m2", "ampere-altra")


def hardware_estimates(variants: dict[str, dict], spec: ComparisonSpec) -> list:
    """Each candidate's predicted time change per fix_size_alloc loop (the largest counted
    nr_pages) on the named hardware of the cost model, with its held-out error."""
    from orchestrator.judge import comparison as cm
    from orchestrator.sim import CostModel, predict
    from orchestrator.sim.cost_checks import held_out_error_pp
    from orchestrator.sim.workloads import with_kernel_params

    pages = max([int(n) for n in spec.barriers.get("nr_pages", [])] or [256])
    workload = f"test_vmalloc run_test_mask=1 nr_pages={pages}"
    base = variants.get(spec.baseline)
    if base is None:
        return []
    try:
        err = held_out_error_pp()
        before = predict(base["used"], with_kernel_params(workload, base.get("params")),
                         check=False)
        out = []
        for kname, v in variants.items():
            if kname == spec.baseline:
                continue
            w = with_kernel_params(workload, v.get("params"))
            after = predict(v["used"], w, check=False)
            for platform in HARDWARE:
                change = CostModel.load(platform).relative_change(before, after)
                out.append(cm.HardwareEstimate(
                    kernel=kname, workload=" ".join(
                        [workload] + [f"{a}={b}" for a, b in (v.get("params") or {}).items()]),
                    platform=platform, change=round(change, 4), held_out_error_pp=err,
                    note="cost model from the predicted counts of each kernel's variant and "
                         "config; constants fitted to seed 000's published numbers, error "
                         "measured on seeds 002 and 003 (mmlab simulate --cost-checks)"))
        return out
    except MmlabError as exc:
        progress.info(f"warning: no hardware estimates: {exc}")
        return []


def attribute_changes(variants: dict[str, dict], baseline: str, plan: Plan) -> dict:
    """Per candidate: the modelled upstream changes behind each predicted change."""
    from orchestrator.judge.attribution import attribute

    workloads = {e.id: e.workload for e in plan.entries if e.workload}
    try:
        return attribute(variants, baseline, workloads)
    except MmlabError as exc:
        progress.info(f"warning: no attribution: {exc}")
        return {}


# --- assembling the comparison model ----------------------------------------------------

def _entry_params(run: list[str]) -> dict:
    params = {}
    for a in run[1:]:
        if "=" in a:
            k, v = a.split("=", 1)
            if k in METRIC_PARAMS and k != "run_test_mask":
                params[k] = int(v) if v.isdigit() else v
    return params


def assemble(spec: ComparisonSpec, arts: dict[str, Artifact], plan: Plan, store: RunStore,
             variants: dict, barriers: dict, preds: dict, tpreds: dict, command: str):
    from orchestrator.judge import comparison as cm

    out = store.root
    rel = lambda p: str(Path(p).resolve().relative_to(out.resolve())) if p else None  # noqa: E731
    kernels = []
    for k in spec.kernels:
        kern = cm.Kernel.from_artifact(arts[k.name], id=k.name, name=k.name)
        kern.extra = {"variant": variants.get(k.name)}
        kernels.append(kern)
    comp = cm.Comparison(kernels=kernels, baseline=spec.baseline,
                         title=f"{spec.name}: {spec.description}".strip(": "))
    from orchestrator.kernel.mmconfig import table as config_table

    comp.configs = config_table({k.name: arts[k.name].config_path.read_text()
                                 for k in spec.kernels if arts[k.name].config_path.is_file()})
    comp.plan = cm.Plan(name=plan.name, description=plan.description, repeats=plan.repeats,
                        interleaved=True, target=f"qemu profile {plan.profile}",
                        command=command,
                        text=plan.path.read_text() if plan.path else json.dumps(plan.to_json()))
    entries = {e.id: e for e in plan.entries}
    results = sorted(store.load_all(), key=lambda r: (r["repeat"], r["kernel"], r["entry"]))
    for p in store.unreadable:
        comp.input_warnings.append(f"unreadable result {rel(p)} left out (damaged after it was "
                                   "written?); `--resume` runs it again")
    vm: dict = {}
    seen_logs: set = set()
    for r in results:
        kname, entry = r["kernel"], entries.get(r["entry"])
        if kname not in arts or entry is None:
            continue
        parsed = r.get("parsed") or {}
        during = f"{entry.id} ({' '.join(entry.run)})"
        if r["verdict"] in ("crashed", "timeout", "boot-failed"):
            dm = (parsed.get("dmesg") or {})
            fatal = next((m for m in dm.get("messages", []) if m.get("ends_run")), {})
            comp.crashes.append(cm.Crash(
                kernel=kname, during=during, run=r["repeat"],
                kind={"timeout": "hang"}.get(r["verdict"], fatal.get("kind", "crash")),
                message=r.get("error", ""),
                excerpt="\n".join(fatal.get("lines") or [])[:4000],
                log=rel(r.get("console_log")), signature=fatal.get("signature", "")))
        tv = parsed.get("test_vmalloc") or {}
        for run in tv.get("runs", []):
            for tname, t in run.get("tests", {}).items():
                key = (kname, tname)
                o = vm.setdefault(key, cm.VmallocOutcome(kernel=kname, test=tname, runs=0,
                                                         log=rel(r.get("dmesg"))))
                o.passed += t.get("passed") or 0
                o.failed += t.get("failed") or 0
                o.xfailed += t.get("xfailed") or 0
                o.runs += 1
                o.status = worse_status(o.status, t.get("status"))
                if entry.workload and t.get("avg_usec"):
                    vals = sorted(t["avg_usec"])
                    comp.add_sample(kname, tname, "avg usec", vals[len(vals) // 2],
                                    unit="usec", better="lower",
                                    params=_entry_params(list(entry.run)))
        for w in (tv.get("coverage") or {}).get("warnings", []):
            text = f"{kname}: {entry.id}: {w}"
            if text not in comp.input_warnings:
                comp.input_warnings.append(text)
        kt = parsed.get("ktap")
        if "ktap" in entry.parse and r["verdict"] == "skipped":
            comp.ktap.append(cm.KtapOutcome(kernel=kname, test=f"{entry.id} (no such suite in "
                                            "this kernel)", status="skip",
                                            log=rel(r.get("output"))))
        if isinstance(kt, dict) and kt.get("documents"):
            for test, status in sorted((kt.get("results") or {}).items()):
                comp.ktap.append(cm.KtapOutcome(kernel=kname, test=test, status=status,
                                                log=rel(r.get("dmesg"))))
            if kt.get("status") == "incomplete":
                comp.ktap.append(cm.KtapOutcome(kernel=kname, test=f"{entry.id} (KTAP output)",
                                                status="incomplete", log=rel(r.get("dmesg"))))
        dm = parsed.get("dmesg")
        if isinstance(dm, dict) and "error" not in dm:
            comp.dmesg_logs[kname] = comp.dmesg_logs.get(kname, 0) + 1
            for m in dm.get("messages", []):
                if m.get("expected") is not None:
                    continue  # e.g. align_shift_alloc_test's deliberate vmalloc error
                comp.dmesg.append(cm.DmesgFinding(
                    kernel=kname, signature=m.get("signature", ""), kind=m.get("kind", ""),
                    severity=m.get("severity", ""), title=m.get("title", ""),
                    excerpt="\n".join(m.get("lines") or [])[:4000], log=rel(r.get("dmesg"))))
            for w in dm.get("wx_checks", []) or []:
                comp.wx.append(cm.WXOutcome(
                    kernel=kname, check="W+X check (kernel log)",
                    passed=int(bool(w.get("passed"))), failed=int(not w.get("passed")),
                    wx_pages=int(w.get("wx_pages") or 0), log=rel(r.get("dmesg"))))
        wx_status = _status_field(r.get("output"), "wx")
        if wx_status in ("passed", "failed"):
            comp.wx.append(cm.WXOutcome(
                kernel=kname, check=f"check_wx_pages during {entry.id}",
                passed=int(wx_status == "passed"), failed=int(wx_status == "failed"),
                log=rel(r.get("output"))))
        for name in ("console_log", "dmesg", "output"):
            p = r.get(name)
            if p and p not in seen_logs and Path(p).is_file():
                seen_logs.add(p)
                comp.logs.append(cm.LogLink(kernel=kname, name=Path(p).name, path=rel(p)))
    comp.vmalloc = list(vm.values())
    for kname, per_test in barriers.items():
        for label, m in sorted(per_test.items()):
            t = COUNTED_BY_LABEL.get(label)
            for nr in m.get("per_loop", {}):
                pred = preds.get(kname, {}).get(f"{label}:{nr}", {})
                workload = f"{label} nr_pages={nr}" + (f" (run_test_mask={t.mask})" if t else "")
                runs_nr = [run[nr] for run in m.get("runs", []) if nr in run]
                comp.barriers += barrier_rows(kname, workload, runs_nr,
                                              pred.get("per_loop") if pred else None)
    comp.hardware = hardware_estimates(variants, spec)
    for eid, per_kernel in tpreds.items():
        e = entries[eid]
        for kname, change in per_kernel.items():
            for mt in comp.metrics:
                if mt.params == _entry_params(list(e.run)) and mt.test.startswith(
                        ("fix_size", "vm_map_ram")) and _entry_test(e) == mt.test:
                    comp.timing_predictions.append(cm.TimingPrediction(
                        metric=mt.id, kernel=kname, change=change,
                        note="cost model (qemu-tcg), from predicted counts"))
    return comp


def check_schema(comp) -> None:
    """What a comparison writes is checked against the published schema; a mismatch is a
    warning naming the first problem (the results are kept: a bug here must not lose a run)."""
    from orchestrator.judge.comparison import validate_json

    try:
        validate_json(comp.to_dict())
    except MmlabError as exc:
        progress.info(f"warning: results.json does not match its schema ({exc}); please "
                      "report this as a bug")


def _status_field(output_path: str | None, key: str) -> str | None:
    """A key=value from a guest test's status line ("mmlab-ptdump-stress: ... wx=passed")."""
    if not output_path or not Path(output_path).is_file():
        return None
    for line in Path(output_path).read_text(errors="replace").splitlines():
        if line.startswith("mmlab-ptdump"):
            m = re.search(rf"\b{key}=(\S+)", line)
            if m:
                return m.group(1)
    return None


def measured_split(point: dict) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """A plugin point's per-loop counts as (modelled work, remainder by left-out category)."""
    from orchestrator.barriers.counts import split_remainder

    return split_remainder(point.get("per_function", {}))


def measured_per_loop(point: dict, quantity: str) -> float:
    """A plugin point's per-loop count of ``quantity`` in the work the model describes (the
    left_out.toml categories subtracted)."""
    return round(measured_split(point)[0].get(quantity, 0.0), 4)


def barrier_rows(kname: str, workload: str, runs: list[dict], predicted: dict | None) -> list:
    """The report rows of one kernel and workload: each compared quantity (measured without
    the remainder, against the model), the remainder per quantity with its categories, and
    the measured-only quantities."""
    from orchestrator.barriers.counts import families
    from orchestrator.judge import comparison as cm

    if not runs:
        return []
    splits = [measured_split(r) for r in runs]
    pred = families(predicted) if predicted is not None else None
    rows = []
    for q, (atol, rtol) in TOLERANCE.items():
        samples = [round(sp[0].get(q, 0.0), 4) for sp in splits]
        rows.append(cm.BarrierCount(
            workload=workload, kernel=kname, quantity=q, per="loop",
            predicted=None if pred is None else round(pred.get(q, 0.0), 4),
            measured=sum(samples) / len(samples), samples=samples,
            abs_tolerance=atol, rel_tolerance=rtol, note=QUANTITY_NOTES[q]))
    for q in TOLERANCE:
        cats: dict[str, float] = {}
        for sp in splits:
            for cat, kinds in sp[1].items():
                cats[cat] = cats.get(cat, 0.0) + kinds.get(q, 0.0) / len(splits)
        total = sum(cats.values())
        if abs(total) < 0.005:
            continue
        parts = ", ".join(f"{c} {v:.3g}" for c, v in sorted(cats.items(), key=lambda cv: -cv[1])
                          if abs(v) >= 0.005)
        rows.append(cm.BarrierCount(
            workload=workload, kernel=kname, quantity=f"{q} (left out)", per="loop",
            predicted=None, measured=round(total, 4),
            note=f"work the model leaves out on purpose (left_out.toml): {parts}"))
    for q, note in MEASURED_ONLY.items():
        samples = [float(r.get("per_kind", {})[q]) for r in runs if q in r.get("per_kind", {})]
        if samples:
            rows.append(cm.BarrierCount(
                workload=workload, kernel=kname, quantity=q, per="loop", predicted=None,
                measured=round(sum(samples) / len(samples), 3), samples=samples, note=note))
    return rows


def _entry_test(entry) -> str:
    mask = next((a.split("=", 1)[1] for a in entry.run if a.startswith("run_test_mask=")), "")
    return {"1": "fix_size_alloc_test", "1024": "vm_map_ram_test"}.get(mask, "")


# --- the command --------------------------------------------------------------------------

def run_compare(spec: ComparisonSpec, *, out: Path, resume: bool, repeats: int | None,
                profile: str | None, entries: list[str] | None, barriers_on: bool,
                command: str, install_missing: bool = False) -> Path:
    from orchestrator.hosttools import ensure

    # Every host tool the stages need, checked (or installed) before the first build.
    ensure({"build", "image", "boot"} | ({"plugin"} if barriers_on else set()),
           install=install_missing, why="mmlab compare")
    plan = load_plan_with(spec.plan, entries=entries, repeats=repeats,
                          profile=profile or spec.profile)
    from orchestrator.targets.qemu import load_profile

    load_profile(plan.profile)  # a bad --profile fails before any build
    t0 = time.monotonic()
    arts = build_all(spec)
    t_build = time.monotonic() - t0
    store = RunStore(out)
    fingerprint = hashlib.sha256(json.dumps(
        [[k.name, arts[k.name].key] for k in spec.kernels] + [plan.to_json()],
        sort_keys=True).encode()).hexdigest()
    store.start({"kind": "compare", "fingerprint": fingerprint, "comparison": spec.name,
                 "plan": plan.to_json(), "host": host_info(), "command": command,
                 "kernels": {n: a.metadata for n, a in arts.items()},
                 "created": time.time()}, resume=resume)
    variants = infer_variants(spec, arts)
    atomic_write_json(out / "variants.json", variants)
    kuts = [KernelUnderTest(k.name, arts[k.name]) for k in spec.kernels]
    from orchestrator.targets.qemu import QemuTarget

    t1 = time.monotonic()
    run_plan(kuts, plan, store, lambda: QemuTarget(plan.profile))
    barriers = count_barriers(spec, arts, out, plan.profile) if barriers_on else {}
    t_runs = time.monotonic() - t1
    preds = predictions(variants, counted_workloads(spec))
    tpreds = timing_predictions(variants, spec.baseline, plan)
    atomic_write_json(out / "predictions.json", {"barriers": preds, "timing": tpreds})
    comp = assemble(spec, arts, plan, store, variants, barriers, preds, tpreds, command)
    comp.attributions = attribute_changes(variants, spec.baseline, plan)
    comp.plan.extra = {"durations_s": {"builds": round(t_build, 1), "runs": round(t_runs, 1)}}
    machines = {json.dumps(m.get("machine"), sort_keys=True) for per in barriers.values()
                for m in per.values() if m.get("machine")}
    if machines:
        comp.plan.extra["barrier_machine"] = [json.loads(x) for x in sorted(machines)]
    comp.analyze()
    comp.save(out / "results.json")
    check_schema(comp)
    from orchestrator.report.html import write_report
    from orchestrator.report.junit import write_junit

    report = write_report(comp, out / "report.html", results_dir=out)
    write_junit(comp, out / "junit.xml")
    return report


def _compare_on_lab(spec: ComparisonSpec, inventory: Path, boards: str | None,
                    fragments: str | None, *, out: Path, resume: bool, repeats: int | None,
                    entries: str | None, retries: int, exit_code: bool,
                    install_missing: bool, command: str) -> None:
    """``mmlab compare --lab``: the comparison's kernels on SSH boards, a report per board."""
    from orchestrator.hosttools import ensure
    from orchestrator.lab.runtime import compare_on_lab, load_inventory, summary_lines

    inv = load_inventory(inventory)          # a bad inventory fails before any build
    selected = inv.select([b for b in boards.split(",") if b] if boards else None, {})
    ensure({"build"}, install=install_missing, why="mmlab compare --lab")
    spec.config = fragments or "board"
    plan = load_plan_with(spec.plan, entries=entries, repeats=repeats)
    summary = compare_on_lab(spec, inv, selected, plan, out, command, retries=retries,
                             resume=resume)
    for name, verdict in sorted(summary["verdicts"].items()):
        _echo_verdict(verdict, title=f"{name}: ")
        click.echo(f"  report:  {summary['reports'][name]}")
    for line in summary_lines(summary):
        click.echo(line)
    click.echo(f"results: {out}  summary: {out / 'summary.json'}")
    if summary["failed"] or summary["busy"]:
        raise SystemExit(1)         # some board gave no comparison: never a silent pass
    if exit_code and any(v.get("status") == "fail" for v in summary["verdicts"].values()):
        raise SystemExit(1)


def _echo_verdict(verdict: dict, title: str = "") -> None:
    """The verdict as the terminal shows it: headline, a line per kernel, the reasons."""
    click.echo(title + verdict.get("headline", "verdict: ?"))
    for k in verdict.get("kernels", []):
        click.echo(f"  {k.get('line', '')}")
    for line in verdict.get("reasons", [])[:10]:
        click.echo(f"  - {line}")


def _compare_command():
    @click.command("compare")
    @click.argument("comparison", required=False, default="default")
    @click.option("--tree", default=None, help="Kernel tree for a two-kernel comparison "
                  "(with --series or --refs): debian:6.12, a directory, tarball or git repo.")
    @click.option("--series", "series_spec", default=None, help="Compare the tree against "
                  "tree + this series (any form `mmlab build --series` takes).")
    @click.option("--refs", nargs=2, default=None, metavar="BASE PATCHED",
                  help="Compare two git refs of --tree.")
    @click.option("--config", "fragments", default=None, help="Fragment set or list.")
    @click.option("--plan", "plan_name", default=None, help="Plan name or path.")
    @click.option("--profile", default=None, help="QEMU profile.")
    @click.option("--repeats", type=int, default=None, help="Runs per kernel (>= 3).")
    @click.option("--entries", default=None, help="Only these plan entries (comma-separated).")
    @click.option("--no-barriers", is_flag=True, help="Skip the barrier-counting runs.")
    @click.option("--out", type=click.Path(path_type=Path), default=None,
                  help="Run directory (default ./mmlab-results/compare-<time>).")
    @click.option("--resume", is_flag=True, help="Continue the interrupted run in --out.")
    @click.option("--lab", "inventory", type=click.Path(path_type=Path), default=None,
                  help="Run on the SSH boards of this inventory (see `mmlab lab`) instead "
                  "of QEMU: one report per board; kernels built with the `board` config set "
                  "unless --config; no barrier counts (they need the QEMU plugin).")
    @click.option("--boards", default=None,
                  help="With --lab: only these boards (comma-separated).")
    @click.option("--retries", type=int, default=1, show_default=True,
                  help="With --lab: retries of a board that fails before it is marked failed.")
    @click.option("--exit-code", is_flag=True, help="Exit 1 when the verdict is FAIL (for CI).")
    @click.option("--install-missing/--no-install-missing", default=True, show_default=True,
                  help="Install missing host tools (apt-get as root or with sudo -n; the QEMU "
                  "plugin header) before the builds, instead of stopping with the list.")
    def compare_command(comparison, tree, series_spec, refs, fragments, plan_name, profile,
                        repeats, entries, no_barriers, out, resume, inventory, boards,
                        retries, exit_code, install_missing):
        """Build, boot, test and judge kernels: the default compares Linux 6.12 with the
        demo lazy-MMU series (comparisons/default.toml)."""
        import sys

        if series_spec or refs:
            from orchestrator.kernel.releases import report as report_notes
            from orchestrator.kernel.releases import tree_for_series

            tree, notes = tree_for_series(series_spec, tree)
            report_notes(notes)
            spec = ComparisonSpec(name="cli", baseline="baseline", tree=tree, kernels=[])
            if refs:
                spec.kernels = [KernelSpec("baseline", ref=refs[0]),
                                KernelSpec("patched", ref=refs[1])]
            else:
                spec.kernels = [KernelSpec("baseline"),
                                KernelSpec("patched", series=series_spec)]
            spec.description = f"{tree or 'debian:6.12'}: " + (
                f"{refs[0]} vs {refs[1]}" if refs else f"+ {series_spec}")
        else:
            spec = load_comparison(comparison)
            if tree:
                spec.tree = tree
        if fragments:
            spec.config = fragments
        if plan_name:
            spec.plan = plan_name
        if repeats is not None and repeats < 3:
            raise InputError("--repeats must be at least 3 for statistics",
                             hint="use 3 or more (the default plan uses 5)")
        if boards and inventory is None:
            raise InputError("--boards needs --lab", hint="add --lab INVENTORY.toml")
        if inventory is not None and profile:
            raise InputError("--profile names a QEMU machine; a --lab run uses the boards",
                             hint="drop --profile, or drop --lab to run in QEMU")
        if out is None:
            if resume:
                raise click.UsageError("--resume needs --out (the directory of the run)")
            out = Path("mmlab-results") / new_run_id("lab-compare" if inventory else "compare")
        if inventory is not None:
            _compare_on_lab(spec, inventory, boards, fragments, out=out, resume=resume,
                            repeats=repeats, entries=entries, retries=retries,
                            exit_code=exit_code, install_missing=install_missing,
                            command=" ".join(sys.argv))
            return
        report = run_compare(spec, out=out, resume=resume, repeats=repeats, profile=profile,
                             entries=[e for e in entries.split(",") if e] if entries else None,
                             barriers_on=not no_barriers, command=" ".join(sys.argv),
                             install_missing=install_missing)
        data = json.loads((out / "results.json").read_text())
        verdict = (data.get("analysis") or {}).get("verdict") or {}
        _echo_verdict(verdict)
        click.echo(f"report:  {report}")
        click.echo(f"results: {out / 'results.json'}  junit: {out / 'junit.xml'}")
        if exit_code and verdict.get("status") == "fail":
            raise SystemExit(1)

    return compare_command


compare_command = _compare_command()
