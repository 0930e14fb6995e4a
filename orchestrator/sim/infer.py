"""infer_variant(evidence): which modelled variant a kernel is, with the reasoning shown.

Evidence (any combination):

- ``base``: the kernel release of the tree ("6.12.117", "v6.16"): picks the starting
  variant (the newest shipped upstream variant not newer than it);
- ``patches``: applied patches: subjects (str) or dicts with ``subject`` and ``files``;
  subjects are matched against each feature's ``subjects`` in features.toml;
- ``code``: what the built kernel's machine code says (orchestrator/kernel/kernelcode.py
  ``read_kernel_code``): where the vmalloc pte loop's barrier sits and whether it is queued,
  the lazy-MMU hooks, the ordering of the hook and bookkeeping atomics, symbols. It decides
  every feature it speaks to; the release only fills in the rest;
- ``census``: a barrier census of vmlinux (orchestrator/kernel/elfinspect.py): ``{function:
  FunctionCensus}`` with ``.counts`` ({"dsb.ishst": n, ...}), ``.dsb_in_loop`` and
  ``.dsb_after_loop``, or plain dicts of that shape (the older, weaker evidence: used for
  what ``code`` does not decide).

Nothing is assumed silently: every feature decision carries the evidence behind it, and
features no evidence speaks to are listed as ``assumed`` (kept from the base variant).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from orchestrator.sim.features import _variant_table, features, resolve_variant

# vmalloc pte-loop functions; compilers inline some into their callers, so any may carry it
VMAP_LOOP_FUNCS = (
    "vmap_pages_pte_range",
    "vmap_small_pages_range_noflush",
    "__vmap_pages_range_noflush",
    "vmap_pages_range_noflush",
    "vmap_range_noflush",
    "vmap_pte_range",
    "vmap_pages_range",
)
UPSTREAM = ["v6.9", "v6.12", "v6.16", "v6.18", "v7.0", "v7.3"]


@dataclass
class Decision:
    feature: str
    present: bool
    source: str  # base / patch / census / assumed
    why: str


@dataclass
class Inference:
    variant: str  # a variant name, or a composed spec "base+feat-feat"
    features: frozenset[str]
    base: str
    decisions: list[Decision] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    matched_name: str | None = None  # a named variant with exactly this feature set
    # kernel parameters for predict() read from the config (atomics, hugetlb_page, ...)
    params: dict = field(default_factory=dict)
    param_evidence: dict = field(default_factory=dict)
    code: dict | None = None  # kernelcode facts, when the code was read

    @property
    def assumed(self) -> list[str]:
        return [d.feature for d in self.decisions if d.source == "assumed"]

    @property
    def reasons(self) -> list[str]:
        return [
            f"{d.feature}: {'yes' if d.present else 'no'} ({d.source}: {d.why})"
            for d in self.decisions
        ]

    def to_json(self) -> dict:
        return {
            "variant": self.variant,
            "matched_name": self.matched_name,
            "base": self.base,
            "features": sorted(self.features),
            "decisions": [d.__dict__ for d in self.decisions],
            "assumed": self.assumed,
            "conflicts": self.conflicts,
            "params": self.params,
            "param_evidence": self.param_evidence,
            "code": self.code,
        }

    def __str__(self) -> str:
        lines = [f"variant: {self.variant} (base {self.base})"]
        lines += ["  " + r for r in self.reasons]
        lines += ["  CONFLICT: " + c for c in self.conflicts]
        if self.params:
            lines.append("  kernel parameters: " + ", ".join(
                f"{k}={v} ({self.param_evidence.get(k, '')})" for k, v in self.params.items()))
        return "\n".join(lines)

    def workload_params(self) -> str:
        """The kernel parameters as workload words for predict() ("atomics=llsc ...")."""
        return " ".join(f"{k}={v}" for k, v in self.params.items())


def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:2])


def _base_for(release: str | None) -> tuple[str, str]:
    if not release:
        return "v6.12", "no base release given: assumed Debian's default 6.12 tree"
    rel = _vkey(release)
    if not rel:
        return "v6.12", f"unparseable release {release!r}: assumed 6.12"
    best = UPSTREAM[0]
    for v in UPSTREAM:
        if _vkey(v) <= rel:
            best = v
    return best, f"release {release} -> newest modelled upstream variant not newer: {best}"


def _get(obj, name, default=None):
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _decide_from_code(code, feats: set[str], decided: dict[str, Decision],
                      conflicts: list[str]) -> None:
    """Features the machine code shows (kernelcode.KernelCode facts)."""

    def decide(fid: str, present: bool, why: str) -> None:
        prev = decided.get(fid)
        if prev is not None and prev.present != present:
            conflicts.append(f"{fid}: {prev.source} says {'yes' if prev.present else 'no'}, "
                             f"the code says {'yes' if present else 'no'} ({why})")
            return
        (feats.add if present else feats.discard)(fid)
        decided[fid] = Decision(fid, present, "code", why)

    f = code.facts
    pte, hooks = f.get("pte_barriers"), f.get("lazy_hooks")
    if pte is not None and pte.value is not None:
        if pte.value == "queued":
            decide("arm64_lazy_mmu_batching", True, pte.evidence)
            decide("pte_barriers_unbatched", False, pte.evidence)
        elif hooks is not None and hooks.value:
            why = f"{pte.evidence}; {hooks.evidence}"
            decide("arm64_lazy_mmu_batching", True, "lazy-MMU hooks present: " + why)
            decide("pte_barriers_unbatched", True, "barriers emitted at once: " + why)
        else:
            decide("arm64_lazy_mmu_batching", False, pte.evidence)
            decide("pte_barriers_unbatched", False, pte.evidence)
    elif pte is not None:
        conflicts.append(f"the code does not show the vmalloc pte barrier ({pte.evidence}): "
                         "batching decided by other evidence")
    batching = "arm64_lazy_mmu_batching" in feats
    vc = f.get("vmap_calls_hook")
    if vc is not None and batching:
        decide("vmalloc_lazy_mmu", bool(vc.value), vc.evidence)
    gen = f.get("generic_nesting")
    if gen is not None and batching:
        decide("lazy_mmu_generic_nesting", bool(gen.value), gen.evidence)
    ent = f.get("enter_atomic")
    if ent is not None and batching and "lazy_mmu_generic_nesting" not in feats:
        if ent.value == "full":
            decide("lazy_mmu_full_nesting_arm64", True,
                   ent.evidence + ": test_and_set_thread_flag (seed 001 nesting)")
            decide("lazy_mmu_depth_counter", False, ent.evidence)
        else:
            full = "lazy_mmu_full_nesting_arm64" in feats
            decide("lazy_mmu_depth_counter", full, ent.evidence + (
                ": set_thread_flag only, so nesting is a depth count" if full else
                ": set_thread_flag (no nesting state in the flag)"))
    lo = f.get("lazy_nr_order")
    if lo is not None:
        decide("vmap_lazy_nr_relaxed", lo.value == "relaxed", lo.evidence)
    nv = f.get("nr_vmalloc_pages")
    if nv is not None:
        decide("vmalloc_stat_vmstat", not nv.value, nv.evidence)
    sm = f.get("set_memory_pagewalk")
    if sm is not None:
        decide("set_memory_pagewalk", bool(sm.value), sm.evidence)


def infer_variant(evidence: dict) -> Inference:
    base, base_why = _base_for(evidence.get("base"))
    feats = set(resolve_variant(base).features)
    decided: dict[str, Decision] = {}
    conflicts: list[str] = []
    all_feats = features()

    # 1. patches: subject matches
    for p in evidence.get("patches", []) or []:
        subject = p if isinstance(p, str) else (p.get("subject") or "")
        files = () if isinstance(p, str) else tuple(p.get("files", ()))
        hit = None
        for fid, f in all_feats.items():
            if f.fault:
                continue
            if any(s and s.lower() in subject.lower() for s in f.removed_by):
                feats.discard(fid)
                decided[fid] = Decision(fid, False, "patch", f"applied patch {subject!r} "
                                        "takes it out")
                hit = "removed"
                break
            if any(s and s.lower() in subject.lower() for s in f.subjects):
                hit = fid
                break
        if hit == "removed":
            continue
        if hit:
            feats.add(hit)
            decided[hit] = Decision(hit, True, "patch", f"applied patch {subject!r}")
        elif files:
            touched = [fid for fid, f in all_feats.items() if set(files) & set(f.files)]
            if touched:
                conflicts.append(
                    f"patch {subject!r} touches files of {', '.join(touched)} "
                    "but matches no known subject: its effect is not modelled"
                )

    # 2. the kernel's code
    code = evidence.get("code")
    if code is not None:
        _decide_from_code(code, feats, decided, conflicts)

    # 3. census: where the vmalloc pte loop's DSB sits (when the code did not decide it)
    census = evidence.get("census") or {}
    code_decided = getattr(decided.get("arm64_lazy_mmu_batching"), "source", "") == "code"
    if census and not code_decided:
        loop_funcs = [(n, census[n]) for n in VMAP_LOOP_FUNCS if n in census]
        in_loop = sum(int(_get(c, "dsb_in_loop", 0) or 0) for _, c in loop_funcs)
        after = sum(int(_get(c, "dsb_after_loop", 0) or 0) for _, c in loop_funcs)
        names = ", ".join(n for n, _ in loop_funcs) or "none of " + ", ".join(VMAP_LOOP_FUNCS)
        if loop_funcs and (in_loop or after):
            batched = in_loop == 0 and after > 0
            why = f"census of {names}: dsb in pte loop={in_loop}, after loop={after}"
            for fid in ("arm64_lazy_mmu_batching", "vmalloc_lazy_mmu"):
                prev = decided.get(fid)
                if prev and prev.present != batched:
                    conflicts.append(
                        f"{fid}: {prev.source} says {prev.present}, census says {batched} ({why})"
                    )
                    continue
                (feats.add if batched else feats.discard)(fid)
                decided[fid] = Decision(fid, batched, "census", why)
        else:
            conflicts.append(
                f"census has no DSB data for the vmalloc pte loop ({names}); "
                "batching decided by other evidence"
            )
        if "pageattr_pte_entry" in census and "set_memory_pagewalk" not in decided:
            feats.add("set_memory_pagewalk")
            decided["set_memory_pagewalk"] = Decision(
                "set_memory_pagewalk",
                True,
                "census",
                "vmlinux has pageattr_pte_entry (pagewalk-based set_memory)",
            )
        elif "change_page_range" in census and "set_memory_pagewalk" not in decided:
            feats.discard("set_memory_pagewalk")
            decided["set_memory_pagewalk"] = Decision(
                "set_memory_pagewalk",
                False,
                "census",
                "vmlinux has change_page_range (apply_to_page_range-based set_memory)",
            )

    if (
        "arm64_lazy_mmu_batching" in feats
        and "lazy_mmu_no_batch_in_irq" not in decided
        and "lazy_mmu_no_batch_in_irq" not in feats
    ):
        feats.add("lazy_mmu_no_batch_in_irq")
        decided["lazy_mmu_no_batch_in_irq"] = Decision(
            "lazy_mmu_no_batch_in_irq",
            True,
            "assumed",
            "batching is present and every released kernel and demo series with it also "
            "disables batching in interrupt context; a barrier census cannot show this",
        )

    # 4. everything else: from the base variant, said out loud
    base_feats = resolve_variant(base).features
    decisions = []
    for fid, f in all_feats.items():
        if f.fault:
            continue
        if fid in decided:
            decisions.append(decided[fid])
        else:
            decisions.append(
                Decision(
                    fid, fid in base_feats, "assumed", f"no evidence; kept from {base} ({base_why})"
                )
            )
    fs = frozenset(feats)
    matched = None
    for name in _variant_table():
        if resolve_variant(name).features == fs:
            matched = name
            break
    if matched:
        spec = matched
    else:
        spec = (
            base
            + "".join(f"+{f}" for f in sorted(fs - base_feats))
            + "".join(f"-{f}" for f in sorted(base_feats - fs))
        )
    inf = Inference(spec, fs, base, decisions, conflicts, matched)
    if code is not None:
        inf.params, inf.param_evidence = dict(code.params), dict(code.param_evidence)
        inf.code = code.to_json()
    return inf


def infer_kernel(kernel: str | object) -> Inference:
    """The variant of a built kernel: an Artifact, an artifact key prefix or directory, or a
    kernel build directory (vmlinux + .config). Evidence: the release, the applied series'
    subjects (artifact metadata), and the machine code and config (kernelcode)."""
    from pathlib import Path

    from orchestrator.errors import InputError
    from orchestrator.kernel.artifacts import Artifact, find
    from orchestrator.kernel.kconfig import parse_config_text
    from orchestrator.kernel.kernelcode import read_kernel_code

    if isinstance(kernel, Artifact):
        art = kernel
    else:
        p = Path(str(kernel))
        if p.is_dir() and (p / "vmlinux").is_file() and not (p / "metadata.json").is_file():
            cfg = p / ".config"
            if not cfg.is_file():
                raise InputError(f"{p} has a vmlinux but no .config",
                                 hint="pass the kernel's build directory (O=...)")
            text = cfg.read_text()
            m = re.search(r"^# Linux/\S+ (\S+) Kernel Configuration", text, re.M)
            code = read_kernel_code(p / "vmlinux", parse_config_text(text, keep_unset=True))
            return infer_variant({"base": m.group(1) if m else None, "code": code})
        art = find(str(kernel))
    patches = [{"subject": q["subject"]} for s in art.metadata.get("series", [])
               for q in s.get("patches", [])]
    code = read_kernel_code(art.vmlinux, art.config(keep_unset=True))
    return infer_variant({"base": art.release, "patches": patches, "code": code})
