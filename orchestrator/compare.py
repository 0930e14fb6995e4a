"""``mmlab compare``: the main job.

Build a baseline and one or more patched kernels, run the same plan on all of them
(interleaved: A B C A B C ...), count the barriers each executes per workload loop with the
QEMU plugin, predict the same with the reference simulator, and judge:

- correctness: test_vmalloc failures, kernel messages new in a patched kernel, W+X check
  failures, crashes and hangs (from every run);
- performance: per metric, median and spread per kernel, the change against the baseline
  with a confidence interval, a significance test and a verdict (orchestrator.stats);
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
from orchestrator.artifacts import Artifact
from orchestrator.atomic import atomic_write_json
from orchestrator.barrier_counts import INTERRUPT_FUNCTIONS
from orchestrator.build import BuildRequest, build_kernel, load_series_spec
from orchestrator.errors import InputError, MmlabError
from orchestrator.parsers.test_vmalloc import worse_status
from orchestrator.paths import REPO_ROOT
from orchestrator.plans import Plan, load_plan_with
from orchestrator.results import RunStore, host_info, new_run_id
from orchestrator.runner import KernelUnderTest, run_plan
from orchestrator.sources import resolve_tree

COMPARISONS = REPO_ROOT / "comparisons"
# Tolerances of measured vs predicted barrier counts per loop (see docs/compare.md):
# the pte-write barriers are exact; ISB also counts timer-interrupt ISBs (~2 per loop at
# 256 pages under -icount), which the model leaves out.
# TLBI: the lazy vmap purge's tlbi vmalle1is, once per purge cycle (1/32 per 256-page loop).
TOLERANCE = {"dsb.ishst": (0.15, 0.01), "isb": (0.3, 0.02), "tlbi": (0.02, 0.1)}
# Measured per loop and shown, without a prediction yet (issue #14): the model does not
# describe page-refcount and lock atomics, the DMBs that LL/SC atomics end with, or the
# instructions a loop executes.
MEASURED_ONLY = {
    "dmb": "all DMBs; with LL/SC atomics (ARM64_USE_LSE_ATOMICS off) each fully ordered "
           "atomic ends in dmb ish: not modelled yet",
    "atomic": "all atomic RMWs (LSE ops, CAS, store-exclusives): page refcounts, locks and "
              "the lazy-MMU flags; the model describes only the flags: not compared",
    "insns": "instructions executed per loop (the plugin's count): the cost model's input "
             "under emulation, not predicted yet",
}
# interrupt work the model leaves out: one pattern, shared with `mmlab barriers`
TIMER_FUNCTIONS = re.compile(INTERRUPT_FUNCTIONS)
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
BARRIER_KEYS = {"nr_pages", "vm_map_ram_nr_pages", "loops", "repeat"}


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
    barriers: dict = field(default_factory=lambda: {"nr_pages": [1, 16, 256],
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
    from orchestrator.artifacts import find

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
    from orchestrator.elfinspect import barrier_census
    from orchestrator.sim import infer_variant

    out = {}
    for k in spec.kernels:
        art = arts[k.name]
        patches = [{"subject": p["subject"]} for s in art.metadata.get("series", [])
                   for p in s.get("patches", [])]
        census = barrier_census(art.vmlinux)
        inf = infer_variant({"base": art.release, "patches": patches, "census": census})
        declared = k.variant
        chosen = declared or inf.variant
        agree = declared is None or _same_variant(declared, inf)
        out[k.name] = {"declared": declared, "inferred": inf.to_json(), "used": chosen,
                       "agrees": agree}
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


# test_vmalloc tests whose loops are counted, by run_test_mask; both take nr_pages
COUNTED_TESTS = {1: "fix_size_alloc_test", 1024: "vm_map_ram_test"}


def counted_workloads(spec: ComparisonSpec) -> list[tuple[int, int]]:
    """(run_test_mask, nr_pages) pairs whose barriers are counted and predicted."""
    b = spec.barriers
    pairs = [(1, int(n)) for n in b["nr_pages"]]
    pairs += [(1024, int(n)) for n in b.get("vm_map_ram_nr_pages", [1])]
    return pairs


def count_barriers(spec: ComparisonSpec, arts: dict[str, Artifact], out: Path) -> dict:
    """Per kernel and test: the plugin's per-loop barrier counts (cached in out/barriers/)."""
    from orchestrator.barrier_counts import kernel_files, measure

    b = spec.barriers
    res: dict = {}
    for k in spec.kernels:
        for mask, test in COUNTED_TESTS.items():
            pages = tuple(n for m, n in counted_workloads(spec) if m == mask)
            if not pages:
                continue
            path = out / "barriers" / f"{k.name}-{test}.json"
            if not path.is_file():
                with progress.phase("barriers", f"{k.name}: count per {test} loop"):
                    m = measure(kernel_files(str(arts[k.name].path)), nr_pages=pages,
                                loops=tuple(b["loops"]), repeat=int(b["repeat"]),
                                run_test_mask=mask)
                atomic_write_json(path, m)
            res.setdefault(k.name, {})[mask] = json.loads(path.read_text())
    return res


def predictions(variants: dict[str, dict], workloads: list[tuple[int, int]]) -> dict:
    from orchestrator.sim import predict

    out: dict = {}
    for kname, v in variants.items():
        out[kname] = {}
        for mask, nr in workloads:
            p = predict(v["used"], f"test_vmalloc run_test_mask={mask} nr_pages={nr}")
            out[kname][f"{mask}:{nr}"] = {"per_loop": p.per_loop,
                                          "B": p.barrier_pairs_per_loop}
    return out


