"""ptdump parser: sections, entries, exact summaries, W+X, and rejection of other formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.parsers.ptdump import parse as ptdump_parse
from orchestrator.parsers.ptdump import parse_ptdump, parse_wx, split_dumps

DATA = Path(__file__).parent / "data" / "parsers"
K, M, G = 1 << 10, 1 << 20, 1 << 30


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_known_dump_sections_and_entries():
    d = parse_ptdump(read("ptdump_arm64_known.txt"))
    assert [s.name for s in d.sections] == [
        "Linear Mapping start",
        "Linear Mapping end",
        "Modules start",
        "Modules end",
        "vmalloc() area",
        "vmalloc() end",
        "vmemmap start",
        "vmemmap end",
        "PCI I/O start",
        "PCI I/O end",
        "Fixmap start",
        "Fixmap end",
    ]
    assert d.warnings == []
    lin = d.section("Linear Mapping start")
    e = lin.entries[2]
    assert (e.start, e.end, e.size, e.level) == (
        0xFFFF000040200000,
        0xFFFF000042200000,
        32 * M,
        "PMD",
    )
    assert e.flags == ["RW", "NX", "SHD", "AF", "CON", "BLK", "UXN"] and e.memtype == "MEM/NORMAL"
    assert e.kind == "block"
    invalid = lin.entries[5]
    assert invalid.flags[0] == "F" and not invalid.mapped and invalid.kind is None
    # the last entry ends at the top of the address space (printed as 0x0000000000000000)
    last = d.sections[-1].entries[-1]
    assert last.end == 1 << 64 and last.size == 8 * M


def test_known_dump_vmalloc_summary_exact():
    vm = parse_ptdump(read("ptdump_arm64_known.txt")).vmalloc
    # hand count of gen_ptdump_known.py's vmalloc entries
    pte = 16 * K + 8 * K + 4 * K  # RW pte, ro x pte, the NG pte
    cont = 128 * K
    block = 4 * M
    assert vm.by_kind == {"pte": pte, "cont": cont, "block": block}
    assert vm.by_level == {"PGD": 0, "P4D": 0, "PUD": 0, "PMD": block, "PTE": pte + cont}
    assert vm.mapped == pte + cont + block
    assert vm.span == 0xFFFFFDFFBFE00000 - 0xFFFF800080000000
    assert vm.mapped_entries == 5 and vm.entries == 13
    assert vm.share("block", "mapped") == pytest.approx(block / (pte + cont + block))
    assert vm.share("cont", "mapped") == pytest.approx(cont / (pte + cont + block))
    assert vm.share("pte") == pytest.approx(pte / vm.span)
    assert vm.cont_block == 0


def test_known_dump_linear_map_summary_exact():
    lin = parse_ptdump(read("ptdump_arm64_known.txt")).section("Linear Mapping start").summary()
    assert lin.by_kind == {
        "pte": 12 * K + (2 * M - 80 * K),
        "cont": 64 * K,
        "block": 2 * M + 32 * M + 476 * M,
    }
    assert lin.cont_block == 32 * M
    assert lin.by_level["PMD"] == 510 * M
    assert lin.span == 0xFFFF800000000000 - 0xFFFF000000000000


def test_real_dump_from_612_guest():
    d = parse_ptdump(read("real_ptdump_boot_612.txt"))
    assert d.warnings == []
    vm = d.vmalloc
    # hand count of the mapped vmalloc entries of the real dump
    pte = (64 + 1472 + 4 + 4 + 4 + 4 + 64 + 12 + 64 + 128) * K + 256 * M
    cont = (3264 + 1152) * K
    assert vm.by_kind == {"pte": pte, "cont": cont, "block": 0}
    assert vm.span == 0xFFFFFDFFC0000000 - 0xFFFF800080000000
    lin = d.section("Linear Mapping start").summary()
    assert lin.by_kind["block"] == (2 + 4 + 24 + 480) * M and lin.cont_block == 480 * M
    assert lin.by_kind["cont"] == 1344 * K and lin.by_kind["pte"] == 704 * K
    assert d.wx_entries == []  # "ro x" kernel text is not writable
    assert {"MEM/NORMAL-TAGGED", "DEVICE/nGnRnE", "MEM/NORMAL-NC"} <= {
        e.memtype for s in d.sections for e in s.entries
    }


def test_real_dump_after_vmalloc_tests_maps_more():
    before = parse_ptdump(read("real_ptdump_boot_612.txt")).vmalloc
    after = parse_ptdump(read("real_ptdump_after_vmalloc_612.txt")).vmalloc
    assert after.mapped - before.mapped == 2 * 4 * K  # two stray 4K pages left near the top
    assert after.entries > before.entries


def test_json_is_serializable_and_complete():
    d = parse_ptdump(read("real_ptdump_boot_612.txt"), wx_text=read("check_wx_pages_success.txt"))
    j = json.loads(json.dumps(d.to_json(entries=True)))
    assert j["wx"] == {
        "passed": True,
        "source": "check_wx_pages",
        "wx_pages": None,
        "uxn_pages": None,
    }
    assert j["vmalloc"]["by_kind"]["cont"] == 4416 * K
    assert j["sections"][0]["entries"][0]["start"] == "0xffff000000000000"


def test_wx_results():
    assert parse_wx(read("check_wx_pages_success.txt")).passed
    assert not parse_wx(read("check_wx_pages_failed.txt")).passed
    failed = parse_wx(
        "[ 1.0] Checked W+X mappings: FAILED, 2 W+X pages found, 7 non-UXN pages found"
    )
    assert (failed.passed, failed.wx_pages, failed.uxn_pages, failed.source) == (
        False,
        2,
        7,
        "dmesg",
    )
    assert parse_wx("nothing here") is None
    # the real console: check_wx_pages' read also logs the dmesg line
    real = (
        read("real_boot_612.log")
        .split("=== check_wx_pages begin ===")[1]
        .split("=== check_wx_pages end")[0]
    )
    assert parse_wx(real).passed


def test_writable_executable_entry_is_found():
    text = read("ptdump_arm64_known.txt").replace(
        "8K PTE       ro x  SHD AF", "8K PTE       RW x  SHD AF"
    )
    d = parse_ptdump(text)
    (e,) = d.wx_entries
    assert e.size == 8 * K and d.to_json()["wx_entries_in_dump"] == 1


def test_extra_columns_and_interleaved_kernel_lines_are_tolerated():
    lines = read("ptdump_arm64_known.txt").splitlines()
    lines[3] += " PIE0 NEWBIT"
    lines.insert(10, "[   12.000000] random: crng init done")
    d = parse_ptdump("\n".join(lines))
    e = d.section("Linear Mapping start").entries[2]
    assert e.extra == ["PIE0", "NEWBIT"] and e.kind == "block"
    assert d.skipped_lines == [11]
    assert d.vmalloc.by_kind == parse_ptdump(read("ptdump_arm64_known.txt")).vmalloc.by_kind


def test_missing_lines_are_reported():
    lines = read("ptdump_arm64_known.txt").splitlines()
    del lines[16]
    d = parse_ptdump("\n".join(lines))
    assert any("lines missing" in w for w in d.warnings)


@pytest.mark.parametrize(
    "name", ["ptdump_x86.txt", "ptdump_riscv.txt", "warning.log", "real_panic_noinit_612.log"]
)
def test_other_formats_are_rejected(name):
    with pytest.raises(InputError, match="arm64 kernel page-table dump"):
        parse_ptdump(read(name), source=name)


def test_empty_and_error_text_rejected():
    for text in (
        "",
        "\n\n",
        "cat: can't open '/sys/kernel/debug/kernel_page_tables': No such file or directory\n",
    ):
        with pytest.raises(InputError) as exc:
            parse_ptdump(text)
        assert exc.value.hint and "\n" not in str(exc.value)


def test_split_dumps_of_a_read_loop():
    text = (
        read("real_ptdump_boot_612.txt")
        + read("real_ptdump_after_vmalloc_612.txt")
        + read("real_ptdump_boot_612.txt")
    )
    parts = split_dumps(text)
    assert len(parts) == 3
    assert [parse_ptdump(p).vmalloc.mapped for p in parts] == [
        parse_ptdump(read(n)).vmalloc.mapped
        for n in (
            "real_ptdump_boot_612.txt",
            "real_ptdump_after_vmalloc_612.txt",
            "real_ptdump_boot_612.txt",
        )
    ]


def test_parse_guest_output_with_several_dumps_and_noise():
    """The real console of one boot: two dumps among kernel messages and shell markers."""
    series = ptdump_parse(read("real_boot_612.log"))
    assert len(series.dumps) == 2
    assert all(d.warnings == [] for d in series.dumps)
    assert series.wx.passed and series.wx.source == "check_wx_pages"
    j = series.to_json()
    assert (
        j["dumps"] == 2
        and j["vmalloc"]["mapped"]
        == parse_ptdump(read("real_ptdump_after_vmalloc_612.txt")).vmalloc.mapped
    )
    assert [d["vmalloc"]["by_kind"]["cont"] for d in j["per_dump"]] == [4416 * K, 4416 * K]


def test_parse_guest_output_without_dump_is_an_error():
    with pytest.raises(InputError, match="not an arm64"):
        ptdump_parse("# cat /sys/kernel/debug/kernel_page_tables\ncat: can't open\n")
    with pytest.raises(InputError, match="dump 1"):
        ptdump_parse(read("ptdump_x86.txt"))


def test_dump_quoted_in_a_mail():
    text = "".join("> " + line + "\n" for line in read("real_ptdump_boot_612.txt").splitlines())
    d = parse_ptdump(text)
    assert d.vmalloc.by_kind == parse_ptdump(read("real_ptdump_boot_612.txt")).vmalloc.by_kind
