"""Inferring a kernel's variant from applied patches and from a vmlinux barrier census."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.sim import infer_variant


@dataclass
class FunctionCensus:  # the shape orchestrator/elfinspect.py produces
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
    assert i2.variant == "lazy-mmu-6.12/nesting"


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
    from orchestrator.series import load_series
    from orchestrator.sim import infer_variant, predict

    s = load_series(str(Path(__file__).parent.parent / "series" / "no-batching-7.3"))
    inf = infer_variant({"base": "7.3.4", "patches": [{"subject": p.subject}
                                                       for p in s.patches]})
    assert "arm64_lazy_mmu_batching" not in inf.features
    assert "lazy_mmu_generic_nesting" in inf.features
    per_loop = predict(inf.variant, "test_vmalloc run_test_mask=1 nr_pages=256").per_loop
    assert round(per_loop["dsb.ishst"]) == 256