def timing_predictions(variants: dict[str, dict], baseline: str, plan: Plan,
                       platform: str = "qemu-tcg") -> dict:
    """The cost model's relative time change per plan workload and candidate kernel."""
    from orchestrator.sim import CostModel, predict

    try:
        model = CostModel.load(platform)
    except (KeyError, MmlabError):
        return {}
    out: dict = {}
    for e in plan.entries:
        if not e.workload:
            continue
        try:
            before = predict(variants[baseline]["used"], e.workload)
        except MmlabError:
            continue
        for kname, v in variants.items():
            if kname == baseline:
                continue
            after = predict(v["used"], e.workload)
            out.setdefault(e.id, {})[kname] = model.relative_change(before, after)
    return out


def attribute_changes(variants: dict[str, dict], baseline: str, plan: Plan) -> dict:
    """Per candidate: the modelled upstream changes behind each predicted change."""
    from orchestrator.attribution import attribute

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
    from orchestrator import comparison as cm

    out = store.root
    rel = lambda p: str(Path(p).resolve().relative_to(out.resolve())) if p else None  # noqa: E731
    kernels = []
    for k in spec.kernels:
        kern = cm.Kernel.from_artifact(arts[k.name], id=k.name, name=k.name)
        kern.extra = {"variant": variants.get(k.name)}
        kernels.append(kern)
    comp = cm.Comparison(kernels=kernels, baseline=spec.baseline,
                         title=f"{spec.name}: {spec.description}".strip(": "))
    from orchestrator.mmconfig import table as config_table

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
    for kname, per_mask in barriers.items():
        for mask, m in sorted(per_mask.items()):
            for nr in m.get("per_loop", {}):
                pred = preds.get(kname, {}).get(f"{mask}:{nr}", {}).get("per_loop", {})
                workload = (f"{COUNTED_TESTS[int(mask)]} nr_pages={nr} "
                            f"(run_test_mask={mask})")
                runs_nr = [run[nr] for run in m.get("runs", []) if nr in run]
                for q, (atol, rtol) in TOLERANCE.items():
                    samples = [measured_per_loop(r, q) for r in runs_nr]
                    predicted = (sum(v for k, v in pred.items() if k.startswith("tlbi."))
                                 if q == "tlbi" else pred.get(q, 0.0))
                    note = {"dsb.ishst": "all dsb ishst executed, per loop: exact",
                            "isb": "interrupt ISBs (timer: arch_timer_*, arch_counter_*; "
                                   "GIC entry: gic_*) subtracted: the model has no interrupts; "
                                   f"{_interrupt_isb(runs_nr):.3f} per loop",
                            "tlbi": "every TLBI, per loop: the lazy purge's tlbi vmalle1is"}[q]
                    comp.barriers.append(cm.BarrierCount(
                        workload=workload, kernel=kname, quantity=q, per="loop",
                        predicted=predicted,
                        measured=sum(samples) / len(samples) if samples else None,
                        samples=samples, abs_tolerance=atol, rel_tolerance=rtol, note=note))
                for q, note in MEASURED_ONLY.items():
                    samples = [float(r.get("per_kind", {})[q]) for r in runs_nr
                               if q in r.get("per_kind", {})]
                    if samples:
                        comp.barriers.append(cm.BarrierCount(
                            workload=workload, kernel=kname, quantity=q, per="loop",
                            predicted=None, measured=round(sum(samples) / len(samples), 3),
                            samples=samples, note=note))
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
    from orchestrator.comparison import validate_json

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


def _interrupt_isb(runs: list[dict]) -> float:
    """Mean per-loop ISBs of the interrupt functions over runs (the remainder left out)."""
    vals = [sum(float(kinds.get("isb", 0.0)) for fn, kinds in r.get("per_function", {}).items()
                if TIMER_FUNCTIONS.match(fn)) for r in runs]
    return sum(vals) / len(vals) if vals else 0.0


def measured_per_loop(point: dict, quantity: str) -> float:
    """A plugin point's per-loop count of ``quantity``; for ISB without timer interrupts."""
    total = float(point.get("per_kind", {}).get(quantity, 0.0))
    if quantity == "isb":
        total -= sum(float(kinds.get("isb", 0.0))
                     for fn, kinds in point.get("per_function", {}).items()
                     if TIMER_FUNCTIONS.match(fn))
    return round(total, 4)


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
    barriers = count_barriers(spec, arts, out) if barriers_on else {}
    t_runs = time.monotonic() - t1
    preds = predictions(variants, counted_workloads(spec))
    tpreds = timing_predictions(variants, spec.baseline, plan)
    atomic_write_json(out / "predictions.json", {"barriers": preds, "timing": tpreds})
    comp = assemble(spec, arts, plan, store, variants, barriers, preds, tpreds, command)
    comp.attributions = attribute_changes(variants, spec.baseline, plan)
    comp.plan.extra = {"durations_s": {"builds": round(t_build, 1), "runs": round(t_runs, 1)}}
    comp.analyze()
    comp.save(out / "results.json")
    check_schema(comp)
    from orchestrator.junit import write_junit
    from orchestrator.report import write_report

    report = write_report(comp, out / "report.html", results_dir=out)
    write_junit(comp, out / "junit.xml")
    return report


def _compare_on_lab(spec: ComparisonSpec, inventory: Path, boards: str | None,
                    fragments: str | None, *, out: Path, resume: bool, repeats: int | None,
                    entries: str | None, retries: int, exit_code: bool,
                    install_missing: bool, command: str) -> None:
    """``mmlab compare --lab``: the comparison's kernels on SSH boards, a report per board."""
    from orchestrator.hosttools import ensure
    from orchestrator.lab import compare_on_lab, load_inventory, summary_lines

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
            from orchestrator.releases import report as report_notes
            from orchestrator.releases import tree_for_series

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
