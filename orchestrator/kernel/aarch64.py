"""AArch64 instruction-word classification: barriers, TLB invalidations and branches.

The barrier census (:mod:`orchestrator.kernel.elfinspect`) reads a kernel's code as an array of
32-bit little-endian words and needs to know, for each word, whether it is a DSB/DMB/ISB
(and with which shareability domain), a TLBI (and which operation), or a direct branch (and
where it goes, to find loops). Only these few instruction classes are decoded; everything
else is "not interesting". Two forms are provided:

* scalar helpers (:func:`classify`, :func:`decode_branch`) for one word, used by tests and
  for naming the (few) interesting words;
* vectorised helpers (:func:`find_barriers`, :func:`find_branches`) over a numpy array of
  words, so a whole kernel ``.text`` (millions of words) is scanned in milliseconds instead
  of a Python loop per word.

Encodings (Arm ARM, "Barriers" and "System instructions"; checked against GNU as 2.40):

* ``DSB <opt>``: ``(w & 0xFFFFF0FF) == 0xD503309F``, CRm = ``(w >> 8) & 0xF`` is the
  option. CRm 0 is SSBB and CRm 4 is PSSBB (speculation barriers, not DSBs): excluded.
  CRm 8 and 12 are reserved options that execute as ``DSB SY``; named ``dsb.#8``/``dsb.#12``.
* ``DSB <opt>nXS`` (FEAT_XS): ``(w & 0xFFFFF3FF) == 0xD503323F``, imm2 = ``(w >> 10) & 3``.
* ``DMB <opt>``: ``(w & 0xFFFFF0FF) == 0xD50330BF``.
* ``ISB``: ``(w & 0xFFFFF0FF) == 0xD50330DF`` (CRm 15 = SY, the only defined option).
* ``TLBI <op>``: a SYS instruction with CRn = 8:
  ``(w & 0xFFF8F000) == 0xD5088000``; op1 = bits 18:16 (0 = EL1 ops, 4 = EL2, 6 = EL3),
  CRm = bits 11:8, op2 = bits 7:5, Rt = bits 4:0.
* Branches: ``B`` ``0x14000000/0xFC000000`` (imm26), ``BL`` ``0x94000000/0xFC000000``,
  ``B.cond``/``BC.cond`` ``0x54000000/0xFF000000`` (imm19), ``CBZ``/``CBNZ``
  ``0x34000000/0x7E000000`` (imm19, bit 24 = NZ), ``TBZ``/``TBNZ``
  ``0x36000000/0x7E000000`` (imm14, bit 24 = NZ). Offsets are in words, signed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Barrier option (CRm) -> name, shared by DSB and DMB.
BARRIER_OPTIONS: dict[int, str] = {
    0b0001: "oshld",
    0b0010: "oshst",
    0b0011: "osh",
    0b0101: "nshld",
    0b0110: "nshst",
    0b0111: "nsh",
    0b1001: "ishld",
    0b1010: "ishst",
    0b1011: "ish",
    0b1101: "ld",
    0b1110: "st",
    0b1111: "sy",
}

# DSB nXS imm2 -> domain.
NXS_OPTIONS: dict[int, str] = {0: "oshnxs", 1: "nshnxs", 2: "ishnxs", 3: "synxs"}

DSB_MASK, DSB_VALUE = 0xFFFFF0FF, 0xD503309F
DSB_NXS_MASK, DSB_NXS_VALUE = 0xFFFFF3FF, 0xD503323F
DMB_MASK, DMB_VALUE = 0xFFFFF0FF, 0xD50330BF
ISB_MASK, ISB_VALUE = 0xFFFFF0FF, 0xD50330DF
TLBI_MASK, TLBI_VALUE = 0xFFF8F000, 0xD5088000
SSBB = 0xD503309F
PSSBB = 0xD503349F

# TLBI operations by (op1, CRm, op2). EL1 (op1 = 0) ops in full, including the
# outer-shareable (FEAT_TLBIOS) and range (FEAT_TLBIRANGE) forms; the common EL2/EL3 ones.
TLBI_OPS: dict[tuple[int, int, int], str] = {}


def _tlbi_table() -> None:
    by_level = {0: "e1", 4: "e2", 6: "e3"}
    suffix_by_crm = {0b0011: "is", 0b0111: "", 0b0001: "os"}
    for crm, sfx in suffix_by_crm.items():
        # EL1, by op2
        for op2, stem in {0: "vmalle1", 1: "vae1", 2: "aside1", 3: "vaae1", 5: "vale1",
                          7: "vaale1"}.items():
            TLBI_OPS[(0, crm, op2)] = stem + sfx
        # EL2 and EL3 ops that exist in these CRm groups
        for op1 in (4, 6):
            lvl = by_level[op1]
            TLBI_OPS[(op1, crm, 0)] = f"all{lvl}{sfx}"
            TLBI_OPS[(op1, crm, 1)] = f"va{lvl}{sfx}"
            TLBI_OPS[(op1, crm, 5)] = f"val{lvl}{sfx}"
        TLBI_OPS[(4, crm, 4)] = f"alle1{sfx}"
        TLBI_OPS[(4, crm, 6)] = f"vmalls12e1{sfx}"
    for crm, sfx in {0b0010: "is", 0b0110: "", 0b0101: "os"}.items():  # range ops
        for op2, stem in {1: "rvae1", 3: "rvaae1", 5: "rvale1", 7: "rvaale1"}.items():
            TLBI_OPS[(0, crm, op2)] = stem + sfx
    # stage-2 by IPA (EL2)
    TLBI_OPS[(4, 0b0000, 1)] = "ipas2e1is"
    TLBI_OPS[(4, 0b0000, 5)] = "ipas2le1is"
    TLBI_OPS[(4, 0b0100, 1)] = "ipas2e1"
    TLBI_OPS[(4, 0b0100, 5)] = "ipas2le1"


_tlbi_table()


def tlbi_name(word: int) -> str:
    """The TLBI operation of a TLBI word, e.g. ``vaale1is``; unknown ones by their fields."""
    op1, crm, op2 = (word >> 16) & 7, (word >> 8) & 0xF, (word >> 5) & 7
    return TLBI_OPS.get((op1, crm, op2), f"op{op1}_c8_c{crm}_{op2}")


def classify(word: int) -> str | None:
    """The census key of one instruction word, or None when it is not a barrier/TLBI.

    Keys: ``dsb.<opt>`` (e.g. ``dsb.ishst``), ``dmb.<opt>``, ``isb``, ``tlbi.<op>`` (e.g.
    ``tlbi.vaale1is``). SSBB and PSSBB share the DSB encoding space but are not DSBs.
    """
    word &= 0xFFFFFFFF
    crm = (word >> 8) & 0xF
    if word & DSB_MASK == DSB_VALUE:
        if crm in (0, 4):  # SSBB, PSSBB
            return None
        return "dsb." + BARRIER_OPTIONS.get(crm, f"#{crm}")
    if word & DSB_NXS_MASK == DSB_NXS_VALUE:
        return "dsb." + NXS_OPTIONS[(word >> 10) & 3]
    if word & DMB_MASK == DMB_VALUE:
        return "dmb." + BARRIER_OPTIONS.get(crm, f"#{crm}")
    if word & ISB_MASK == ISB_VALUE:
        return "isb" if crm == 0xF else f"isb.#{crm}"
    if word & TLBI_MASK == TLBI_VALUE:
        return "tlbi." + tlbi_name(word)
    return None


_LSE_ORDER = ("", ".l", ".a", ".al")  # index: A << 1 | R


def classify_atomic(word: int) -> str | None:
    """The key of an atomic read-modify-write instruction word, or None.

    ``atomic.lse[.a|.l|.al]``: LSE atomic memory operations (LDADD, LDCLR, LDEOR, LDSET,
    LD{S,U}{MAX,MIN}, SWP and the ST* aliases) by ordering (``.al``: fully ordered);
    ``atomic.cas[...]``: CAS/CASP; ``atomic.stxr`` / ``atomic.stlxr``: the store-exclusive of
    an LL/SC loop (STXR/STXP, STLXR/STLXP), one per attempt. LDAPR is a load, not an atomic.
    The QEMU plugin classifies the same way (qemu_plugin/mmlab_barriers.c).
    """
    w = word & 0xFFFFFFFF
    if w & 0x3F200C00 == 0x38200000:
        o3, opc = (w >> 15) & 1, (w >> 12) & 7
        if o3 and opc:
            return None
        return "atomic.lse" + _LSE_ORDER[(w >> 22) & 3]
    if w & 0x3FA07C00 == 0x08A07C00 or w & 0xBFA07C00 == 0x08207C00:
        return "atomic.cas" + _LSE_ORDER[((w >> 22) & 1) << 1 | ((w >> 15) & 1)]
    if w & 0x3FE00000 == 0x08000000 or w & 0xBFE00000 == 0x88200000:
        return "atomic.stlxr" if (w >> 15) & 1 else "atomic.stxr"
    return None


def is_dsb_key(key: str) -> bool:
    return key.startswith("dsb.")


@dataclass(frozen=True)
class Branch:
    """A direct (PC-relative) branch: its kind and absolute target."""

    kind: str  # "b", "bl", "b.cond", "bc.cond", "cbz", "cbnz", "tbz", "tbnz"
    address: int
    target: int

    @property
    def is_call(self) -> bool:
        return self.kind == "bl"

    @property
    def is_backward(self) -> bool:
        return self.target <= self.address


def _sext(value: int, bits: int) -> int:
    sign = 1 << (bits - 1)
    return (value ^ sign) - sign


def decode_branch(word: int, address: int) -> Branch | None:
    """Decode a direct branch at ``address``; None for anything else (incl. BR/BLR/RET)."""
    word &= 0xFFFFFFFF
    top6 = word & 0xFC000000
    if top6 in (0x14000000, 0x94000000):
        kind = "b" if top6 == 0x14000000 else "bl"
        return Branch(kind, address, address + 4 * _sext(word & 0x3FFFFFF, 26))
    if word & 0xFF000000 == 0x54000000:
        kind = "bc.cond" if word & 0x10 else "b.cond"
        return Branch(kind, address, address + 4 * _sext((word >> 5) & 0x7FFFF, 19))
    if word & 0x7E000000 == 0x34000000:
        kind = "cbnz" if word & 0x01000000 else "cbz"
        return Branch(kind, address, address + 4 * _sext((word >> 5) & 0x7FFFF, 19))
    if word & 0x7E000000 == 0x36000000:
        kind = "tbnz" if word & 0x01000000 else "tbz"
        return Branch(kind, address, address + 4 * _sext((word >> 5) & 0x3FFF, 14))
    return None


def find_barriers(words: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Indices of barrier/TLBI words in ``words`` (uint32) and their census keys.

    The masks run over the whole array at once; only the (rare) matching words are named
    one by one, through a per-call cache since the same words repeat.
    """
    w = np.asarray(words, dtype=np.uint32)
    m = w & np.uint32(0xFFFFF0FF)
    crm = (w >> np.uint32(8)) & np.uint32(0xF)
    dsb = (m == DSB_VALUE) & (crm != 0) & (crm != 4)
    hit = (
        dsb
        | (m == DMB_VALUE)
        | (m == ISB_VALUE)
        | ((w & np.uint32(DSB_NXS_MASK)) == DSB_NXS_VALUE)
        | ((w & np.uint32(TLBI_MASK)) == TLBI_VALUE)
    )
    idx = np.flatnonzero(hit)
    cache: dict[int, str] = {}
    keys: list[str] = []
    for word in w[idx].tolist():
        key = cache.get(word)
        if key is None:
            key = cache[word] = classify(word)  # type: ignore[assignment]
        keys.append(key)
    return idx, keys


