"""Instruction-word classification (orchestrator.kernel.aarch64).

Every encoding listed in ../shared/DOMAIN.md, plus the full TLBI/barrier tables, checked
against the words the real cross assembler produces for each mnemonic, so the tables
cannot drift from the architecture as binutils knows it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from orchestrator.kernel import aarch64
from orchestrator.kernel.aarch64 import classify, decode_branch, find_barriers, find_branches

# --- the words quoted in DOMAIN.md ---------------------------------------------------


@pytest.mark.parametrize("word,key", [
    (0xD5033A9F, "dsb.ishst"),
    (0xD5033B9F, "dsb.ish"),
    (0xD5033F9F, "dsb.sy"),
    (0xD503379F, "dsb.nsh"),
    (0xD5033FDF, "isb"),
    (0xD50883E0, "tlbi.vaale1is"),
    (0xD5088360, "tlbi.vaae1is"),
    (0xD508831F, "tlbi.vmalle1is"),
    (0xD5033BBF, "dmb.ish"),
    (0xD50339BF, "dmb.ishld"),
])
def test_domain_md_words(word, key):
    assert classify(word) == key


def test_ssbb_pssbb_are_not_dsb():
    # Same encoding space as DSB (CRm 0 and 4) but speculation barriers.
    assert classify(0xD503309F) is None  # SSBB
    assert classify(0xD503349F) is None  # PSSBB
    idx, keys = find_barriers(np.array([0xD503309F, 0xD503349F, 0xD5033A9F], dtype=np.uint32))
    assert idx.tolist() == [2] and keys == ["dsb.ishst"]


def test_dsb_all_domains_by_crm():
    expect = {1: "oshld", 2: "oshst", 3: "osh", 5: "nshld", 6: "nshst", 7: "nsh", 9: "ishld",
              10: "ishst", 11: "ish", 13: "ld", 14: "st", 15: "sy", 8: "#8", 12: "#12"}
    for crm, name in expect.items():
        assert classify(0xD503309F | crm << 8) == f"dsb.{name}"
        assert classify(0xD50330BF | crm << 8) == f"dmb.{name}"


def test_tlbi_el1_is_any_register_and_el1_mask():
    for rt in range(32):
        assert classify(0xD50883E0 | rt) == "tlbi.vaale1is"
    # EL1 ops are exactly (w & 0xFFFFF000) == 0xD5088000
    for w in (0xD5088000, 0xD5088FFF):
        assert w & 0xFFFFF000 == 0xD5088000 and classify(w).startswith("tlbi.")


def test_not_barriers():
    for w in (0xD503201F,  # nop
              0xD65F03C0,  # ret
              0xD50330FF,  # sb
              0xD5089000,  # CRn=9 (TLBI nXS space, not matched by the CRn=8 mask)
              0xD5087E20,  # dc civac (SYS, CRn=7)
              0xD5380000,  # mrs
              0x00000000):
        assert classify(w) is None, hex(w)


def test_unknown_tlbi_named_by_fields():
    w = 0xD5088000 | (0 << 16) | (0b1111 << 8) | (7 << 5)  # op1=0 CRm=15 op2=7: not an op
    assert classify(w) == "tlbi.op0_c8_c15_7"


# --- against the real assembler ---------------------------------------------------------

BARRIER_MNEMONICS = {
    **{f"dsb {o}": f"dsb.{o}" for o in aarch64.BARRIER_OPTIONS.values()},
    **{f"dmb {o}": f"dmb.{o}" for o in aarch64.BARRIER_OPTIONS.values()},
    "dsb ishnxs": "dsb.ishnxs", "dsb synxs": "dsb.synxs", "dsb nshnxs": "dsb.nshnxs",
    "dsb oshnxs": "dsb.oshnxs",
    "isb": "isb",
    "dsb #8": "dsb.#8",
    "ssbb": None, "pssbb": None, "sb": None, "nop": None, "csdb": None,
}


def _tlbi_mnemonics() -> dict[str, str]:
    out = {}
    for op in aarch64.TLBI_OPS.values():
        takes_reg = not (op.startswith(("vmall", "all")))
        out[f"tlbi {op}, x3" if takes_reg else f"tlbi {op}"] = f"tlbi.{op}"
    return out


def _assemble_words(lines: list[str], tmp_path) -> list[int]:
    if shutil.which("aarch64-linux-gnu-as") is None:
        pytest.fail("aarch64-linux-gnu-as missing: apt-get install binutils-aarch64-linux-gnu")
    src = tmp_path / "w.s"
    src.write_text(".arch armv8.7-a\n.text\n" + "\n".join(lines) + "\n")
    obj = tmp_path / "w.o"
    subprocess.run(["aarch64-linux-gnu-as", str(src), "-o", str(obj)], check=True)
    binf = tmp_path / "w.bin"
    subprocess.run(["aarch64-linux-gnu-objcopy", "-O", "binary", "-j", ".text", str(obj),
                    str(binf)], check=True)
    words = np.frombuffer(binf.read_bytes(), dtype="<u4").tolist()
    assert len(words) == len(lines)
    return words


def test_classification_matches_assembler(tmp_path):
    table = {**BARRIER_MNEMONICS, **_tlbi_mnemonics()}
    lines = list(table)
    words = _assemble_words(lines, tmp_path)
    got = {line: classify(w) for line, w in zip(lines, words, strict=True)}
    assert got == table
    # the vectorised scan agrees with the scalar one
    idx, keys = find_barriers(np.array(words, dtype=np.uint32))
    assert [lines[i] for i in idx] == [ln for ln in lines if table[ln] is not None]
    assert keys == [table[lines[i]] for i in idx]


def test_tlbi_table_has_the_common_el1_ops():
    for op in ("vmalle1is", "vae1is", "aside1is", "vaae1is", "vale1is", "vaale1is",
               "vmalle1", "vae1", "vale1", "vaale1", "rvae1is", "rvale1is", "rvaale1is"):
        assert op in aarch64.TLBI_OPS.values()


# --- branches ---------------------------------------------------------------------------

BRANCH_SRC = [
    "1: nop",
    "b 1b",          # 1: back 4
    "b.ne 1b",       # 2: back 8
    "cbz x0, 1b",    # 3
    "cbnz w1, 1b",   # 4
    "tbz x2, #40, 1b",   # 5 (b5 set)
    "tbnz w3, #3, 1b",   # 6
    "bl 1b",         # 7 call
    "b 2f",          # 8 forward
    "b.eq 2f",       # 9
    "cbz x0, 2f",    # 10
    "tbnz x0, #63, 2f",  # 11
    "br x0",         # 12: indirect, not decoded
    "ret",           # 13
    "2: nop",        # 14
]


def test_branch_decoding_against_assembler(tmp_path):
    words = _assemble_words(BRANCH_SRC, tmp_path)
    base = 0xFFFF800080010000  # kernel-like: beyond int64
    got = [decode_branch(w, base + 4 * i) for i, w in enumerate(words)]
    assert got[0] is None and got[12] is None and got[13] is None and got[14] is None
    kinds = [b.kind for b in got[1:12]]
    assert kinds == ["b", "b.cond", "cbz", "cbnz", "tbz", "tbnz", "bl", "b", "b.cond", "cbz",
                     "tbnz"]
    for b in got[1:8]:
        assert b.target == base and b.is_backward
    for b in got[8:12]:
        assert b.target == base + 4 * 14 and not b.is_backward
    assert got[7].is_call

    # objdump agrees on every target
    objdump = subprocess.run(
        ["aarch64-linux-gnu-objdump", "-d", str(tmp_path / "w.o")],
        check=True, capture_output=True, text=True).stdout
    targets = [int(m.group(1), 16) for m in re.finditer(
        r"^\s*[0-9a-f]+:\s+[0-9a-f]{8}\s+(?:b|bl|b\.\w+|cbn?z|tbn?z)\s+(?:[wx]\d+,\s+)?"
        r"(?:#\w+,\s+)?([0-9a-f]+) <", objdump, re.M)]
    assert targets == [b.target - base for b in got[1:12]]

    # vectorised form: section-relative offsets, BL only on request
    addr, tgt = find_branches(np.array(words, dtype=np.uint32))
    assert addr.tolist() == [4 * i for i in (1, 2, 3, 4, 5, 6, 8, 9, 10, 11)]
    assert tgt.tolist() == [0] * 6 + [56] * 4
    addr, _ = find_branches(np.array(words, dtype=np.uint32), calls=True)
    assert 28 in addr.tolist()


def test_branch_extreme_offsets():
    # B with the most negative imm26, CBZ with the largest positive imm19
    b = decode_branch(0x14000000 | 0x2000000, 0x10000000)
    assert b.target == 0x10000000 - (1 << 27)
    c = decode_branch(0xB4000000 | (0x3FFFF << 5), 0)
    assert c.kind == "cbz" and c.target == 4 * 0x3FFFF
    addr, tgt = find_branches(np.array([0x14000000 | 0x2000000], dtype=np.uint32))
    assert tgt.tolist() == [-(1 << 27)]


def test_atomic_keys_of_instructions_binutils_assembles(tmp_path):
    """Every LSE atomic, CAS/CASP, store-exclusive and the look-alikes that are not atomics
    (LDXR, LDAR, STLR, LDAPR, LDR), assembled by binutils: the key each must get."""
    import shutil
    import struct
    import subprocess

    from orchestrator.kernel.aarch64 import classify_atomic

    if shutil.which("aarch64-linux-gnu-as") is None:
        pytest.fail("aarch64-linux-gnu-as missing; run `mmlab doctor --install`")
    src = Path(__file__).parent / "data" / "plugin" / "atomics.s"
    subprocess.run(["aarch64-linux-gnu-as", "-march=armv8.4-a", "-o", str(tmp_path / "a.o"),
                    str(src)], check=True)
    subprocess.run(["aarch64-linux-gnu-objcopy", "-O", "binary", "-j", ".text",
                    str(tmp_path / "a.o"), str(tmp_path / "a.bin")], check=True)
    data = (tmp_path / "a.bin").read_bytes()
    rows = [ln.split("//") for ln in src.read_text().splitlines()
            if ln.strip() and not ln.startswith("//")]
    assert len(data) == 4 * len(rows)
    for i, (insn, want) in enumerate(rows):
        (word,) = struct.unpack_from("<I", data, 4 * i)
        got = classify_atomic(word) or "-"
        assert got == want.strip(), f"{insn.strip()} ({word:08x}): {got}, want {want.strip()}"
