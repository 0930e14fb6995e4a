"""Kernel paths that update arm64 kernel page tables, mirroring the C functions they name.

Sources followed (6.12: Debian's linux-source-6.12; later behaviour per the feature notes
in features.toml and the seed patches):

- mm/vmalloc.c: ``__vmalloc_node_range`` -> ``__vmalloc_area_node`` -> ``vmap_pages_range``
  -> ``__vmap_pages_range_noflush`` -> ``vmap_small_pages_range_noflush`` /
  ``vmap_range_noflush`` -> ``vmap_{p4d,pud,pmd,pte}_range`` / ``vmap_pages_pte_range``;
  ``vfree`` -> ``remove_vm_area`` -> ``free_unmap_vmap_area`` -> ``vunmap_range_noflush``
  + ``free_vmap_area_noflush`` -> (over ``lazy_max_pages()``) ``drain_vmap_area_work`` ->
  ``__purge_vmap_area_lazy`` -> ``flush_tlb_kernel_range``; ``vm_map_ram``/``vb_alloc`` and
  ``vm_unmap_ram``/``vb_free`` with per-CPU vmap blocks.
- mm/memory.c ``apply_to_page_range`` (lazy section per pte table), arch/arm64/mm/pageattr.c
  ``change_memory_common`` (rodata_full linear alias, ``vm_unmap_aliases``), and the 6.18
  pagewalk form.
- arch/arm64/mm/mmu.c ``__create_pgd_mapping`` for ``map_mem`` (fixmap per table),
  ``pmd_free_pte_page`` / ``pud_free_pmd_page``.

Two execution modes share all decisions: *step* writes every entry through
``Machine.set_pte`` (one modelled store at a time), *batched* writes each run of entries in
one table with ``Machine.set_pte_run``, which applies the same queue/emit rule ``n`` times
in O(1). Tests check that both agree.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from orchestrator.sim import pagetable as P
from orchestrator.sim.machine import Machine

VMAP_BBMAP_BITS = 1024  # pages per per-CPU vmap block (64-bit, large vmalloc space)
VMAP_MAX_ALLOC = 64  # BITS_PER_LONG: larger vm_map_ram goes through alloc_vmap_area
THREAD_ALIGN = 2 * 16384  # arm64 with VMAP_STACK: 2 * THREAD_SIZE
# VA in use below the first free hole when a workload starts. Its exact size is the
# booted kernel's business; what matters is that it is not a multiple of a pte table's
# span (2 MiB): areas then straddle tables at the rate real kernels show (vm_map_ram of 256
# pages: 1.5 pte tables per loop measured on 6.18 and 7.3, not 1.0). One page stands for it.
BOOT_VA_IN_USE = P.PAGE_SIZE


@dataclass
class VmArea:
    addr: int
    size: int  # mapped size, without the guard page
    va_size: int  # size of the vmap_area including the guard
    pages: range  # pfns of the backing pages (contiguous in the model)
    page_shift: int
    pages_array: VmArea | None = None  # area->pages when it was vmalloc'ed itself
    vb: VmapBlock | None = None

    @property
    def nr_pages(self) -> int:
        return self.size >> P.PAGE_SHIFT


@dataclass
class VmapBlock:
    va_start: int
    free: int = VMAP_BBMAP_BITS
    dirty: int = 0
    next_off: int = 0


@dataclass
class Kernel:
    m: Machine
    batched: bool = False
    ncpus_online: int = 1
    ptdump_debugfs: bool = True  # CONFIG_PTDUMP_DEBUGFS (mmlab's default kernel has it)
    hugetlb_page: bool = True  # CONFIG_HUGETLB_PAGE: vmap_pte_range's contpte mapping
    va_in_use: int = -1  # VA held below the first free hole; -1: BOOT_VA_IN_USE
    debug_pagealloc: bool = False
    rodata_full: bool = True  # CONFIG_RODATA_FULL_DEFAULT_ENABLED
    free: list[list[int]] = field(default_factory=list)  # sorted [start, end) holes
    lazy: list[tuple[int, int]] = field(default_factory=list)
    lazy_nr: int = 0
    purges: int = 0
    vb_cur: VmapBlock | None = None
    ptdump_key: int = 0  # static key count (seed 003)
    init_mm_lock: int = 0  # >0 readers, -1 writer

    def __post_init__(self) -> None:
        self.pt = self.m.pt
        if self.batched:
            self.pt.np_leaf = True
        # the kernel's own vmalloc users (module, stacks, ...) hold VA before a test starts:
        # the free space starts at an offset that is in general not pte-table aligned
        if self.va_in_use < 0:
            self.va_in_use = BOOT_VA_IN_USE
        start = P.VMALLOC_START + self.va_in_use
        self.free = [[start, P.VMALLOC_END]]
        self._starts = [start]
        f = self.m.f
        self.vmalloc_lazy = "vmalloc_lazy_mmu" in f
        # vmap_contpte: arch_vmap_pte_supported_shift() gives vmalloc_huge 64K chunks (each
        # its own vmap_range_noflush); only with CONFIG_HUGETLB_PAGE does vmap_pte_range map
        # a chunk as one contpte block (set_huge_pte_at), else pte by pte
        self.contpte_shift = "vmap_contpte" in f
        self.contpte = self.contpte_shift and self.hugetlb_page
        self.hoist = "set_ptes_hoist_barriers" in f
        # free_vmap_area_noflush: atomic_long_add_return (fully ordered) until the
        # _relaxed form; nr_vmalloc_pages (one relaxed atomic per vmalloc and per vfree)
        # until NR_VMALLOC became a vmstat counter (vmstat work is not modelled)
        self.lazy_nr_order = "relaxed" if "vmap_lazy_nr_relaxed" in f else "full"
        self.nr_vmalloc_atomic = "vmalloc_stat_vmstat" not in f
        self.huge_vmap_pmd = (not self.ptdump_debugfs) or "ptdump_static_key" in f

    # ------------------------------------------------------------------ helpers
    def lazy_max_pages(self) -> int:
        return self.ncpus_online.bit_length() * (32 * 1024 * 1024 // P.PAGE_SIZE)

    def _child(self, t: P.Table, i: int, level: int, path: str) -> P.Table:
        """p?d_alloc(): allocate and populate a missing next-level table."""
        v = t.e[i]
        if v == 0:
            m = self.m
            prev = m.enter(path)
            new = self.pt.new_table(level)
            m.event("table_alloc")
            m.dmb("ishst")  # smp_wmb() before publishing the zeroed table
            m.set_table_entry(t, i, self.pt.table_desc(new))
            m.exit(prev)
            return new
        if not P.is_table(v, t.level):
            raise AssertionError(f"expected a table at {t!r}[{i}], found {v:#x}")
        return self.pt.child(v)

    def _pmd_table(self, addr: int) -> P.Table:
        """Walk pgd -> pud -> pmd for ``addr`` allocating (pud_alloc_track, pmd_alloc_track)."""
        pgd = self.pt.pgd
        pud = self._child(pgd, P.index(addr, 0), 1, "__pud_alloc")
        return self._child(pud, P.index(addr, 1), 2, "__pmd_alloc")

    def _lookup_pmd(self, addr: int) -> P.Table | None:
        t = self.pt.pgd
        for level in (0, 1):
            v = t.e[P.index(addr, level)]
            if not P.is_table(v, level):
                return None
            t = self.pt.child(v)
        return t

    # ------------------------------------------------------------------ VA allocator
    def alloc_vmap_area(self, size: int, align: int) -> int:
        """First fit at the lowest address (the augmented free tree's order)."""
        for k, (s, e) in enumerate(self.free):
            a = -(-s // align) * align
            if a + size <= e:
                del self.free[k]
                del self._starts[k]
                if a + size < e:
                    self._insert_free(a + size, e)
                if s < a:
                    self._insert_free(s, a)
                self.m.event("va_alloc")
                return a
        # no space: purge lazily freed areas and retry (alloc_vmap_area's overflow path)
        if self.lazy:
            self.purge_vmap_area_lazy()
            return self.alloc_vmap_area(size, align)
        raise MemoryError("vmalloc space exhausted")

    def _insert_free(self, s: int, e: int) -> None:
        k = bisect.bisect_left(self._starts, s)
        # merge with neighbours
        if k > 0 and self.free[k - 1][1] == s:
            k -= 1
            s = self.free[k][0]
            del self.free[k]
            del self._starts[k]
        if k < len(self.free) and self.free[k][0] == e:
            e = self.free[k][1]
            del self.free[k]
            del self._starts[k]
        self.free.insert(k, [s, e])
        self._starts.insert(k, s)

    def free_vmap_area_noflush(self, start: int, size: int) -> None:
        self.lazy.append((start, start + size))
        self.lazy_nr += size >> P.PAGE_SHIFT
        self.m.rmw(self.lazy_nr_order)  # atomic_long_add_return[_relaxed](&vmap_lazy_nr)
        self.m.event("va_free_lazy")
        if self.lazy_nr > self.lazy_max_pages():
            # schedule_work(&drain_vmap_work): modelled as running right away
            prev = self.m.enter("drain_vmap_area_work")
            self.purge_vmap_area_lazy()
            self.m.exit(prev)

    def accumulating(self) -> bool:
        """Is lazily freed VA (or a dirty vmap block) building up towards a purge?"""
        vb = self.vb_cur
        return bool(self.lazy_nr) or (vb is not None and vb.dirty > 0)

    def purge_vmap_area_lazy(self) -> None:
        """__purge_vmap_area_lazy(): one kernel-range TLB flush over all lazy areas."""
        if not self.lazy:
            return
        m = self.m
        prev = m.enter("__purge_vmap_area_lazy")
        m.event("purge")
        start = min(s for s, _ in self.lazy)
        end = max(e for _, e in self.lazy)
        m.flush_tlb_kernel_range(start, end)
        for s, e in self.lazy:
            self._insert_free(s, e)
        self.lazy.clear()
        self.lazy_nr = 0
        m.atomic()  # atomic_long_sub(nr_purged_pages, &vmap_lazy_nr)
        self.purges += 1
        m.exit(prev)

    # ------------------------------------------------------------------ vmap (pages)
    def vmap_pages_range(
        self, addr: int, end: int, prot: int, pages: range, page_shift: int
    ) -> None:
        """vmap_pages_range(): __vmap_pages_range_noflush + flush_cache_vmap (no-op on arm64)."""
        m = self.m
        prev = m.enter("__vmap_pages_range_noflush")
        if page_shift == P.PAGE_SHIFT:
            self.vmap_small_pages_range_noflush(addr, end, prot, pages)
        else:
            step = 1 << (page_shift - P.PAGE_SHIFT)
            for i in range(0, len(pages), step):
                a = addr + (i << P.PAGE_SHIFT)
                self.vmap_range_noflush(
                    a, a + (1 << page_shift), pages[i] << P.PAGE_SHIFT, prot, page_shift
                )
        m.exit(prev)

    def vmap_small_pages_range_noflush(self, addr: int, end: int, prot: int, pages: range) -> None:
        k = 0
        pmd, pmd_end = None, 0
        while addr < end:
            nxt = min((addr | (P.PMD_SIZE - 1)) + 1, end)
            if addr >= pmd_end:  # the walk above the pmd level, once per pmd table
                pmd = self._pmd_table(addr)
                pmd_end = (addr | (P.PUD_SIZE - 1)) + 1
            pi = (addr >> P.PMD_SHIFT) & 511
            v = pmd.e[pi]
            n = (nxt - addr) >> P.PAGE_SHIFT
            if self.batched and n == P.PTRS:
                run = self._table_run(pmd, pi, addr, end, v)
                if run >= 3:
                    self._vmap_table_run(pmd, pi, run, prot, pages, k, fresh=(v == 0))
                    k += run * P.PTRS
                    addr += run * P.PMD_SIZE
                    continue
            if v & 3 == P.PMD_TYPE_TABLE:
                pte = self.pt.tables[(v & P.ADDR_MASK) >> P.PAGE_SHIFT]
            elif v == 0:
                pte = self._child(pmd, pi, 3, "__pte_alloc_kernel")
            else:
                raise AssertionError("vmap_pages over a PMD block")
            self.vmap_pages_pte_range(pte, (addr >> P.PAGE_SHIFT) & 511, prot, pages, k, n)
            k += n
            addr = nxt

    @staticmethod
    def _table_run(pmd: P.Table, pi: int, addr: int, end: int, v: int) -> int:
        """How many consecutive pmd slots from ``pi`` are fully covered and all alike:
        all pointing at existing pte tables, or all empty."""
        want_table = v & 3 == P.PMD_TYPE_TABLE
        if not want_table and v != 0:
            return 0
        run = 1
        e = pmd.e
        while pi + run < P.PTRS and addr + (run + 1) * P.PMD_SIZE <= end:
            w = e[pi + run]
            if (w & 3 == P.PMD_TYPE_TABLE) if want_table else (w == 0):
                run += 1
            else:
                break
        return run

    def _vmap_table_run(
        self, pmd: P.Table, pi: int, run: int, prot: int, pages: range, k: int, fresh: bool
    ) -> None:
        """``run`` whole pte tables mapped by identical units (batched model)."""
        pt = self.pt
        tabs: list[P.Table] = []
        stamp0_box: list = [None]

        def unit(j: int) -> None:
            if fresh:
                pte = self._child(pmd, pi + j, 3, "__pte_alloc_kernel")
            else:
                pte = pt.tables[(pmd.e[pi + j] & P.ADDR_MASK) >> P.PAGE_SHIFT]
            tabs.append(pte)
            self.vmap_pages_pte_range(pte, 0, prot, pages, k + j * P.PTRS, P.PTRS)

        def write(j: int, shift: int) -> None:
            if fresh:  # what the allocation did: a new zeroed table, published in the pmd
                pte = pt.new_table(3)
                pmd.e[pi + j] = pt.table_desc(pte)
                if self.m.check:
                    pmd.stamp[pi + j] = int(pmd.stamp[pi]) + (shift << 8)
            else:
                pte = pt.tables[(pmd.e[pi + j] & P.ADDR_MASK) >> P.PAGE_SHIFT]
            first = (pages[k + j * P.PTRS] << P.PAGE_SHIFT) | prot
            if self.m.check:
                stamp0 = stamp0_box[0]
                if stamp0 is None:
                    stamp0 = stamp0_box[0] = int(tabs[0].stamp[P.PTRS - 1]) + (shift << 8)
                pte.defer(first, stamp0)
            else:
                pte.defer(first, None)

        self.m.repeat_units(unit, run, write)

    def vmap_pages_pte_range(
        self, pte: P.Table, i0: int, prot: int, pages: range, k: int, n: int
    ) -> None:
        m = self.m
        prev = m.enter("vmap_pages_pte_range")
        lazy = self.vmalloc_lazy
        if lazy:
            state = m.lazy_enter()
        if self.batched:
            m.set_pte_run(pte, i0, n, (pages[k] << P.PAGE_SHIFT) | prot)
        else:
            set_pte = m.set_pte
            first = (pages[k] << P.PAGE_SHIFT) | prot  # the model's pages are contiguous
            i = i0
            for val in range(first, first + (n << P.PAGE_SHIFT), P.PAGE_SIZE):
                # set_pte_at(&init_mm, addr, pte, mk_pte(page, prot)) -> __set_ptes(nr=1)
                set_pte(pte, i, val)
                i += 1
        if lazy:
            m.lazy_leave(state)
        m.exit(prev)

    # ------------------------------------------------------------------ vmap (phys range)
    def vmap_range_noflush(
        self, addr: int, end: int, phys: int, prot: int, max_page_shift: int
    ) -> None:
        m = self.m
        prev = m.enter("vmap_range_noflush")
        while addr < end:
            nxt = min((addr | (P.PMD_SIZE - 1)) + 1, end)
            pmd = self._pmd_table(addr)
            pi = P.index(addr, 2)
            if not self.vmap_try_huge_pmd(pmd, pi, addr, nxt, phys, prot, max_page_shift):
                self.vmap_pte_range(pmd, pi, addr, nxt, phys, prot, max_page_shift)
            phys += nxt - addr
            addr = nxt
        m.exit(prev)

    def vmap_try_huge_pmd(
        self, pmd: P.Table, pi: int, addr: int, end: int, phys: int, prot: int, max_page_shift: int
    ) -> bool:
        if max_page_shift < P.PMD_SHIFT or not self.huge_vmap_pmd:
            return False
        if end - addr != P.PMD_SIZE or addr % P.PMD_SIZE or phys % P.PMD_SIZE:
            return False
        m = self.m
        if pmd.e[pi] & P.PTE_VALID:  # pmd_present: a pte table left from earlier small maps
            self.pmd_free_pte_page(pmd, pi, addr)
        prev = m.enter("pmd_set_huge")
        m.set_table_entry(pmd, pi, (phys & P.ADDR_MASK) | (prot & ~P.PTE_TABLE_BIT))
        m.exit(prev)
        return True

    def vmap_pte_range(
        self, pmd: P.Table, pi: int, addr: int, end: int, phys: int, prot: int, max_page_shift: int
    ) -> None:
        m = self.m
        pte = self._child(pmd, pi, 3, "__pte_alloc_kernel")
        prev = m.enter("vmap_pte_range")
        lazy = self.vmalloc_lazy
        if lazy:
            state = m.lazy_enter()
        i = P.index(addr, 3)
        while addr < end:
            size = self.arch_vmap_pte_range_map_size(addr, end, phys, max_page_shift)
            if size == P.CONT_PTE_SIZE:
                self.set_huge_pte_at(pte, i, (phys & P.ADDR_MASK) | prot | P.PTE_CONT)
                n = P.CONT_PTES
            else:
                n = 1
                if self.batched:
                    lim = end
                    if self.contpte and max_page_shift >= P.CONT_PTE_SHIFT:
                        lim = min(end, (addr | (P.CONT_PTE_SIZE - 1)) + 1)
                    n = (lim - addr) >> P.PAGE_SHIFT
                    m.set_pte_run(pte, i, n, phys | prot)
                else:
                    m.set_pte(pte, i, phys | prot)
            i += n
            addr += n << P.PAGE_SHIFT
            phys += n << P.PAGE_SHIFT
        if lazy:
            m.lazy_leave(state)
        m.exit(prev)

    def arch_vmap_pte_range_map_size(
        self, addr: int, end: int, phys: int, max_page_shift: int
    ) -> int:
        if not self.contpte or max_page_shift < P.CONT_PTE_SHIFT:
            return P.PAGE_SIZE
        if end - addr < P.CONT_PTE_SIZE or addr % P.CONT_PTE_SIZE or phys % P.CONT_PTE_SIZE:
            return P.PAGE_SIZE
        return P.CONT_PTE_SIZE

    def set_huge_pte_at(self, pte: P.Table, i: int, val: int) -> None:
        """set_huge_pte_at() for a contpte block -> __set_ptes_anysz(nr=16)."""
        m = self.m
        if self.hoist:  # stores with __set_pte_nosync, one __set_pte_complete
            if self.batched:
                m.set_pte_run(pte, i, P.CONT_PTES, val, sync=False)
            else:
                for j in range(P.CONT_PTES):
                    m.set_pte_nosync(pte, i + j, val + (j << P.PAGE_SHIFT))
            m.set_pte_complete(val)
        elif self.batched:
            m.set_pte_run(pte, i, P.CONT_PTES, val)
        else:
            for j in range(P.CONT_PTES):
                m.set_pte(pte, i + j, val + (j << P.PAGE_SHIFT))

    # ------------------------------------------------------------------ vunmap
    def vunmap_range_noflush(self, addr: int, end: int) -> None:
        m = self.m
        prev = m.enter("vunmap_range_noflush")
        pmd, pmd_end = None, 0
        while addr < end:
            nxt = min((addr | (P.PMD_SIZE - 1)) + 1, end)
            if addr >= pmd_end:
                pmd = self._lookup_pmd(addr)
                pmd_end = (addr | (P.PUD_SIZE - 1)) + 1
            if pmd is not None:
                pi = (addr >> P.PMD_SHIFT) & 511
                v = pmd.e[pi]
                if P.is_block(v, 2):  # pmd_clear_huge
                    pmd.e[pi] = 0
                    m.event("pmd_clear")
                elif P.is_table(v, 2):
                    n = (nxt - addr) >> P.PAGE_SHIFT
                    if self.batched and n == P.PTRS:
                        run = self._table_run(pmd, pi, addr, end, v)
                        if run >= 3:
                            tabs = [
                                self.pt.tables[(pmd.e[pi + j] & P.ADDR_MASK) >> P.PAGE_SHIFT]
                                for j in range(run)
                            ]
                            m.repeat_units(
                                lambda j, tabs=tabs: self.vunmap_pte_range(tabs[j], 0, P.PTRS),
                                run,
                                lambda j, shift, tabs=tabs: P.clear_run(tabs[j]),
                            )
                            addr += run * P.PMD_SIZE
                            continue
                    self.vunmap_pte_range(
                        self.pt.tables[(v & P.ADDR_MASK) >> P.PAGE_SHIFT],
                        (addr >> P.PAGE_SHIFT) & 511,
                        n,
                    )
            addr = nxt
        m.exit(prev)

    def vunmap_pte_range(self, pte: P.Table, i0: int, n: int) -> None:
        m = self.m
        prev = m.enter("vunmap_pte_range")
        lazy = self.vmalloc_lazy
        if lazy:
            state = m.lazy_enter()
        if self.batched:
            m.clear_pte_run(pte, i0, n)
        else:
            clear = m.clear_pte
            for j in range(n):
                clear(pte, i0 + j)  # ptep_get_and_clear(): xchg, no barrier
        m.atomic(n)  # ptep_get_and_clear() is xchg_relaxed: one atomic per pte, set or not
        if lazy:
            m.lazy_leave(state)
        m.exit(prev)

    # ------------------------------------------------------------------ vmalloc / vfree
    def vmalloc(
        self, size: int, huge: bool = False, align: int = P.PAGE_SIZE, what: str = "vmalloc"
    ) -> VmArea:
        """__vmalloc_node_range(): VA, backing pages (and their array), then the mapping."""
        m = self.m
        prev = m.enter("__vmalloc_node_range")
        size = -(-size // P.PAGE_SIZE) * P.PAGE_SIZE
        shift = P.PAGE_SHIFT
        if huge:  # VM_ALLOW_HUGE_VMAP
            if self.huge_vmap_pmd and size >= P.PMD_SIZE:
                shift = P.PMD_SHIFT
            elif self.contpte_shift and size >= P.CONT_PTE_SIZE:
                shift = P.CONT_PTE_SHIFT  # arm64 arch_vmap_pte_supported_shift()
            align = max(align, 1 << shift)
            size = -(-size // (1 << shift)) * (1 << shift)
        va_size = size + P.PAGE_SIZE  # guard page
        addr = self.alloc_vmap_area(va_size, align)
        nr = size >> P.PAGE_SHIFT
        # __vmalloc_area_node(): area->pages is vmalloc'ed itself when over a page
        array = None
        if nr * 8 > P.PAGE_SIZE:
            array = self.vmalloc(nr * 8, what="vmalloc(pages array)")
        pfn = self.pt.alloc_pages(nr, 1 << (shift - P.PAGE_SHIFT))
        # vm_area_alloc_pages(): nr >> order allocations of 2**order pages (huge areas:
        # order 4 for contpte chunks, 9 for PMDs), split into single pages
        m.event("page_alloc", nr >> (shift - P.PAGE_SHIFT))
        area = VmArea(addr, size, va_size, range(pfn, pfn + nr), shift, array)
        self.vmap_pages_range(addr, addr + size, P.PAGE_KERNEL, area.pages, shift)
        if self.nr_vmalloc_atomic:
            m.atomic()  # atomic_long_add(area->nr_pages, &nr_vmalloc_pages)
        m.dmb("ishst")  # clear_vm_uninitialized_flag(): smp_wmb()
        m.exit(prev)
        m.rely_return(what)
        return area

    def vfree(self, area: VmArea) -> None:
        m = self.m
        prev = m.enter("vfree")
        # remove_vm_area() -> free_unmap_vmap_area(): the whole vmap_area, guard page included
        self.vunmap_range_noflush(area.addr, area.addr + area.va_size)
        if self.debug_pagealloc:
            m.flush_tlb_kernel_range(area.addr, area.addr + area.va_size)
        self.free_vmap_area_noflush(area.addr, area.va_size)
        if self.nr_vmalloc_atomic:
            m.atomic()  # atomic_long_sub(vm->nr_pages, &nr_vmalloc_pages)
        m.event("page_free", area.nr_pages)
        m.rmw("full", area.nr_pages)  # each page's refcount drop: put_page_testzero()
        if area.pages_array is not None:
            self.vfree(area.pages_array)  # kvfree(vm->pages)
        m.exit(prev)

    # ------------------------------------------------------------------ vm_map_ram
    def vm_map_ram(self, pages: range) -> VmArea:
        m = self.m
        prev = m.enter("vm_map_ram")
        count = len(pages)
        size = count << P.PAGE_SHIFT
        if count <= VMAP_MAX_ALLOC:
            order = max(0, (count - 1).bit_length())
            vb = self.vb_cur
            if vb is None or vb.free < (1 << order):
                # new_vmap_block(): a VMAP_BLOCK_SIZE area aligned to its size
                start = self.alloc_vmap_area(
                    VMAP_BBMAP_BITS * P.PAGE_SIZE, VMAP_BBMAP_BITS * P.PAGE_SIZE
                )
                vb = self.vb_cur = VmapBlock(start)
                m.event("vmap_block_new")
            m.event("vb_alloc")
            addr = vb.va_start + (vb.next_off << P.PAGE_SHIFT)
            vb.next_off += 1 << order
            vb.free -= 1 << order
            area = VmArea(addr, size, 1 << (order + P.PAGE_SHIFT), pages, P.PAGE_SHIFT, vb=vb)
        else:
            # alloc_vmap_area(size, ...): vm_map_ram's areas have no guard page
            addr = self.alloc_vmap_area(size, P.PAGE_SIZE)
            area = VmArea(addr, size, size, pages, P.PAGE_SHIFT)
        self.vmap_pages_range(addr, addr + size, P.PAGE_KERNEL, pages, P.PAGE_SHIFT)
        m.exit(prev)
        m.rely_return("vm_map_ram")
        return area

    def vm_unmap_ram(self, area: VmArea) -> None:
        m = self.m
        prev = m.enter("vm_unmap_ram")
        if area.vb is not None:  # vb_free()
            vb = area.vb
            m.event("vb_free")
            self.vunmap_range_noflush(area.addr, area.addr + area.size)
            if self.debug_pagealloc:
                m.flush_tlb_kernel_range(area.addr, area.addr + area.size)
            vb.dirty += area.va_size >> P.PAGE_SHIFT
            if vb.dirty == VMAP_BBMAP_BITS:  # free_vmap_block()
                if self.vb_cur is vb:
                    self.vb_cur = None
                self.free_vmap_area_noflush(vb.va_start, VMAP_BBMAP_BITS * P.PAGE_SIZE)
        else:  # free_unmap_vmap_area()
            self.vunmap_range_noflush(area.addr, area.addr + area.size)
            if self.debug_pagealloc:
                m.flush_tlb_kernel_range(area.addr, area.addr + area.va_size)
            self.free_vmap_area_noflush(area.addr, area.va_size)
        m.exit(prev)

    # ------------------------------------------------------------------ set_memory_*
    def set_memory(
        self, area: VmArea, set_mask: int, clear_mask: int, what: str = "set_memory"
    ) -> bool:
        """change_memory_common() on a whole vmalloc area."""
        m = self.m
        if area.page_shift != P.PAGE_SHIFT:
            # modelled as refused (-EINVAL): huge-mapped vmalloc areas are not split here
            m.event("set_memory_einval")
            return False
        prev = m.enter("change_memory_common")
        if self.rodata_full and P.PTE_RDONLY in (set_mask, clear_mask):
            for pfn in area.pages:  # the linear-map alias of every backing page
                la = P.PAGE_OFFSET + ((pfn << P.PAGE_SHIFT) - P.PHYS_OFFSET)
                self.ensure_linear_mapped(la, 1)
                self.change_memory_common_range(la, 1, set_mask, clear_mask)
        # vm_unmap_aliases(): purge lazily freed areas (flush only if any)
        p2 = m.enter("_vm_unmap_aliases")
        self.purge_vmap_area_lazy()
        m.exit(p2)
        self.change_memory_common_range(area.addr, area.nr_pages, set_mask, clear_mask)
        m.exit(prev)
        m.rely_return(what)
        return True

    def change_memory_common_range(
        self, start: int, npages: int, set_mask: int, clear_mask: int
    ) -> None:
        """__change_memory_common(): update ptes, then flush_tlb_kernel_range()."""
        m = self.m
        prev = m.enter("__change_memory_common")
        f = m.f
        end = start + (npages << P.PAGE_SHIFT)
        if "set_memory_pagewalk" in f:
            whole = "set_memory_pagewalk_lazy" in f
            if whole:
                state = m.lazy_enter()
            self._walk_ptes(
                start,
                end,
                set_mask,
                clear_mask,
                per_table_lazy="pagewalk_pte_table_hooks" in f and not whole,
                fn="pageattr_pte_entry",
            )
            if whole:
                m.lazy_leave(state)
        else:  # apply_to_page_range(): apply_to_pte_range has a lazy section per table
            self._walk_ptes(
                start, end, set_mask, clear_mask, per_table_lazy=True, fn="apply_to_pte_range"
            )
        m.flush_tlb_kernel_range(start, end)
        m.exit(prev)

    def _walk_ptes(
        self, start: int, end: int, set_mask: int, clear_mask: int, per_table_lazy: bool, fn: str
    ) -> None:
        m = self.m
        addr = start
        while addr < end:
            nxt = min((addr | (P.PMD_SIZE - 1)) + 1, end)
            pmd = self._pmd_table(addr)
            pte = self._child(pmd, P.index(addr, 2), 3, "__pte_alloc_kernel")
            prev = m.enter(fn)
            if per_table_lazy:
                state = m.lazy_enter()
            i0 = P.index(addr, 3)
            n = (nxt - addr) >> P.PAGE_SHIFT
            if self.batched:
                m.update_pte_run(pte, i0, n, set_mask, clear_mask)
            else:
                e = pte.e
                for j in range(i0, i0 + n):
                    m.set_pte(pte, j, (e[j] & ~clear_mask) | set_mask)
            if per_table_lazy:
                m.lazy_leave(state)
            m.exit(prev)
            addr = nxt

    def ensure_linear_mapped(self, va: int, npages: int) -> None:
        """Make sure a linear-map range has ptes (set up silently, as map_mem did at boot)."""
        pmd = self._lookup_pmd(va)
        if pmd is not None and P.is_table(pmd.e[P.index(va, 2)], 2):
            pte = self.pt.child(pmd.e[P.index(va, 2)])
            if all(pte.e[P.index(va, 3) + j] for j in range(min(npages, 512 - P.index(va, 3)))):
                return
        m = self.m
        tok = m.suspend_counting()
        self.create_pgd_mapping(
            va - P.PAGE_OFFSET + P.PHYS_OFFSET,
            va,
            npages << P.PAGE_SHIFT,
            P.PAGE_KERNEL,
            no_block=True,
        )
        m.resume_counting(tok)

    # ------------------------------------------------------------------ DEBUG_PAGEALLOC
    def kernel_map_pages(self, la: int, npages: int, enable: bool) -> None:
        """__kernel_map_pages() -> set_memory_valid() on the linear map."""
        m = self.m
        prev = m.enter("__kernel_map_pages")
        if enable:
            self.change_memory_common_range(la, npages, P.PTE_VALID, 0)
        else:
            self.change_memory_common_range(la, npages, 0, P.PTE_VALID)
        m.exit(prev)
        m.rely_return("__kernel_map_pages")

    # ------------------------------------------------------------------ linear map
    def create_pgd_mapping(
        self,
        phys: int,
        virt: int,
        size: int,
        prot: int,
        no_block: bool = True,
        no_cont: bool = True,
    ) -> None:
        """__create_pgd_mapping() with early_pgtable_alloc(), per the variant's mmu.c."""
        m = self.m
        prev = m.enter("__create_pgd_mapping")
        addr, end = virt, virt + size
        pgd = self.pt.pgd
        while addr < end:
            nxt = min((addr | ((1 << 39) - 1)) + 1, end)
            self._alloc_init_pud(pgd, P.index(addr, 0), addr, nxt, phys, prot, no_block, no_cont)
            phys += nxt - addr
            addr = nxt
        m.exit(prev)

    def _early_pgtable_alloc(self, level: int) -> P.Table:
        m = self.m
        t = self.pt.new_table(level)
        m.event("table_alloc")
        if "linear_map_single_fixmap" not in m.f:
            # zero it through the FIX_PTE slot: map, memset, unmap (+ TLBI)
            p = m.enter("early_pgtable_alloc")
            m.fixmap_map("FIX_PTE")
            m.fixmap_unmap("FIX_PTE")
            m.exit(p)
        return t

    def _table_for(self, parent: P.Table, i: int, level: int, slot: str) -> P.Table:
        """Allocate-or-find the next table and fixmap it for population."""
        m = self.m
        v = parent.e[i]
        if v == 0:
            t = self._early_pgtable_alloc(level)
            if "linear_map_single_fixmap" in m.f:
                m.fixmap_map(slot)  # fixmap once: init_clear_pgtable() + populate
                m.dsb("ishst")  # init_clear_pgtable()
            m.set_table_entry(parent, i, self.pt.table_desc(t))
            if "linear_map_single_fixmap" in m.f:
                return t
        else:
            t = self.pt.child(v)
        m.fixmap_map(slot)
        return t

    def _alloc_init_pud(
        self,
        pgd: P.Table,
        gi: int,
        addr: int,
        end: int,
        phys: int,
        prot: int,
        no_block: bool,
        no_cont: bool,
    ) -> None:
        m = self.m
        p = m.enter("alloc_init_pud")
        pud = self._table_for(pgd, gi, 1, "FIX_PUD")
        while addr < end:
            nxt = min((addr | (P.PUD_SIZE - 1)) + 1, end)
            self._alloc_init_cont_pmd(
                pud, P.index(addr, 1), addr, nxt, phys, prot, no_block, no_cont
            )
            phys += nxt - addr
            addr = nxt
        m.fixmap_unmap("FIX_PUD")
        m.exit(p)

    def _alloc_init_cont_pmd(
        self,
        pud: P.Table,
        ui: int,
        addr: int,
        end: int,
        phys: int,
        prot: int,
        no_block: bool,
        no_cont: bool,
    ) -> None:
        m = self.m
        p = m.enter("alloc_init_cont_pmd")
        per_table = "linear_map_fixmap_per_table" in m.f
        pmd = self._table_for(pud, ui, 2, "FIX_PMD")
        first = True
        while addr < end:
            nxt = min((addr | (P.CONT_PMD_SIZE - 1)) + 1, end)
            if not per_table and not first:
                m.fixmap_map("FIX_PMD")  # init_pmd() remapped per cont-pmd block
            self._init_pmd(pmd, addr, nxt, phys, prot, no_block, no_cont)
            if not per_table and nxt != end:
                m.fixmap_unmap("FIX_PMD")
            first = False
            phys += nxt - addr
            addr = nxt
        m.fixmap_unmap("FIX_PMD")
        m.exit(p)

    def _init_pmd(
        self, pmd: P.Table, addr: int, end: int, phys: int, prot: int, no_block: bool, no_cont: bool
    ) -> None:
        m = self.m
        while addr < end:
            nxt = min((addr | (P.PMD_SIZE - 1)) + 1, end)
            pi = P.index(addr, 2)
            if not no_block and not ((addr | nxt | phys) & (P.PMD_SIZE - 1)):
                p = m.enter("pmd_set_huge")
                m.set_table_entry(pmd, pi, (phys & P.ADDR_MASK) | (prot & ~P.PTE_TABLE_BIT))
                m.exit(p)
            else:
                self._alloc_init_cont_pte(pmd, pi, addr, nxt, phys, prot, no_cont)
            phys += nxt - addr
            addr = nxt

    def _alloc_init_cont_pte(
        self, pmd: P.Table, pi: int, addr: int, end: int, phys: int, prot: int, no_cont: bool
    ) -> None:
        m = self.m
        p = m.enter("alloc_init_cont_pte")
        per_table = "linear_map_fixmap_per_table" in m.f
        nosync = "linear_map_batch_barriers" in m.f
        if per_table or "linear_map_single_fixmap" in m.f:
            pte = self._table_for(pmd, pi, 3, "FIX_PTE")
        else:
            v = pmd.e[pi]
            if v == 0:
                pte = self._early_pgtable_alloc(3)
                m.set_table_entry(pmd, pi, self.pt.table_desc(pte))
            else:
                pte = self.pt.child(v)
        while addr < end:
            nxt = min((addr | (P.CONT_PTE_SIZE - 1)) + 1, end)
            cont = 0
            if not no_cont and not ((addr | nxt | phys) & (P.CONT_PTE_SIZE - 1)):
                cont = P.PTE_CONT
            if not per_table:
                m.fixmap_map("FIX_PTE")  # init_pte() mapped the table per cont block
            i0 = P.index(addr, 3)
            n = (nxt - addr) >> P.PAGE_SHIFT
            base = (phys & P.ADDR_MASK) | prot | cont
            if self.batched:
                m.set_pte_run(pte, i0, n, base, sync=not nosync)
            elif nosync:
                for j in range(n):
                    m.set_pte_nosync(pte, i0 + j, base + j * P.PAGE_SIZE)
            else:
                for j in range(n):
                    m.set_pte(pte, i0 + j, base + j * P.PAGE_SIZE)
            if not per_table:
                m.fixmap_unmap("FIX_PTE")
            phys += nxt - addr
            addr = nxt
        if per_table:
            m.fixmap_unmap("FIX_PTE")
        m.exit(p)

    # ------------------------------------------------------------------ table freeing, ptdump
    def pmd_free_pte_page(self, pmd: P.Table, pi: int, addr: int) -> None:
        m = self.m
        prev = m.enter("pmd_free_pte_page")
        table = self.pt.child(pmd.e[pi])
        pmd.e[pi] = 0  # pmd_clear(): invalid, no barrier
        m.flush_tlb_kernel_pgtable(addr)
        if "ptdump_static_key" in m.f and self.ptdump_key:
            m.event("mmap_read_lock")  # static branch: mmap_read_lock/unlock(&init_mm)
        self.pt.free_table(table)
        m.event("table_free")
        m.exit(prev)

    def pud_free_pmd_page(self, pud: P.Table, ui: int, addr: int) -> None:
        """Free a pmd table (and its pte tables) before a PUD block goes in its place
        (reached from ioremap_page_range/vmap_try_huge_pud; vmalloc never maps PUDs)."""
        m = self.m
        prev = m.enter("pud_free_pmd_page")
        table = self.pt.child(pud.e[ui])
        for pi in range(P.PTRS):
            if table.e[pi] & P.PTE_VALID:
                if P.is_table(table.e[pi], 2):
                    self.pmd_free_pte_page(table, pi, addr + pi * P.PMD_SIZE)
                else:
                    table.e[pi] = 0
        pud.e[ui] = 0  # pud_clear(): invalid, no barrier
        m.flush_tlb_kernel_pgtable(addr)
        if "ptdump_static_key" in m.f and self.ptdump_key:
            m.event("mmap_read_lock")
        self.pt.free_table(table)
        m.event("table_free")
        m.exit(prev)

    def ptdump_walk(self) -> int:
        """ptdump_walk_pgd(): read every entry reachable from swapper_pg_dir (no barriers)."""
        seen = 0
        stack = [self.pt.pgd]
        m = self.m
        while stack:
            t = stack.pop()
            if t.freed:
                m.violate("use-after-free", f"ptdump walks freed {t!r}")
                continue
            for v in t.e:
                if v:
                    seen += 1
                    if P.is_table(v, t.level):
                        stack.append(self.pt.child(v))
        return seen
