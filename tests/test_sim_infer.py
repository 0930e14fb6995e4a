"""Inferring a kernel's variant from applied patches and from a vmlinux barrier census."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.kernel.kernelcode import Fact, KernelCode
from orchestrator.sim import infer_variant


@dataclass
class FunctionCensus:  # the shape orchestrator/kernel/elfinspect.py produces
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    dsb_in_loop: int = 0
    dsb_after_loop: int = 0


SERIES = [
    "[PATCH 1/3] mm/vmalloc: Enter lazy mmu mode while manipulating vmalloc ptes",
    "[PATCH 2/3] arm64/mm: Batch barriers when updating kernel mappings",
    "[PATCH 3/3] arm64/mm: Disable barrier batching in interrupt contexts",
]


def test_from_patch_subjects():
    i = infer_variant({"base": "6.12.117", "patches": SERIES})
    assert i.variant == "lazy-mmu-6.12/batching"
    assert {d.feature for d in i.decisions if d.source == "patch"} == {
        "vmalloc_lazy_mmu",
        "arm64_lazy_mmu_batching",
        "lazy_mmu_no_batch_in_irq",
    }
    assert "vmap_contpte" in i.assumed  # said out loud, not silently
    i2 = infer_variant(
        {
            "base": "6.12",
            "patches": SERIES
            + [
                {
                    "subject": "arm64: mm: fully support nested lazy_mmu sections",
                    "files": ["arch/arm64/include/asm/pgtable.h"],
                }
            ],
        }
    )
    # the subject is seed 001's: test_and_set nesting, unless the code says otherwise
    assert "lazy_mmu_full_nesting_arm64" in i2.features
    assert "lazy_mmu_depth_counter" not in i2.features
    # mmlab's demo 0003 has the same subject, but its enter hook's atomic is relaxed
    code = KernelCode(facts={"enter_atomic": Fact("relaxed", "arch_enter_lazy_mmu_mode: "
                                                  "relaxed atomic")})
    i3 = infer_variant({"base": "6.12", "code": code, "patches": SERIES + [
        "arm64/mm: fully support nested lazy MMU sections"]})
    assert i3.variant == "lazy-mmu-6.12/nesting"
    d = next(d for d in i3.decisions if d.feature == "lazy_mmu_depth_counter")
    assert d.source == "code" and "depth count" in d.why


def test_code_facts_decide_and_conflict_with_subjects():
    queued = Fact("queued", "vmap_range_noflush -> __set_ptes_anysz: dsb beside an atomic")
    hooks = Fact(True, "arch_flush_lazy_mmu_mode")
    i = infer_variant({"base": "7.3.4", "code": KernelCode(facts={
        "pte_barriers": queued, "lazy_hooks": hooks,
        "generic_nesting": Fact(True, "lazy_mmu_mode_enable"),
        "nr_vmalloc_pages": Fact(False, "no symbol"),
        "lazy_nr_order": Fact("relaxed", "stadd")}, params={"atomics": "lse"})})
    assert i.variant == "v7.3" and not i.conflicts
    assert i.workload_params() == "atomics=lse"
    # an experiment that emits at once keeps the hooks: batching stays, unbatched is added
    imm = Fact("immediate", "vmap_range_noflush -> __set_ptes_anysz: dsb, no atomic")
    j = infer_variant({"base": "7.3.4", "code": KernelCode(facts={
        "pte_barriers": imm, "lazy_hooks": hooks})})
    assert {"arm64_lazy_mmu_batching", "pte_barriers_unbatched"} <= j.features
    # 6.12: no hooks, barrier at once; a batching subject then conflicts with the code
    k = infer_variant({"base": "6.12", "patches": SERIES, "code": KernelCode(facts={
        "pte_barriers": imm, "lazy_hooks": Fact(False, "none")})})
    assert k.conflicts and "the code says no" in k.conflicts[0]


def test_from_census_objects_and_dicts():
    batched = {
        "vmap_pages_pte_range": FunctionCensus(
            "vmap_pages_pte_range", {"dsb.ishst": 1, "isb": 1}, dsb_in_loop=0, dsb_after_loop=1
        )
    }
    i = infer_variant({"base": "6.12", "census": batched})
    assert {"arm64_lazy_mmu_batching", "vmalloc_lazy_mmu"} <= i.features
    d = next(d for d in i.decisions if d.feature == "arm64_lazy_mmu_batching")
    assert d.source == "census" and "after loop=1" in d.why
    irq = next(d for d in i.decisions if d.feature == "lazy_mmu_no_batch_in_irq")
    assert irq.present and irq.source == "assumed"
    plain = {
        "vmap_pages_pte_range": {
            "name": "vmap_pages_pte_range",
            "counts": {"dsb.ishst": 1},
            "dsb_in_loop": 1,
            "dsb_after_loop": 0,
        }
    }
    j = infer_variant({"base": "6.12", "census": plain})
    assert j.variant == "v6.12"


def test_release_picks_the_base_and_conflicts_are_reported():
    assert infer_variant({"base": "6.17.2"}).base == "v6.16"
    assert infer_variant({}).base == "v6.12"
    unbatched = {"vmap_pages_pte_range": {"dsb_in_loop": 1, "dsb_after_loop": 0}}
    i = infer_variant({"base": "6.12", "patches": SERIES, "census": unbatched})
    assert i.conflicts and "census says False" in i.conflicts[0]
    u = infer_variant({"patches": [{"subject": "mm: something else", "files": ["mm/vmalloc.c"]}]})
    assert u.conflicts and "not modelled" in u.conflicts[0]
    assert "variant" in u.to_json() and u.to_json()["assumed"]


def test_a_patch_that_undoes_batching_takes_the_feature_out():
    """series/no-batching-7.3 on 7.3: the subject says it removes barrier batching, so the
    model predicts one barrier pair per pte again (what the plugin measures)."""
    from orchestrator.kernel.series import load_series
    from orchestrator.sim import infer_variant, predict

    s = load_series(str(Path(__file__).parent.parent / "series" / "no-batching-7.3"))
    inf = infer_variant({"base": "7.3.4", "patches": [{"subject": p.subject}
                                                       for p in s.patches]})
    # the lazy sections and their flush stay; the barriers are emitted at once
    assert "pte_barriers_unbatched" in inf.features
    assert "lazy_mmu_generic_nesting" in inf.features
    per_loop = predict(inf.variant, "test_vmalloc run_test_mask=1 nr_pages=256").per_loop
    assert round(per_loop["dsb.ishst"]) == 256
