"""The ptdump vs. table-freeing race of seed 003, by exhaustive interleaving."""

from __future__ import annotations

from orchestrator.sim.race import enumerate_ptdump_race


def test_sequential_consistency_uaf_without_static_key():
    r = enumerate_ptdump_race(static_key=False)
    assert r.use_after_free
    assert r.executions == 70  # C(8,4) interleavings of two 4-step threads
    assert r.witness[-1].endswith("[USE-AFTER-FREE]")
    assert any("pte_free_kernel" in w for w in r.witness)


def test_sequential_consistency_safe_with_static_key():
    r = enumerate_ptdump_race(static_key=True)
    assert not r.use_after_free
    assert r.executions > 1000


def test_store_buffer_model_same_verdicts():
    assert enumerate_ptdump_race(static_key=False, store_buffer=True).use_after_free
    assert not enumerate_ptdump_race(static_key=True, store_buffer=True).use_after_free


def test_the_dsb_in_the_tlb_flush_is_what_makes_the_key_safe():
    # without __flush_tlb_kernel_pgtable's DSB, pmd_clear can sit in the store buffer
    # while the key is read: only a weak-memory model shows it
    sb = enumerate_ptdump_race(static_key=True, store_buffer=True, flush_dsb=False)
    assert sb.use_after_free
    assert any("store buffer" in w for w in sb.witness)
    assert not enumerate_ptdump_race(
        static_key=True, store_buffer=False, flush_dsb=False
    ).use_after_free
