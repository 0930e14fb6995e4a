"""AArch64 kernel page tables: levels, descriptors and a software walk.

The model keeps real descriptor bit positions (VMSAv8-64, 4K granule, 48-bit VA, four
levels: pgd/pud/pmd/pte with p4d folded, as arm64 Linux builds it by default) so that the
kernel paths can apply the same predicates the kernel uses (``pte_valid_not_user``,
``pmd_table``...). Tables are Python lists of 512 ints: descriptor values. A table
descriptor stores the child table's id in its output-address field; the id indexes
:attr:`PageTable.tables`, so a walk can notice that it reached a freed table (the
use-after-free that seed 003 is about).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PTRS = 512
LEVEL_SHIFT = {0: 39, 1: 30, 2: 21, 3: 12}  # pgd, pud, pmd, pte (4K granule)
LEVEL_NAME = {0: "pgd", 1: "pud", 2: "pmd", 3: "pte"}
PMD_SHIFT = 21
PUD_SHIFT = 30
PMD_SIZE = 1 << PMD_SHIFT
PUD_SIZE = 1 << PUD_SHIFT
CONT_PTES = 16
CONT_PTE_SHIFT = PAGE_SHIFT + 4
CONT_PTE_SIZE = 1 << CONT_PTE_SHIFT
CONT_PMDS = 16
CONT_PMD_SIZE = PMD_SIZE * CONT_PMDS

# Descriptor bits (arch/arm64/include/asm/pgtable-hwdef.h / pgtable-prot.h)
PTE_VALID = 1 << 0
PTE_TABLE_BIT = 1 << 1  # table (levels 0-2) / page (level 3)
PTE_USER = 1 << 6
PTE_RDONLY = 1 << 7
PTE_SHARED = 3 << 8
PTE_AF = 1 << 10
PTE_NG = 1 << 11
PTE_WRITE = 1 << 51  # DBM
PTE_CONT = 1 << 52
PTE_PXN = 1 << 53
PTE_UXN = 1 << 54
ADDR_MASK = ((1 << 48) - 1) & ~(PAGE_SIZE - 1)

PTE_TYPE_PAGE = PTE_VALID | PTE_TABLE_BIT
PMD_TYPE_TABLE = PTE_VALID | PTE_TABLE_BIT
PMD_TYPE_SECT = PTE_VALID  # block

# PAGE_KERNEL: valid kernel page, not user, never user-executable.
PAGE_KERNEL = PTE_TYPE_PAGE | PTE_AF | PTE_SHARED | PTE_UXN | PTE_PXN | PTE_WRITE
PAGE_KERNEL_RO = (PAGE_KERNEL & ~PTE_WRITE) | PTE_RDONLY
PAGE_USER = PTE_TYPE_PAGE | PTE_AF | PTE_SHARED | PTE_USER | PTE_UXN | PTE_PXN | PTE_NG

_VNU_MASK = PTE_VALID | PTE_USER | PTE_UXN
_VNU_WANT = PTE_VALID | PTE_UXN

# Kernel VA layout (48-bit VA, 4K pages): where the model puts each region.
PAGE_OFFSET = 0xFFFF_0000_0000_0000  # linear map
VMALLOC_START = 0xFFFF_8000_8000_0000
VMALLOC_END = 0xFFFF_FDFF_BFFF_0000
FIXADDR_TOP = 0xFFFF_FDFF_FEC0_0000
PHYS_OFFSET = 0x4000_0000  # QEMU virt RAM base


def pte_valid_not_user(val: int) -> bool:
    """The predicate arm64's __set_pte uses to decide whether barriers are needed."""
    return (val & _VNU_MASK) == _VNU_WANT


def index(va: int, level: int) -> int:
    return (va >> LEVEL_SHIFT[level]) & (PTRS - 1)


def is_table(val: int, level: int) -> bool:
    return level < 3 and (val & 3) == PMD_TYPE_TABLE


def is_block(val: int, level: int) -> bool:
    return level in (1, 2) and (val & 3) == PMD_TYPE_SECT


class Table:
    """One page-table page: 512 descriptors plus bookkeeping for the checker."""

    __slots__ = ("tid", "level", "e", "stamp", "freed", "np")

    def __init__(self, tid: int, level: int):
        self.tid = tid
        self.level = level
        self.np = False
        self.e = [0] * PTRS
        # stamp[i]: (seq << 8) | cpu of the last store to slot i (checker only)
        self.stamp = [0] * PTRS
        self.freed = False

    def __repr__(self) -> str:
        return f"<{LEVEL_NAME[self.level]} table {self.tid:#x}{' FREED' if self.freed else ''}>"


_PFN_STEPS = np.arange(0, PTRS * PAGE_SIZE, PAGE_SIZE, dtype=np.int64)


