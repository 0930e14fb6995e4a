"""Variants are data: named feature sets, composable specs, clear errors."""

from __future__ import annotations

import pytest

from orchestrator.errors import InputError
from orchestrator.sim.features import features, resolve_variant, variant_names


def test_upstream_and_demo_variants():
    v612, v616 = resolve_variant("v6.12"), resolve_variant("v6.16")
    assert v612.nesting == "none" and v616.nesting == "flag"
    assert resolve_variant("v7.0").nesting == "generic"
    assert resolve_variant("lazy-mmu-6.12/nesting").nesting == "full"
    b = resolve_variant("lazy-mmu-6.12/batching")
    assert b.features - v612.features == {
        "vmalloc_lazy_mmu",
        "arm64_lazy_mmu_batching",
        "lazy_mmu_no_batch_in_irq",
    }
    for n in ("v6.12", "v6.16", "v6.18", "v7.0", "lazy-mmu-6.12/batching", "lazy-mmu-6.12/nesting"):
        assert n in variant_names(shipped_only=True)
    for f in features().values():
        assert f.title and f.release


def test_composed_specs():
    v = resolve_variant("v6.16-vmap_contpte+ptdump_static_key")
    assert "vmap_contpte" not in v.features and "ptdump_static_key" in v.features
    d = resolve_variant({"base": "v6.12", "add": ["vmap_contpte"]})
    assert d.features == resolve_variant("v6.12+vmap_contpte").features


@pytest.mark.parametrize("bad", ["v9", "v6.12+nope", "v6.12 junk"])
def test_errors(bad):
    with pytest.raises(InputError) as e:
        resolve_variant(bad)
    assert e.value.hint
