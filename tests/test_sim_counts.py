"""Counting predictions of the reference simulator against DOMAIN.md's counting model.

Every figure here comes out of running the modelled kernel paths (orchestrator/sim); the
tests compare those runs with the published shape, and with each other (a feature
toggled, step vs batched)."""

from __future__ import annotations

import pytest

from orchestrator.sim import pagetable as P
from orchestrator.sim import predict
from orchestrator.sim.kernel import Kernel
from orchestrator.sim.machine import Machine

V0, V1, V2 = "v6.12", "v6.16", "v7.0"


def _second_vmalloc_b(variant: str, pages: int, huge: bool = False) -> tuple[float, dict]:
    """B and counts of a vmalloc whose page tables exist (same address as a freed one),
    from a 2M-aligned start (no VA in use before it)."""
    m = Machine(variant)
    k = Kernel(m, va_in_use=0)
    a = k.vmalloc(pages * P.PAGE_SIZE, huge=huge)
    k.vfree(a)
    k.purge_vmap_area_lazy()
    before = m.event_totals().get("B", 0), m.totals()
    b = k.vmalloc(pages * P.PAGE_SIZE, huge=huge)
    assert b.addr == a.addr
    after = m.event_totals().get("B", 0), m.totals()
    delta = {kk: after[1].get(kk, 0) - before[1].get(kk, 0) for kk in after[1]}
    return after[0] - before[0], delta


def test_batching_256_pages_in_one_table_is_256_b_to_1_b():
    b0, c0 = _second_vmalloc_b(V0, 256)
    b1, c1 = _second_vmalloc_b(V1, 256)
    assert (b0, b1) == (256, 1)
    assert c0["dsb.ishst"] == 256 and c0["isb"] == 256
    assert c1["dsb.ishst"] == 1 and c1["isb"] == 1
    # and the demo series on 6.12 gets the same
    assert _second_vmalloc_b("lazy-mmu-6.12/batching", 256)[0] == 1


def test_batching_is_one_b_per_pte_table_spanned():
    # 512 pages from a 2M-aligned start: exactly one pte table
    assert _second_vmalloc_b(V1, 512)[0] == 1
    # 1025 pages span 3 pte tables, and __vmalloc_area_node vmallocs the 8200-byte
    # pages array itself (3 pages, one more table's worth of section)
    assert _second_vmalloc_b(V1, 1025)[0] == 3 + 1
    assert _second_vmalloc_b(V0, 1025)[0] == 1025 + 3


def test_fix_size_loop_steady_state():
    p0 = predict(V0, "test_vmalloc run_test_mask=1 nr_pages=256")
    p1 = predict(V1, "test_vmalloc run_test_mask=1 nr_pages=256")
    assert p0.barrier_pairs_per_loop == 256
    # test_vmalloc's 257-page stride (guard page) makes about half the areas straddle two
    # pte tables: between 1 and 2 per loop, never per page
    assert 1 <= p1.barrier_pairs_per_loop <= 2
    assert p0.per_op["vfree"].get("dsb.ishst", 0) < 0.1  # vfree: no per-page barriers
    # lazy purge: one flush_tlb_all per lazy_max_pages (8192) of freed VA = per 32 loops
    assert p0.per_loop["tlbi.vmalle1is"] == pytest.approx(1 / 32)
    assert p0.tests[0].window == 32


def test_use_huge_contpte_and_batching():
    assert predict(V0, "fix_size_256_huge").barrier_pairs_per_loop == 256
    assert predict(V1, "fix_size_256_huge").barrier_pairs_per_loop == 16
    # contpte alone (hoisted __set_ptes_anysz barrier, no lazy batching): 1/16
    contpte_only = "v6.12+vmap_contpte+set_ptes_hoist_barriers"
    b = predict(contpte_only, "fix_size_256_huge").barrier_pairs_per_loop
    assert b == 16 and b / 256 == 1 / 16
    # without the hoist, contpte blocks still take one barrier per pte
    assert predict("v6.12+vmap_contpte", "fix_size_256_huge").barrier_pairs_per_loop == 256


def test_new_tables_add_one_b_each():
    m = Machine(V1)
    k = Kernel(m)
    k.vmalloc(P.PAGE_SIZE)
    ev = m.event_totals()
    # pud, pmd and pte tables allocated: 3 set_pud/set_pmd barriers + 1 for the page
    assert ev["table_alloc"] == 3
    assert ev["B"] == 4
    # smp_wmb() before each populate, and clear_vm_uninitialized_flag()'s once per vmalloc
    assert m.totals()["dmb.ishst"] == 3 + 1


