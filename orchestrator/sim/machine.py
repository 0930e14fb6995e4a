"""CPUs, tasks, lazy-MMU state and the barrier instructions, with per-path counters.

This is where a variant's features turn into behaviour. Every modelled pte/pmd/pud store
goes through :meth:`Machine.set_pte` (arm64 ``__set_pte``) or its siblings; whether the
``dsb(ishst); isb()`` pair is emitted there, queued in the task's TIF_LAZY_MMU_PENDING, or
emitted later by ``leave()`` follows the variant's feature set, exactly as the kernel's
``queue_pte_barriers()`` / ``arch_{enter,leave,flush}_lazy_mmu_mode()`` do. Counts are
never looked up; they are what the executed paths emitted.

Counting attribution: each instruction is charged to the kernel function (``path``) whose
body it sits in after header helpers are inlined (``__set_pte``, ``flush_tlb_kernel_range``
and the lazy-MMU hooks are static inlines, so their barriers land in their caller).

Checker bookkeeping (``check=True``): every valid kernel store gets a sequence number and a
stamp (seq, cpu) on its slot; a DSB on a CPU completes all earlier stores of that CPU; an
ISB (or exception return) on a CPU discards speculatively fetched invalid translations.
The :mod:`orchestrator.sim.checker` rules read these at the points where the kernel relies
on a mapping.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from orchestrator.sim import pagetable as P
from orchestrator.sim.features import Variant, resolve_variant

# The instruction an atomic RMW of each order becomes, as the barrier plugin names it
# (orchestrator/kernel/aarch64.py classify_atomic): LSE ops carry their ordering (.al = acquire +
# release); LL/SC loops end in a store-exclusive, a store-release one (stlxr) when fully
# ordered, followed by dmb ish (counted by Machine.rmw).
RMW_KEYS = {
    "lse": {"relaxed": "atomic.lse", "full": "atomic.lse.al"},
    "llsc": {"relaxed": "atomic.stxr", "full": "atomic.stlxr"},
}

LAZY_MMU_DEFAULT = 0
LAZY_MMU_NESTED = 1


class Ctx:
    """An execution context: a task (thread flags live here) or an interrupt handler."""

    __slots__ = (
        "name",
        "is_irq",
        "lazy",
        "pending",
        "enable_count",
        "pause_count",
        "last_store",
        "last_store_cpu",
        "cpu",
    )

    def __init__(self, name: str, is_irq: bool = False):
        self.name = name
        self.is_irq = is_irq
        self.lazy = False  # TIF_LAZY_MMU
        self.pending = False  # TIF_LAZY_MMU_PENDING
        self.enable_count = 0  # generic nesting: lazy_mmu_state.enable_count
        self.pause_count = 0
        self.last_store = 0  # seq of this context's last valid kernel store
        self.last_store_cpu: CPU | None = None
        self.cpu: CPU | None = None

    def __repr__(self) -> str:
        return f"<{'irq' if self.is_irq else 'task'} {self.name}>"


class CPU:
    __slots__ = ("id", "task", "irq", "last_dsb", "last_isb")

    def __init__(self, cid: int):
        self.id = cid
        self.task: Ctx | None = None
        self.irq: list[Ctx] = []  # nested interrupt contexts currently running
        self.last_dsb = 0  # seq at the last DSB (completes this CPU's earlier stores)
        self.last_isb = 0  # seq at the last ISB / context synchronisation event

    def __repr__(self) -> str:
        return f"<cpu{self.id}>"


@dataclass
class Violation:
    rule: str
    message: str
    seq: int
    path: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message} (in {self.path}, seq {self.seq})"


class SafetyError(AssertionError):
    """Raised in strict mode when a checker rule is broken."""

    def __init__(self, v: Violation):
        super().__init__(str(v))
        self.violation = v


@dataclass
class Machine:
    """A multi-CPU arm64 kernel image of one variant, executing modelled kernel paths."""

    variant: Variant | str
    ncpus: int = 1
    check: bool = True
    strict: bool = False
    pt: P.PageTable = field(default_factory=P.PageTable)
    # how the kernel's atomics execute: "lse" (ARM64_USE_LSE_ATOMICS on a CPU with LSE, or
    # 7.x where LSE is always built in) or "llsc" (load/store-exclusive loops; fully
    # ordered ones end in dmb ish)
    atomics: str = "lse"

    def __post_init__(self) -> None:
        self.variant = resolve_variant(self.variant)
        if self.atomics not in RMW_KEYS:
            raise ValueError(f"atomics must be one of {', '.join(RMW_KEYS)}, not {self.atomics!r}")
        self._rmw_keys = RMW_KEYS[self.atomics]
        v = self.variant
        self.f = v.features
        self.batching = v.has("arm64_lazy_mmu_batching")
        self.irq_guard = v.has("lazy_mmu_no_batch_in_irq")
        self.nesting = v.nesting
        # the mmlab demo's nesting (series/lazy-mmu-6.12 0003): a depth count in thread_info,
        # TIF_LAZY_MMU set (relaxed) only by the outermost enter, instead of seed 001's
        # test_and_set_thread_flag (fully ordered) on every enter
        self.depth_counter = v.has("lazy_mmu_depth_counter")
        # series/no-batching-7.3: queue_pte_barriers() emits at once; the lazy sections and
        # their flush (test_and_clear_thread_flag) stay
        self.unbatched = v.has("pte_barriers_unbatched")
        self.leave_flushes = not v.has("broken_leave_no_flush")
        self.switch_dsb = not v.has("broken_switch_no_dsb")
        self.cpus = [CPU(i) for i in range(self.ncpus)]
        self.tasks: list[Ctx] = []
        for c in self.cpus:
            t = Ctx(f"task{c.id}")
            t.cpu = c
            c.task = t
            self.tasks.append(t)
        self.cur = self.cpus[0]
        self.seq = 1
        self.counts: dict[tuple[str, str], dict[str, int]] = {}
        self.events: dict[tuple[str, str], dict[str, int]] = {}
        self.violations: list[Violation] = []
        self.warnings: list[str] = []
        self.path = "<root>"
        self.op = ""
        self._byop: dict[str, dict[str, tuple[dict, dict]]] = {}
        self._pc = self._byop.setdefault("", {})
        self._c, self._e = self._ce(self.path)
        # hot-path tallies, folded into the (op, path) counters whenever the path changes
        self._nb = 0  # emit_pte_barriers() calls: dsb(ishst) + isb each
        self._na = 0  # set_thread_flag(TIF_LAZY_MMU_PENDING) atomics (relaxed)
        self._ns = 0  # pte stores
        self._defer = False  # would a valid kernel pte write be queued right now?
        self._ctx = self.cur.task
        self._queue = self._queue_batching if self.batching else self._emit
        if not self.check:
            self._emit = self._emit_nocheck  # type: ignore[method-assign]
            if not self.batching:
                self._queue = self._emit_nocheck
            # same decisions as set_pte(), without the checker's bookkeeping
            self.set_pte = (
                self._set_pte_batching_nocheck
                if self.batching  # type: ignore
                else self._set_pte_nocheck
            )

    # ---- counters -------------------------------------------------------------------
    # Counters are keyed by (operation, kernel path): the workload runner names the
    # operation (``set_op``), kernel paths name themselves (``enter``/``exit``).
    def _ce(self, path: str) -> tuple[dict, dict]:
        ce = self._pc.get(path)
        if ce is None:
            key = (self.op, path)
            c = self.counts.get(key)
            if c is None:
                c = self.counts[key] = defaultdict(int)
            e = self.events.get(key)
            if e is None:
                e = self.events[key] = defaultdict(int)
            ce = self._pc[path] = (c, e)
        return ce

    def _fold(self) -> None:
        nb = self._nb
        if nb:
            c = self._c
            c["dsb.ishst"] += nb
            c["isb"] += nb
            self._e["B"] += nb
            self._nb = 0
        if self._na:
            self._c["atomic"] += self._na
            self._c[self._rmw_keys["relaxed"]] += self._na
            self._na = 0
        if self._ns:
            self._e["pte_store"] += self._ns
            self._ns = 0

    def set_op(self, op: str) -> None:
        self._fold()
        self.op = op
        self._pc = self._byop.setdefault(op, {})
        self._c, self._e = self._ce(self.path)

    def enter(self, path: str) -> str:
        """Start executing kernel function ``path``; returns the caller's path for exit()."""
        if self._nb or self._na or self._ns:
            self._fold()
        prev = self.path
        self.path = path
        ce = self._pc.get(path) or self._ce(path)
        self._c, self._e = ce
        return prev

    def exit(self, prev: str) -> None:
        if self._nb or self._na or self._ns:
            self._fold()
        self.path = prev
        ce = self._pc.get(prev) or self._ce(prev)
        self._c, self._e = ce

    def totals(self) -> dict[str, int]:
        self._fold()
        out: dict[str, int] = defaultdict(int)
        for c in self.counts.values():
            for k, n in c.items():
                out[k] += n
        return {k: n for k, n in out.items() if n}

    def event_totals(self) -> dict[str, int]:
        self._fold()
        out: dict[str, int] = defaultdict(int)
        for c in self.events.values():
            for k, n in c.items():
                out[k] += n
        return {k: n for k, n in out.items() if n}

    def snapshot(self) -> tuple[dict, dict]:
        """Copy of the (op, path) counters (for per-operation deltas)."""
        self._fold()
        return (
            {p: dict(c) for p, c in self.counts.items()},
            {p: dict(c) for p, c in self.events.items()},
        )

    def suspend_counting(self) -> tuple:
        """Run setup work the workload should not be charged for; see resume_counting()."""
        self._fold()
        tok = (self.counts, self.events, self._byop, self._pc, self.check, self.path)
        self.counts, self.events, self._byop = {}, {}, {}
        self._pc = self._byop.setdefault(self.op, {})
        self._c, self._e = self._ce(self.path)
        self.check = False
        return tok

    def resume_counting(self, tok: tuple) -> None:
        self._nb = self._na = self._ns = 0
        self.counts, self.events, self._byop, self._pc, self.check, self.path = tok
        self._c, self._e = self._ce(self.path)

    # ---- context ----------------------------------------------------------------------
    @property
    def ctx(self) -> Ctx:
        c = self.cur
        return c.irq[-1] if c.irq else c.task

    @property
    def task(self) -> Ctx:
        return self.cur.task

    def in_interrupt(self) -> bool:
        return bool(self.cur.irq)

    def _refresh(self) -> None:
        """Recompute the cached context and the queue-or-emit decision after any change
        to lazy state, interrupt nesting or the running task."""
        self._ctx = self.ctx
        self._defer = self.batching and not self.unbatched and self._is_lazy_active()

    def on_cpu(self, cid: int) -> None:
        self._fold()
        self.cur = self.cpus[cid]
        self._refresh()

    # ---- instructions -----------------------------------------------------------------
    def dsb(self, dom: str) -> None:
        self._c["dsb." + dom] += 1
        self.seq += 1
        self.cur.last_dsb = self.seq

    def isb(self) -> None:
        self._c["isb"] += 1
        self.seq += 1
        self.cur.last_isb = self.seq

    def dmb(self, dom: str) -> None:
        self._c["dmb." + dom] += 1

    def tlbi(self, op: str, n: int = 1) -> None:
        self._c["tlbi." + op] += n

    def atomic(self, n: int = 1) -> None:
        """A relaxed atomic RMW (set_thread_flag, clear_thread_flag, xchg_relaxed ...)."""
        self.rmw("relaxed", n)

    def rmw(self, order: str, n: int = 1) -> None:
        """``n`` atomic read-modify-writes of ``order`` "relaxed" or "full" (fully ordered:
        test_and_clear_bit, atomic_*_return, atomic_dec_and_test). Counted as ``atomic`` and
        by the instruction the plugin sees (RMW_KEYS); with LL/SC a fully ordered one is a
        store-release exclusive loop followed by ``dmb ish``."""
        c = self._c
        c["atomic"] += n
        c[self._rmw_keys[order]] += n
        if order == "full" and self.atomics == "llsc":
            c["dmb.ish"] += n

    def event(self, name: str, n: int = 1) -> None:
        self._e[name] += n

    def context_sync(self) -> None:
        """Exception entry/return: context-synchronising like an ISB, but not an instruction."""
        self.seq += 1
        self.cur.last_isb = self.seq

    # ---- pte barriers (arch/arm64/include/asm/pgtable.h) ------------------------------
    def _emit(self) -> None:
        """emit_pte_barriers(): dsb(ishst); isb()."""
        self._nb += 1
        self.seq = s = self.seq + 1
        cur = self.cur
        cur.last_dsb = s
        cur.last_isb = s

    def _emit_nocheck(self) -> None:
        self._nb += 1

    def _is_lazy_active(self) -> bool:
        """Would a pte write be deferred right now? (queue_pte_barriers' test)"""
        cur = self.cur
        if cur.irq:
            if self.irq_guard or self.nesting == "generic":
                return False
            # 5fdd05efa1cd alone: current is the interrupted task; its flag decides
        t = cur.task
        if t is None:
            return False
        if self.nesting == "generic":
            return t.enable_count > 0 and t.pause_count == 0
        return t.lazy

    def _queue_batching(self) -> None:
        if self._defer:
            t = self.cur.task
            # "Avoid the atomic op if already set" (6.16 ... 7.3, and the demo series):
            # set_thread_flag(TIF_LAZY_MMU_PENDING) only for the first write of a section
            if not t.pending:
                t.pending = True
                self._na += 1
        else:
            self._emit()

    def queue_pte_barriers_n(self, n: int) -> None:
        """The effect of ``n`` consecutive queue_pte_barriers() calls (batched model)."""
        if n <= 0:
            return
        if self._defer:
            t = self.cur.task
            if not t.pending:  # the flag's atomic, once per section (see _queue_batching)
                t.pending = True
                self._na += 1
        else:
            self._nb += n
            self.seq = s = self.seq + 1
            self.cur.last_dsb = s
            self.cur.last_isb = s

    def _stamp(self, t: P.Table, i: int) -> None:
        self.seq = s = self.seq + 1
        t.stamp[i] = (s << 8) | self.cur.id
        ctx = self._ctx
        ctx.last_store = s
        ctx.last_store_cpu = self.cur

    # __set_pte(): store, then barriers if valid kernel (queued when lazy)
    def set_pte(self, t: P.Table, i: int, val: int) -> None:
        t.e[i] = val
        self._ns += 1
        if (val & 0x40000000000041) == 0x40000000000001:  # pte_valid_not_user
            if self.check:
                self.seq = s = self.seq + 1
                t.stamp[i] = (s << 8) | self.cur.id
                ctx = self._ctx
                ctx.last_store = s
                ctx.last_store_cpu = self.cur
            self._queue()

    def _set_pte_nocheck(self, t: P.Table, i: int, val: int) -> None:
        t.e[i] = val
        self._ns += 1
        if (val & 0x40000000000041) == 0x40000000000001:
            self._nb += 1  # emit_pte_barriers()

    def _set_pte_batching_nocheck(self, t: P.Table, i: int, val: int) -> None:
        t.e[i] = val
        self._ns += 1
        if (val & 0x40000000000041) == 0x40000000000001:
            if self._defer:  # queue_pte_barriers()
                t = self.cur.task
                if not t.pending:
                    t.pending = True
                    self._na += 1
            else:
                self._nb += 1

    def set_pte_nosync(self, t: P.Table, i: int, val: int) -> None:
        t.e[i] = val
        self._ns += 1
        if self.check and (val & P.PTE_VALID):
            self._stamp(t, i)

    def set_pte_complete(self, val: int) -> None:
        """__set_pte_complete(): the barrier half of __set_pte."""
        if P.pte_valid_not_user(val):
            self._queue()

    def set_pte_run(self, t: P.Table, i0: int, n: int, first: int, sync: bool = True) -> None:
        """Batched equivalent of ``for j in range(n): set_pte(t, i0 + j, first + j*PAGE_SIZE)``
        (``sync=False``: of __set_pte_nosync)."""
        self._ns += n
        valid = first & P.PTE_VALID
        stamp = None
        if self.check and valid:
            self.seq = s = self.seq + 1
            stamp = (s << 8) | self.cur.id
            ctx = self._ctx
            ctx.last_store = s
            ctx.last_store_cpu = self.cur
        if t.np and n == P.PTRS:
            t.defer(first, stamp)
        else:
            P.write_run(t, i0, n, first)
            if stamp is not None:
                t.stamp[i0 : i0 + n] = P.fill_run(t, stamp, n)
        if not valid:
            return
        if sync and (first & 0x40000000000041) == 0x40000000000001:
            self.queue_pte_barriers_n(n)

    def update_pte_run(self, t: P.Table, i0: int, n: int, set_mask: int, clear_mask: int) -> None:
        """Batched ``set_pte(t, i, (e[i] & ~clear) | set)`` over a run of valid entries."""
        seg = t.e[i0 : i0 + n]
        if P.is_np(t):
            t.e[i0 : i0 + n] = (seg & ~clear_mask) | set_mask
            kinds = {int(v) & ~P.ADDR_MASK for v in (t.e[i0], t.e[i0 + n - 1])}
        else:
            t.e[i0 : i0 + n] = [(v & ~clear_mask) | set_mask for v in seg]
            kinds = {v & ~P.ADDR_MASK for v in t.e[i0 : i0 + n]}
        self._ns += n
        v0 = int(t.e[i0])
        if len(kinds) != 1:
            raise AssertionError("update_pte_run over entries of different kinds")
        if not v0 & P.PTE_VALID:
            return
        if self.check:
            self.seq = s = self.seq + 1
            t.stamp[i0 : i0 + n] = P.fill_run(t, (s << 8) | self.cur.id, n)
            self._ctx.last_store = s
            self._ctx.last_store_cpu = self.cur
        if P.pte_valid_not_user(v0):
            self.queue_pte_barriers_n(n)

    def _signature(self) -> tuple:
        t = self.cur.task
        return (
            t.lazy,
            t.pending,
            t.enable_count,
            t.pause_count,
            self._defer,
            len(self.warnings),
            len(self.violations),
            self.path,
            self.op,
        )

    def repeat_units(self, unit_call, count: int, write_unit) -> None:
        """Batched model of ``count`` identical units of kernel work (e.g. whole-table
        lazy sections). Unit 0 runs through the real path. If it left the lazy-MMU state
        as it found it (a fixed point), every further unit has the same effect: its counter
        deltas are added ``count - 1`` more times and ``write_unit(j, shift)`` only writes
        unit j's entries (stamps shifted by ``shift`` sequence numbers). Otherwise every
        unit runs through the real path."""
        before_sig = self._signature()
        seq0 = self.seq
        cur, ctx = self.cur, self._ctx
        snap0 = self.snapshot()
        unit_call(0)
        if self._signature() != before_sig or self.cur is not cur or count < 2:
            for j in range(1, count):
                unit_call(j)
            return
        snap1 = self.snapshot()
        reps = count - 1
        shift = (self.seq - seq0) * reps
        for j in range(1, count):
            write_unit(j, shift)
        self._replay(snap0, snap1, reps)
        self.seq += shift
        for c in self.cpus:
            if c.last_dsb > seq0:
                c.last_dsb += shift
            if c.last_isb > seq0:
                c.last_isb += shift
        if ctx.last_store > seq0:
            ctx.last_store += shift

    def _replay(self, snap0: tuple, snap1: tuple, times: int) -> None:
        for store, a, b in ((self.counts, snap0[0], snap1[0]), (self.events, snap0[1], snap1[1])):
            for key, c in b.items():
                old = a.get(key, {})
                for k, n in c.items():
                    dn = n - old.get(k, 0)
                    if dn:
                        if key not in store:
                            store[key] = defaultdict(int)
                        store[key][k] += dn * times

    def clear_pte(self, t: P.Table, i: int) -> int:
        """ptep_get_and_clear / __pte_clear: store 0, no barrier (TLB maintenance follows)."""
        old = t.e[i]
        t.e[i] = 0
        self._e["pte_clear"] += 1
        return old

    def clear_pte_run(self, t: P.Table, i0: int, n: int) -> None:
        if t.np and n == P.PTRS:
            t.defer(None, None)
        else:
            t.e[i0 : i0 + n] = P.fill_run(t, 0, n)
        self._e["pte_clear"] += n

    def set_table_entry(self, t: P.Table, i: int, val: int) -> None:
        """set_pmd()/set_pud()/set_p4d()/set_pgd() for a level 0-2 entry."""
        if t.tid == self.pt.swapper_tid and t.level == 0:
            self._set_swapper_pgd(t, i, val)
            return
        t.e[i] = val
        self._e["pxd_store"] += 1
        if val & P.PTE_VALID:
            if self.check:
                self._stamp(t, i)
            self._queue()

    def _set_swapper_pgd(self, t: P.Table, i: int, val: int) -> None:
        """set_swapper_pgd(): swapper_pg_dir is read-only; write it through FIX_PGD."""
        prev = self.enter("set_swapper_pgd")
        self.fixmap_map("FIX_PGD")
        t.e[i] = val
        self._e["pxd_store"] += 1
        if self.check:
            self._stamp(t, i)
        self.dsb("ishst")
        self.isb()
        self.fixmap_unmap("FIX_PGD")
        self.exit(prev)

    # ---- fixmap (arch/arm64/mm/fixmap.c: __set_fixmap is out of line) ------------------
    def fixmap_map(self, slot: str) -> None:
        prev = self.enter("__set_fixmap")
        self.event("fixmap_map")
        t, i = self._fixmap_slot(slot)
        self.set_pte(t, i, (self.pt.alloc_pages(0) << P.PAGE_SHIFT) | P.PAGE_KERNEL)
        self.exit(prev)

    def fixmap_unmap(self, slot: str) -> None:
        prev = self.enter("__set_fixmap")
        self.event("fixmap_unmap")
        t, i = self._fixmap_slot(slot)
        self.clear_pte(t, i)
        self.flush_tlb_kernel_range(P.FIXADDR_TOP - P.PAGE_SIZE, P.FIXADDR_TOP)
        self.exit(prev)

    _FIX = {"FIX_PTE": 1, "FIX_PMD": 2, "FIX_PUD": 3, "FIX_P4D": 4, "FIX_PGD": 5, "FIX_IRQ": 6}

    def _fixmap_slot(self, slot: str) -> tuple[P.Table, int]:
        bm = getattr(self, "_bm_pte", None)
        if bm is None:
            bm = self._bm_pte = self.pt.new_table(3)
        return bm, self._FIX[slot]

    # ---- TLB maintenance (arch/arm64/include/asm/tlbflush.h) ---------------------------
    def flush_tlb_all(self) -> None:
        self.event("flush_tlb_all")
        self.dsb("ishst")
        self.tlbi("vmalle1is")
        self.dsb("ish")
        self.isb()

    def flush_tlb_kernel_range(self, start: int, end: int) -> None:
        self.event("flush_tlb_kernel_range")
        if end - start > P.PTRS * P.PAGE_SIZE:  # MAX_DVM_OPS pages
            self.flush_tlb_all()
            return
        self.dsb("ishst")
        self.tlbi("vaale1is", max(0, (end - start) >> P.PAGE_SHIFT))
        self.dsb("ish")
        self.isb()

    def flush_tlb_kernel_pgtable(self, addr: int) -> None:
        self.event("flush_tlb_kernel_pgtable")
        self.dsb("ishst")
        self.tlbi("vaae1is")
        self.dsb("ish")
        self.isb()

    # ---- lazy MMU mode ----------------------------------------------------------------
    def lazy_enter(self) -> int:
        """arch_enter_lazy_mmu_mode() / lazy_mmu_mode_enable(), per the variant."""
        self.event("lazy_enter")
        if not self.batching:
            return LAZY_MMU_DEFAULT  # generic no-op hooks (6.12)
        irq = self.in_interrupt()
        t = self.cur.task
        if self.nesting == "generic":
            if irq:
                return LAZY_MMU_DEFAULT
            t.enable_count += 1  # arch_enter is empty on arm64 in the generic scheme
            self._refresh()
            return LAZY_MMU_DEFAULT if t.enable_count == 1 else LAZY_MMU_NESTED
        if irq and self.irq_guard:
            return LAZY_MMU_DEFAULT
        if irq:
            self.warn("arch_enter_lazy_mmu_mode: VM_WARN_ON(in_interrupt())")
        if self.nesting == "full":
            nested = t.lazy
            t.lazy = True
            if not self.depth_counter:
                self.rmw("full")  # test_and_set_thread_flag: fully ordered
            elif not nested:
                self.rmw("relaxed")  # lazy_mmu_depth++ == 0: set_thread_flag
            self._refresh()
            return LAZY_MMU_NESTED if nested else LAZY_MMU_DEFAULT
        if t.lazy and not self.f.__contains__("lazy_mmu_nesting_tolerated"):
            self.warn("arch_enter_lazy_mmu_mode: VM_WARN_ON(test_thread_flag(TIF_LAZY_MMU))")
        t.lazy = True  # set_thread_flag
        self.atomic()
        self._refresh()
        return LAZY_MMU_DEFAULT

    def lazy_flush(self) -> None:
        """arch_flush_lazy_mmu_mode(): emit pending barriers."""
        t = self.cur.task
        # test_and_clear_thread_flag(TIF_LAZY_MMU_PENDING): a fully ordered fetch_andnot
        # every time (asm-generic/bitops/atomic.h does not read first; 6.18 and 7.3 code
        # shows ldclral / ldxr-stlxr-dmb on every flush), then the barriers if it was set
        self.rmw("full")
        if t.pending:
            t.pending = False
            if self.leave_flushes:
                self._emit()

    def lazy_leave(self, state: int = LAZY_MMU_DEFAULT) -> None:
        """arch_leave_lazy_mmu_mode(state) / lazy_mmu_mode_disable(), per the variant."""
        self.event("lazy_leave")
        if not self.batching:
            return
        irq = self.in_interrupt()
        t = self.cur.task
        if self.nesting == "generic":
            if irq:
                return
            t.enable_count -= 1
            self._refresh()
            self.lazy_flush()  # nested: arch_flush; outermost: arch_leave (flush + clear)
            self._rely_section()
            return
        if irq and self.irq_guard:
            return
        self.lazy_flush()
        if self.nesting == "full" and state == LAZY_MMU_NESTED:
            self._rely_section()
            return
        t.lazy = False
        self.atomic()  # clear_thread_flag(TIF_LAZY_MMU)
        self._refresh()
        self._rely_section()

    def lazy_pause(self) -> None:
        """lazy_mmu_mode_pause(); before generic nesting callers used leave() directly."""
        if self.nesting != "generic":
            self.lazy_leave(LAZY_MMU_DEFAULT)
            return
        if not self.in_interrupt():
            t = self.cur.task
            t.pause_count += 1
            self._refresh()
            if t.pause_count == 1 and t.enable_count > 0:
                self.lazy_flush()

    def lazy_resume(self) -> None:
        """lazy_mmu_mode_resume(); before generic nesting callers used enter() directly."""
        if self.nesting != "generic":
            self.lazy_enter()
            return
        if not self.in_interrupt():
            self.cur.task.pause_count -= 1
            self._refresh()

    # ---- scheduling ---------------------------------------------------------------------
    def context_switch(self, to: Ctx | None = None, cpu: int | None = None) -> Ctx:
        """__switch_to() on the current CPU: dsb(ish), then ``to`` runs (may have migrated)."""
        cur = self.cur
        prev_task = cur.task
        p = self.enter("__switch_to")
        self.event("context_switch")
        if self.switch_dsb:
            self.dsb("ish")
        self.exit(p)
        if to is None:
            to = Ctx(f"task{len(self.tasks)}")
            self.tasks.append(to)
        if to.cpu is not None and to.cpu is not cur and to.cpu.task is to:
            to.cpu.task = None  # it migrates here
        prev_task.cpu = None
        cur.task = to
        to.cpu = cur
        self._refresh()
        return prev_task

    def run_task(self, task: Ctx, cpu: int) -> None:
        """Put a switched-out task on an idle/any CPU: that CPU switches to it."""
        here = self.cur
        self.cur = self.cpus[cpu]
        self.context_switch(task)
        self.cur = here
        self._refresh()

    def irq_enter(self) -> Ctx:
        c = Ctx(f"irq@cpu{self.cur.id}", is_irq=True)
        c.cpu = self.cur
        self._fold()
        self.cur.irq.append(c)
        self.context_sync()  # exception entry is context-synchronising
        self._refresh()
        return c

    def irq_exit(self) -> None:
        self._fold()
        self.cur.irq.pop()
        self.context_sync()  # ERET
        self._refresh()

    # ---- checker hooks ------------------------------------------------------------------
    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.event("warn")

    def violate(self, rule: str, msg: str) -> None:
        v = Violation(rule, msg, self.seq, self.path)
        self.violations.append(v)
        if self.strict:
            raise SafetyError(v)

    def stores_complete(self, ctx: Ctx, where: str) -> bool:
        """Rule: when ``ctx`` relies on its mappings, its valid kernel stores are complete
        (a DSB on the CPU that issued them) and the current CPU has since discarded stale
        speculative state (ISB or exception return)."""
        if not self.check or not ctx.last_store:
            return True
        s = ctx.last_store
        wcpu = ctx.last_store_cpu
        ok = True
        if wcpu is not None and wcpu.last_dsb < s:
            self.violate(
                "store-not-complete",
                f"{where}: {ctx.name}'s pgtable store (seq {s}) on cpu{wcpu.id} has no "
                f"dsb after it",
            )
            ok = False
        if wcpu is self.cur and self.cur.last_isb < s:
            self.violate(
                "no-isb",
                f"{where}: {ctx.name} relies on a new mapping on cpu{self.cur.id} "
                f"without isb/context synchronisation after the store (seq {s})",
            )
            ok = False
        return ok

    def _rely_section(self) -> None:
        """Rule: every leave() (nested or not) returns with the section's updates visible."""
        if self.check:
            self.stores_complete(self.ctx, "leave() returned")

    def rely_return(self, what: str) -> None:
        """Rule: a mapping call returns with its updates visible to its caller."""
        if self.check:
            self.stores_complete(self.ctx, f"{what} returned")

    def access(self, va: int, cpu: int | None = None, what: str = "access") -> bool:
        """A load through ``va`` by ``cpu``: every descriptor on the walk must be visible."""
        if not self.check:
            return True
        here = self.cur
        c = self.cpus[cpu] if cpu is not None else here
        own = cpu is None  # the running context uses what it (may have) just written
        ok = True
        for t, i in self.pt.lookup(va):
            if t.freed:
                self.violate("use-after-free", f"{what}: walk of {va:#x} reads freed {t!r}")
                return False
            st = t.stamp[i]
            s, w = st >> 8, st & 0xFF
            if s and self.cpus[w].last_dsb < s:
                self.violate(
                    "walker-sees-stale",
                    f"{what}: cpu{c.id} walks {va:#x}: {P.LEVEL_NAME[t.level]} entry "
                    f"stored on cpu{w} (seq {s}) has no dsb after it",
                )
                ok = False
            if s and own and w == c.id and c.last_isb < s:
                self.violate(
                    "no-isb",
                    f"{what}: cpu{c.id} uses {va:#x} after its own store (seq {s}) "
                    f"without isb/context synchronisation",
                )
                ok = False
        if ok and self.pt.translate(va) is None:
            self.violate("fault", f"{what}: {va:#x} is not mapped")
            ok = False
        return ok
