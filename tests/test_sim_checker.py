"""The invariant checker over random operation sequences (hypothesis), for every variant.

The default run uses a small example budget per variant so `pytest tests/` stays quick;
the `slow` test (and benchmarks/test_bench_sim.py) run the full 10,000 per variant."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from orchestrator.sim.checker import run_sequence
from orchestrator.sim.features import resolve_variant, variant_names

SHIPPED = variant_names(shipped_only=True)
UNSAFE = [n for n in variant_names() if resolve_variant(n).expect_unsafe]

idx = st.integers(0, 15)
op = st.one_of(
    st.tuples(st.just("vmalloc"), st.sampled_from([1, 2, 16, 17, 300, 600]), st.booleans()),
    st.tuples(st.just("vfree"), idx),
    st.tuples(st.sampled_from(["touch", "remote", "lazy_write", "set_memory"]), idx, idx),
    st.tuples(st.sampled_from(["enter", "leave", "irq_fixmap", "ptdump", "vmalloc_huge_pmd"])),
    st.tuples(
        st.sampled_from(
            [
                "kernel_map_pages",
                "pause_write_touch",
                "switch_migrate",
                "vm_map_ram",
                "vm_unmap_ram",
            ]
        ),
        idx,
    ),
)
sequences = st.lists(op, min_size=1, max_size=30)
# programs centred on lazy sections: preemption, interrupts and nesting inside them
section_op = st.one_of(
    st.tuples(st.just("vmalloc"), st.sampled_from([1, 4, 600]), st.just(False)),
    st.tuples(st.sampled_from(["enter", "leave", "irq_fixmap"])),
    st.tuples(st.sampled_from(["lazy_write", "remote", "touch"]), idx, idx),
    st.tuples(st.sampled_from(["switch_migrate", "kernel_map_pages", "pause_write_touch"]), idx),
)
section_programs = st.lists(section_op, min_size=1, max_size=12)

FAST = settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
FULL = settings(
    max_examples=10_000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _assert_safe(variant: str, ops: list) -> None:
    r = run_sequence(variant, ops)
    assert r.ok, f"{variant}: {r.violations[0]} after {r.ops_run}"


@pytest.mark.parametrize("variant", SHIPPED)
def test_shipped_variants_keep_the_invariants(variant):
    @FAST
    @given(sequences)
    def check(ops):
        _assert_safe(variant, ops)

    @FAST
    @given(section_programs)
    def check_sections(ops):
        _assert_safe(variant, ops)

    check()
    check_sections()


@pytest.mark.long
@pytest.mark.parametrize("variant", SHIPPED)
def test_shipped_variants_keep_the_invariants_10000(variant):
    @FULL
    @given(sequences)
    def check(ops):
        _assert_safe(variant, ops)

    @settings(FULL, max_examples=2_000)
    @given(section_programs)
    def check_sections(ops):
        _assert_safe(variant, ops)

    check()  # 10,000 mixed programs
    check_sections()  # and 2,000 more centred on lazy sections


def test_there_are_unsafe_variants_to_catch():
    assert {
        "broken/leave-without-flush",
        "broken/switch-without-dsb",
        "historic/batching-in-irq",
    } <= set(UNSAFE)
    assert not set(UNSAFE) & set(SHIPPED)


@pytest.mark.parametrize("variant", UNSAFE)
def test_checker_catches_unsafe_variants(variant):
    bad = find(
        section_programs,
        lambda ops: not run_sequence(variant, ops).ok,
        settings=settings(
            max_examples=5000,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    r = run_sequence(variant, bad)
    assert r.violations
    # the same program is fine on the shipped kernel the fault was injected into
    base = {
        "broken/leave-without-flush": "lazy-mmu-6.12/batching",
        "broken/switch-without-dsb": "v6.16",
        "historic/batching-in-irq": "v6.16",
    }[variant]
    assert run_sequence(base, bad).ok


def test_leave_without_flush_is_caught_at_the_first_vmalloc():
    r = run_sequence("broken/leave-without-flush", [("vmalloc", 1, False)])
    assert [v.rule for v in r.violations][:1] == ["store-not-complete"]
    assert "leave() returned" in r.violations[0].message


def test_batching_in_irq_is_caught_when_an_interrupt_hits_a_lazy_section():
    ops = [("enter",), ("irq_fixmap",), ("leave",)]
    assert not run_sequence("historic/batching-in-irq", ops).ok
    assert run_sequence("v6.16", ops).ok
    assert run_sequence("historic/batching-in-irq", [("irq_fixmap",)]).ok


def test_switch_inside_lazy_section_needs_the_dsb():
    ops = [
        ("vmalloc", 2, False),
        ("enter",),
        ("lazy_write", 0, 2),
        ("switch_migrate", 0),
        ("leave",),
    ]
    assert run_sequence("v6.16", ops).ok
    r = run_sequence("broken/switch-without-dsb", ops)
    assert r.violations and r.violations[0].rule == "store-not-complete"


def test_nested_leave_makes_updates_visible():
    # DEBUG_PAGEALLOC: a page mapped by the inner section is used before the outer leave
    ops = [
        ("vmalloc", 4, False),
        ("enter",),
        ("lazy_write", 0, 4),
        ("kernel_map_pages", 1),
        ("lazy_write", 0, 4),
        ("leave",),
    ]
    for v in SHIPPED:
        assert run_sequence(v, ops).ok, v
