"""The mm-relevant config table and the warnings a config difference gives."""

from __future__ import annotations

import pytest

from orchestrator.kernel import mmconfig

CFG_612 = """\
CONFIG_ARM64_4K_PAGES=y
# CONFIG_ARM64_16K_PAGES is not set
# CONFIG_ARM64_USE_LSE_ATOMICS is not set
# CONFIG_RODATA_FULL_DEFAULT_ENABLED is not set
CONFIG_PTDUMP_DEBUGFS=y
# CONFIG_DEBUG_PAGEALLOC is not set
CONFIG_PREEMPT_NONE=y
CONFIG_HZ=250
"""
# 7.3: LSE and rodata=full are no longer options at all; vmalloc-huge with ptdump (6.18+)
CFG_73 = """\
CONFIG_ARM64_4K_PAGES=y
CONFIG_PTDUMP_DEBUGFS=y
CONFIG_HAVE_ARCH_HUGE_VMALLOC=y
# CONFIG_DEBUG_PAGEALLOC is not set
CONFIG_PREEMPT_NONE=y
CONFIG_HZ=250
CONFIG_LAZY_MMU_MODE_KUNIT_TEST=m
"""


def _row(rows, name):
    return next(r for r in rows if r["property"] == name)


def test_labels_from_present_unset_and_absent_options():
    rows = mmconfig.table({"v6.12": CFG_612, "v7.3": CFG_73})
    assert _row(rows, "atomics")["values"] == {"v6.12": "LL/SC",
                                              "v7.3": "LSE (always on: no such option)"}
    assert _row(rows, "linear map")["values"]["v6.12"] == "block-mapped"
    assert _row(rows, "linear map")["values"]["v7.3"].startswith("page-mapped")
    assert _row(rows, "page size")["values"] == {"v6.12": "4K", "v7.3": "4K"}
    assert _row(rows, "timer HZ")["values"] == {"v6.12": "250", "v7.3": "250"}
    assert _row(rows, "vmalloc huge")["values"] == {"v6.12": "no", "v7.3": "yes"}
    assert _row(rows, "lazy-MMU KUnit")["values"] == {"v6.12": "no such suite", "v7.3": "module"}
    assert _row(rows, "atomics")["options"]["v6.12"] == "CONFIG_ARM64_USE_LSE_ATOMICS"


def test_differences_that_matter_are_warnings_and_the_rest_are_not():
    rows = mmconfig.table({"v6.12": CFG_612, "v7.3": CFG_73})
    warns = mmconfig.differences(rows)
    text = " | ".join(warns)
    assert "differ in atomics (v6.12: LL/SC, v7.3: LSE" in text and "dmb ish" in text
    assert "differ in linear map" in text and "differ in vmalloc huge" in text
    assert "page size" not in text            # same on both
    assert "lazy-MMU KUnit" not in text       # differs, but changes no measurement
    assert mmconfig.differences(mmconfig.table({"a": CFG_612, "b": CFG_612})) == []


@pytest.mark.kernel
@pytest.mark.upstream
def test_real_6_12_and_7_3_configs_differ_in_atomics_and_linear_map(kernel_artifact,
                                                                    upstream_artifact):
    rows = mmconfig.table({"v6.12": kernel_artifact.config_path.read_text(),
                           "v7.3": upstream_artifact.config_path.read_text()})
    assert _row(rows, "atomics")["values"]["v6.12"] == "LL/SC"
    assert _row(rows, "atomics")["values"]["v7.3"].startswith("LSE")
    assert _row(rows, "linear map")["values"]["v6.12"] == "block-mapped"
    assert _row(rows, "linear map")["values"]["v7.3"].startswith("page-mapped")
    assert _row(rows, "lazy-MMU KUnit")["values"]["v7.3"] == "module"
