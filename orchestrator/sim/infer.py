"""infer_variant(evidence): which modelled variant a kernel is, with the reasoning shown.

Evidence (any combination):

- ``base``: the kernel release of the tree ("6.12.117", "v6.16"): picks the starting
  variant (the newest shipped upstream variant not newer than it);
- ``patches``: applied patches: subjects (str) or dicts with ``subject`` and ``files``;
  subjects are matched against each feature's ``subjects`` in features.toml;
- ``census``: a barrier census of vmlinux (orchestrator/elfinspect.py): ``{function:
  FunctionCensus}`` with ``.counts`` ({"dsb.ishst": n, ...}), ``.dsb_in_loop`` and
  ``.dsb_after_loop``, or plain dicts of that shape.

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
UPSTREAM = ["v6.9", "v6.12", "v6.16", "v6.18", "v7.0"]


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
        }

    def __str__(self) -> str:
        lines = [f"variant: {self.variant} (base {self.base})"]
        lines += ["  " + r for r in self.reasons]
        lines += ["  CONFLICT: " + c for c in self.conflicts]
        return "\n".join(lines)


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

    # 2. census: where the vmalloc pte loop's DSB sits
    census = evidence.get("census") or {}
    if census:
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

    # 3. everything else: from the base variant, said out loud
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
    return Inference(spec, fs, base, decisions, conflicts, matched)