class NpTable:
    """A leaf table for the batched model: numpy storage, and whole-table writes kept
    pending (first entry, stamp) until something reads the table. Repeated map/unmap of
    the same tables then costs O(1) per table."""

    __slots__ = ("tid", "level", "_e", "_stamp", "_pend", "freed", "np")

    def __init__(self, tid: int, level: int):
        self.tid = tid
        self.level = level
        self.np = True
        self._e = None
        self._stamp = None
        self._pend = None  # (first entry or None for zeros, stamp or None to keep)
        self.freed = False

    def _materialize(self) -> None:
        if self._e is None:
            self._e = np.zeros(PTRS, dtype=np.int64)
            self._stamp = np.zeros(PTRS, dtype=np.int64)
        if self._pend is not None:
            first, stamp = self._pend
            self._pend = None
            if first is None:
                self._e.fill(0)
            else:
                np.add(_PFN_STEPS, first, out=self._e)
            if stamp is not None:
                self._stamp.fill(stamp)

    @property
    def e(self):
        if self._pend is not None or self._e is None:
            self._materialize()
        return self._e

    @property
    def stamp(self):
        if self._pend is not None or self._e is None:
            self._materialize()
        return self._stamp

    def defer(self, first: int | None, stamp: int | None) -> None:
        """The whole table becomes first, first+PAGE_SIZE, ... (or zeros when None)."""
        if stamp is None and self._pend is not None:
            stamp = self._pend[1]
        self._pend = (first, stamp)

    def __repr__(self) -> str:
        return f"<{LEVEL_NAME[self.level]} table {self.tid:#x}{' FREED' if self.freed else ''}>"


def is_np(t: Table) -> bool:
    return t.np


def entry_run(t: Table, first: int, n: int, step: int = PAGE_SIZE):
    """Entries first, first+step, ... (consecutive pfns) in the table's storage kind."""
    if t.np:
        return _PFN_STEPS[:n] + first
    return list(range(first, first + n * step, step))


def write_run(t: Table, i0: int, n: int, first: int) -> None:
    """t.e[i0:i0+n] = first, first+PAGE_SIZE, ... without temporaries for numpy tables."""
    if t.np:
        np.add(_PFN_STEPS[:n], first, out=t.e[i0 : i0 + n])
    else:
        t.e[i0 : i0 + n] = range(first, first + n * PAGE_SIZE, PAGE_SIZE)


def clear_run(t: Table) -> None:
    if t.np:
        t.defer(None, None)
    else:
        t.e[:] = [0] * PTRS


def fill_run(t: Table, value: int, n: int):
    if t.np:
        return value
    return [value] * n


@dataclass
class PageTable:
    """init_mm's page tables (swapper_pg_dir) plus a physical page allocator."""

    tables: dict[int, Table] = field(default_factory=dict)
    next_pfn: int = PHYS_OFFSET >> PAGE_SHIFT
    freed_tables: int = 0
    np_leaf: bool = False  # leaf (pte) tables as numpy arrays (batched model)

    def __post_init__(self) -> None:
        self.pgd = self.new_table(0)
        self.swapper_tid = self.pgd.tid

    def alloc_pages(self, n: int = 1, align_pages: int = 1) -> int:
        """Physical frames (bump allocator, never reused: frees are irrelevant to counts)."""
        pfn = -(-self.next_pfn // align_pages) * align_pages
        self.next_pfn = pfn + n
        return pfn

    def new_table(self, level: int) -> Table:
        tid = self.alloc_pages(1)
        t = NpTable(tid, level) if self.np_leaf and level == 3 else Table(tid, level)
        self.tables[t.tid] = t
        return t

    def free_table(self, t: Table) -> None:
        t.freed = True
        self.freed_tables += 1

    def child(self, val: int) -> Table:
        return self.tables[(val & ADDR_MASK) >> PAGE_SHIFT]

    @staticmethod
    def table_desc(t: Table) -> int:
        return (t.tid << PAGE_SHIFT) | PMD_TYPE_TABLE | PTE_UXN

    def lookup(self, va: int) -> list[tuple[Table, int]]:
        """Software walk: the (table, index) slots used to translate ``va``, root first."""
        out = []
        t = self.pgd
        for level in range(4):
            i = index(va, level)
            out.append((t, i))
            v = t.e[i]
            if not is_table(v, level):
                break
            t = self.child(v)
        return out

    def translate(self, va: int) -> int | None:
        """Physical address for ``va`` from the committed tables, or None (fault)."""
        slots = self.lookup(va)
        t, i = slots[-1]
        v = int(t.e[i])
        if not v & PTE_VALID:
            return None
        shift = LEVEL_SHIFT[t.level]
        return (v & ADDR_MASK & ~((1 << shift) - 1)) | (va & ((1 << shift) - 1))