def test_single_fixmap_halves_tlbis_per_table_in_map_mem():
    def per_table(variant):
        p = predict(variant, "map_mem mem=1G")
        t = p.tests[0]
        return t.per_loop["tlbi.vaale1is"] / t.per_loop_events["table_alloc"]

    after = per_table("v6.12")
    before = per_table("v6.12-linear_map_single_fixmap")
    assert after == pytest.approx(1.0, abs=0.01)
    assert before == pytest.approx(2.0, abs=0.01)
    # before the whole series (v6.9): a remap per contiguous block and a barrier per pte
    old = predict("v6.9", "map_mem mem=1G").tests[0]
    assert old.per_loop["tlbi.vaale1is"] / old.per_loop_events["table_alloc"] > 30
    assert old.per_loop["dsb.ishst"] > 262144


@pytest.mark.parametrize("a,b,c", [(4, 1, 4), (0, 1, 3), (5, 0, 0), (0, 0, 2), (3, 2, 0)])
def test_nested_debug_pagealloc_table(a, b, c):
    want = {
        V0: a + b + c,
        V1: int(a + b > 0) + c,
        V2: int(a + b > 0) + int(c > 0),
        "lazy-mmu-6.12/batching": int(a + b > 0) + c,
        "lazy-mmu-6.12/nesting": int(a + b > 0) + int(c > 0),
    }
    for variant, expected in want.items():
        p = predict(variant, f"nested a={a} b={b} c={c}")
        assert p.barrier_pairs_per_loop == expected, variant
        assert not p.violations


def test_set_memory_per_table_and_pagewalk():
    w = "set_memory op=nx pages=1024"
    p0 = predict(V0, w)
    tables = p0.tests[0].per_loop_events["lazy_enter"]  # apply_to_pte_range: one per table
    assert p0.barrier_pairs_per_loop == 1024
    assert predict(V1, w).barrier_pairs_per_loop == tables
    assert predict("v6.18", w).barrier_pairs_per_loop == 1
    assert (
        predict("v6.18+pagewalk_pte_table_hooks-set_memory_pagewalk_lazy", w).barrier_pairs_per_loop
        == tables
    )
    assert predict("v6.18-set_memory_pagewalk_lazy", w).barrier_pairs_per_loop == 1024
    # plus the TLB flush: 1024 pages > MAX_DVM_OPS -> flush_tlb_all
    assert p0.per_loop["tlbi.vmalle1is"] == 1


def test_set_memory_ro_also_updates_the_linear_alias_with_rodata_full():
    p = predict(V0, "set_memory op=ro pages=16")
    assert p.barrier_pairs_per_loop == 32  # 16 vmalloc ptes + 16 linear-map aliases
    assert p.per_loop["tlbi.vaale1is"] == 32  # a 1-page flush per alias + 16 for the area
    q = predict(V0, "set_memory op=ro pages=16 rodata_full=0")
    assert q.barrier_pairs_per_loop == 16


def test_interrupt_context_writes_are_never_batched():
    for variant, batched_in_irq in ((V1, False), ("historic/batching-in-irq", True)):
        m = Machine(variant)
        state = m.lazy_enter()
        m.irq_enter()
        m.fixmap_map("FIX_IRQ")
        b_in_irq = m.event_totals().get("B", 0)
        m.irq_exit()
        m.lazy_leave(state)
        assert (b_in_irq == 0) == batched_in_irq, variant


def test_context_switch_emits_dsb_ish():
    m = Machine(V1, ncpus=2)
    m.context_switch()
    assert m.counts[("", "__switch_to")]["dsb.ish"] == 1


def test_counts_follow_features_not_names():
    # the same feature set under a composed spec gives the same answer as the name
    spec = "v6.12+arm64_lazy_mmu_batching+vmalloc_lazy_mmu+lazy_mmu_no_batch_in_irq"
    assert (
        predict(spec, "fix_size_16").per_loop
        == predict("lazy-mmu-6.12/batching", "fix_size_16").per_loop
    )
    # and removing the vmalloc lazy section from 6.16 brings back per-page barriers
    assert predict("v6.16-vmalloc_lazy_mmu", "fix_size_16").barrier_pairs_per_loop == 16