def find_branches(words: np.ndarray, base: int = 0, *, calls: bool = False) -> tuple[
        np.ndarray, np.ndarray]:
    """Addresses and targets of the direct branches in ``words`` (loaded at ``base``).

    B, B.cond/BC.cond, CBZ/CBNZ, TBZ/TBNZ; BL only when ``calls`` (a call does not make a
    loop). Returns two int64 arrays (addresses ascending). Kernel addresses do not fit
    int64: pass ``base=0`` to get byte offsets into ``words`` and add the base in Python.
    """
    w = np.asarray(words, dtype=np.uint32).astype(np.int64)
    top6 = w & 0xFC000000
    is_b = top6 == 0x14000000
    if calls:
        is_b |= top6 == 0x94000000
    is_bcond = (w & 0xFF000000) == 0x54000000
    is_cb = (w & 0x7E000000) == 0x34000000
    is_tb = (w & 0x7E000000) == 0x36000000
    idx = np.flatnonzero(is_b | is_bcond | is_cb | is_tb)
    sel = w[idx]
    imm26 = ((sel & 0x3FFFFFF) ^ 0x2000000) - 0x2000000
    imm19 = (((sel >> 5) & 0x7FFFF) ^ 0x40000) - 0x40000
    imm14 = (((sel >> 5) & 0x3FFF) ^ 0x2000) - 0x2000
    off = np.where(is_b[idx], imm26, np.where(is_tb[idx], imm14, imm19))
    addr = base + 4 * idx.astype(np.int64)
    return addr, addr + 4 * off