@pytest.mark.parametrize("variant", [V0, V1, V2, "lazy-mmu-6.12/nesting"])
@pytest.mark.parametrize(
    "workload",
    [
        "test_vmalloc run_test_mask=1 nr_pages=3000",
        "test_vmalloc run_test_mask=1 nr_pages=600 use_huge=1",
        "set_memory op=nx pages=1500",
        "map_mem mem=64M",
        "nested a=3 b=2 c=5",
    ],
)
def test_step_and_batched_models_agree(variant, workload):
    a = predict(variant, workload, mode="step")
    b = predict(variant, workload, mode="batched")
    assert a.per_loop == b.per_loop
    assert a.per_loop_events == b.per_loop_events
    assert a.per_path == b.per_path
    assert a.tests[0].setup == b.tests[0].setup


def test_vm_map_ram_and_other_tests_run():
    p = predict(V1, "test_vmalloc run_test_mask=1024 nr_pages=64")
    assert p.barrier_pairs_per_loop == 1  # 64 pages from a 1024-page vmap block
    q = predict(V0, "test_vmalloc run_test_mask=1054")  # 2|4|8|16|1024
    names = [t.name for t in q.tests]
    assert names == [
        "full_fit_alloc_test",
        "long_busy_list_alloc_test",
        "random_size_alloc_test",
        "fix_align_alloc_test",
        "vm_map_ram_test",
    ]
    assert q.test("full_fit_alloc_test").barrier_pairs_per_loop == 1
    assert q.test("fix_align_alloc_test").barrier_pairs_per_loop == 5
    assert q.test("long_busy_list_alloc_test").barrier_pairs_per_loop == 101
    assert 40 < q.test("random_size_alloc_test").barrier_pairs_per_loop < 60
    assert any("random_size" in n for n in q.test("random_size_alloc_test").notes)
    assert not q.violations


def test_default_mask_reports_what_is_not_modelled():
    p = predict(V0, "test_vmalloc run_test_mask=128")
    assert p.tests == [] and "pcpu_alloc_test" in p.skipped[0]


def test_json_shape():
    d = predict(V1, "fix_size_256").to_json()
    assert d["schema"] == "mmlab.sim.prediction/1"
    assert d["variant"]["name"] == "v6.16"
    assert set(d["per_loop_by_class"]) >= {"DSB", "ISB", "DMB", "TLBI"}
    assert d["per_loop_by_class"]["DSB"]["ishst"] == d["per_loop"]["dsb.ishst"]
    assert "vmap_pages_pte_range" in d["per_path"]
    assert set(d["per_op"]) == {"vmalloc", "touch", "vfree"}
    assert d["tests"][0]["total"]["isb"] == pytest.approx(
        d["per_loop"]["isb"] * 1000000, rel=1e-6, abs=2000
    )


def test_freeing_tables_for_huge_mappings():
    m = Machine("v6.18")
    k = Kernel(m, ptdump_debugfs=True, va_in_use=0)
    small = k.vmalloc(4 * P.PAGE_SIZE)  # leaves a pte table under the first 2M
    k.vfree(small)
    k.purge_vmap_area_lazy()
    huge = k.vmalloc(P.PMD_SIZE, huge=True)  # 6.18: PMD vmap allowed with ptdump
    assert huge.addr == small.addr and huge.page_shift == P.PMD_SHIFT
    ev, c = m.event_totals(), m.counts[("", "pmd_free_pte_page")]
    assert ev["table_free"] == 1 and c["tlbi.vaae1is"] == 1 and c["dsb.ish"] == 1
    assert k.pt.freed_tables == 1
    # 6.12 with PTDUMP_DEBUGFS never maps PMD blocks in vmalloc
    k2 = Kernel(Machine("v6.12"), ptdump_debugfs=True)
    assert k2.vmalloc(P.PMD_SIZE, huge=True).page_shift == P.PAGE_SHIFT
    # pud_free_pmd_page tears down a pmd table and the pte tables below it
    pud = k._lookup_pmd(huge.addr)  # the pmd table; its parent pud slot:
    pud_t = k.pt.lookup(huge.addr)[1][0]
    ui = P.index(huge.addr, 1)
    k.vmalloc(8 * P.PAGE_SIZE)  # another pte table in the same 1G
    k.pud_free_pmd_page(pud_t, ui, huge.addr & ~(P.PUD_SIZE - 1))
    assert pud.freed and pud_t.e[ui] == 0
    assert k.ptdump_walk() > 0 and not m.violations
