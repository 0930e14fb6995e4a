"""Invariant checker over operation sequences, for every variant.

An operation sequence is a legal kernel program made of page-table operations on a
2-CPU machine: vmalloc/vfree/vm_map_ram, set_memory_*, explicit (nested) lazy MMU
sections with kernel pte writes inside, DEBUG_PAGEALLOC's __kernel_map_pages, an interrupt
that maps a fixmap slot and uses it (GHES does this), lazy-mode pause/resume around a
write that is used at once (KASAN does this), context switches with migration, accesses by
the same CPU and by another CPU, and ptdump walks.

The rules (checked inside :class:`~orchestrator.sim.machine.Machine` as the paths run):

- ``store-not-complete`` / ``no-isb``: no valid kernel entry is relied on before its
  barriers: at every leave() (nested or not), at every return of a mapping call, and at
  the end of an interrupt handler's mapping use, the context's stores are complete (DSB on
  the CPU that issued them) and the current CPU has synchronised (ISB / exception return).
- ``walker-sees-stale`` / ``fault``: an access by any CPU walks only entries whose stores
  are complete (a context switch inside a lazy section must have completed them).
- ``use-after-free``: no walk reaches a freed table.

"Legal" means the generated program itself keeps the lazy-MMU contract: it never uses a
mapping written inside a still-open lazy section of its own (the kernel's rule for lazy
sections); ``run_sequence`` skips such uses rather than blaming the variant for them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from orchestrator.sim import pagetable as P
from orchestrator.sim.features import Variant, resolve_variant
from orchestrator.sim.kernel import Kernel
from orchestrator.sim.machine import Machine, Violation

OP_KINDS = (
    "vmalloc",
    "vfree",
    "touch",
    "remote",
    "set_memory",
    "enter",
    "leave",
    "lazy_write",
    "kernel_map_pages",
    "irq_fixmap",
    "pause_write_touch",
    "switch_migrate",
    "vm_map_ram",
    "vm_unmap_ram",
    "ptdump",
    "vmalloc_huge_pmd",
)


# What kernel code does inside a lazy MMU section: pte writes, DEBUG_PAGEALLOC's
# __kernel_map_pages from a page allocation, KASAN's pause/write/resume, and what can
# happen to any code: interrupts, preemption (with migration), other CPUs' accesses.
# Sleeping mapping APIs (vmalloc, vm_map_ram, set_memory_*: they take mutexes) are not
# called there; a PMD-block vmap inside a caller's section would return with its set_pmd()
# barrier still queued (that path has no section of its own).
IN_SECTION_OK = frozenset(
    {
        "enter",
        "leave",
        "lazy_write",
        "kernel_map_pages",
        "irq_fixmap",
        "pause_write_touch",
        "switch_migrate",
        "touch",
        "remote",
        "ptdump",
    }
)


@dataclass
class SequenceResult:
    variant: str
    ops_run: list[tuple]
    violations: list[Violation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def run_sequence(
    variant: str | Variant, ops: list[tuple], ncpus: int = 2, batched: bool = False
) -> SequenceResult:
    """Execute ``ops`` on a fresh machine; the checker records every broken rule."""
    v = resolve_variant(variant)
    m = Machine(v, ncpus=ncpus, check=True)
    k = Kernel(m, batched=batched, ncpus_online=ncpus, ptdump_debugfs=False)
    areas: list = []  # live vmalloc areas
    rams: list = []  # live vm_map_ram areas
    sections: list[int] = []  # open explicit lazy sections (their enter() states)
    dirty: set[int] = set()  # ids of areas written inside an open section
    lin_pfn = k.pt.alloc_pages(64)
    lin = P.PAGE_OFFSET + (lin_pfn << P.PAGE_SHIFT) - P.PHYS_OFFSET
    k.ensure_linear_mapped(lin, 64)
    ram_pfn = k.pt.alloc_pages(64)
    run: list[tuple] = []

    def pick(lst, i):
        return lst[i % len(lst)] if lst else None

    for op in ops:
        kind = op[0]
        if sections and kind not in IN_SECTION_OK:
            continue  # not something the kernel does inside a lazy MMU section
        if kind == "vmalloc":
            areas.append(k.vmalloc(max(1, op[1]) * P.PAGE_SIZE, huge=bool(op[2])))
        elif kind == "vmalloc_huge_pmd":
            areas.append(k.vmalloc(P.PMD_SIZE, huge=True))
        elif kind == "vfree":
            a = pick(areas, op[1])
            if a is None:
                continue
            areas.remove(a)
            dirty.discard(id(a))
            k.vfree(a)
        elif kind in ("touch", "remote"):
            a = pick(areas, op[1])
            if a is None or (sections and id(a) in dirty):
                continue
            off = (op[2] % a.nr_pages) * P.PAGE_SIZE if len(op) > 2 else 0
            if kind == "touch":
                m.access(a.addr + off, what="touch")
            else:
                other = (m.cur.id + 1) % ncpus
                m.access(a.addr + off, cpu=other, what=f"cpu{other} access")
        elif kind == "set_memory":
            a = pick(areas, op[1])
            if a is None or (sections and id(a) in dirty):
                continue
            nx = op[2] % 2 == 0
            k.set_memory(
                a,
                P.PTE_PXN if nx else 0,
                0 if nx else P.PTE_PXN,
                what="set_memory_nx" if nx else "set_memory_x",
            )
        elif kind == "enter":
            if len(sections) >= 3:
                continue
            sections.append(m.lazy_enter())
        elif kind == "leave":
            if not sections:
                continue
            m.lazy_leave(sections.pop())
            if not sections:
                dirty.clear()
        elif kind == "lazy_write":
            a = pick(areas, op[1])
            if a is None or not sections:
                continue
            n = min(a.nr_pages, max(1, op[2]))
            _rewrite(k, a, n)
            dirty.add(id(a))
        elif kind == "kernel_map_pages":
            n = 1 + op[1] % 8
            k.kernel_map_pages(lin, n, True)
            m.access(lin, what="page handed out by the allocator")
        elif kind == "irq_fixmap":
            m.irq_enter()
            p = m.enter("ghes_map")
            m.fixmap_map("FIX_IRQ")
            m.rely_return("ghes_map (interrupt handler uses the fixmap slot)")
            m.fixmap_unmap("FIX_IRQ")
            m.exit(p)
            m.irq_exit()
        elif kind == "pause_write_touch":
            a = pick(areas, op[1])
            if a is None or id(a) in dirty or not sections:
                continue  # pause/resume is used inside a section (KASAN's populate callback)
            m.lazy_pause()
            _rewrite(k, a, 1)
            m.access(a.addr, what="write under lazy_mmu_mode_pause() then use")
            m.lazy_resume()
        elif kind == "switch_migrate":
            if ncpus < 2:
                continue
            task = m.task
            m.context_switch()  # task is switched out on this CPU
            dst = (m.cur.id + 1 + op[1] % (ncpus - 1)) % ncpus
            m.run_task(task, dst)
            m.on_cpu(dst)
        elif kind == "vm_map_ram":
            n = 1 + op[1] % 16
            rams.append(k.vm_map_ram(range(ram_pfn, ram_pfn + n)))
            m.access(rams[-1].addr, what="vm_map_ram use")
        elif kind == "vm_unmap_ram":
            a = pick(rams, op[1])
            if a is None:
                continue
            rams.remove(a)
            k.vm_unmap_ram(a)
        elif kind == "ptdump":
            k.ptdump_walk()
        else:
            raise ValueError(f"unknown op {kind!r}")
        run.append(op)
    while sections:  # the program ends its sections
        m.lazy_leave(sections.pop())
        run.append(("leave",))
    for t in m.tasks:  # and relies on everything it mapped
        if t.cpu is not None and t.last_store:
            here = m.cur
            m.cur = t.cpu
            m.stores_complete(t, "end of program")
            m.cur = here
    return SequenceResult(v.name, run, list(m.violations), list(m.warnings))


def _rewrite(k: Kernel, area, n: int) -> None:
    """Kernel pte writes (valid, kernel) to the first ``n`` pages of ``area``."""
    m = k.m
    p = m.enter("lazy_section_writes")
    for j in range(n):
        va = area.addr + j * P.PAGE_SIZE
        pmd = k._lookup_pmd(va)
        v = pmd.e[P.index(va, 2)]
        if not P.is_table(v, 2):
            break  # a PMD block mapping: leave it
        pte = k.pt.child(v)
        m.set_pte(pte, P.index(va, 3), (area.pages[j] << P.PAGE_SHIFT) | P.PAGE_KERNEL)
    m.exit(p)


def random_ops(rng: random.Random, n: int) -> list[tuple]:
    """A random operation sequence (for benchmarks; tests use hypothesis strategies)."""
    out = []
    for _ in range(n):
        kind = rng.choice(OP_KINDS)
        if kind == "vmalloc":
            out.append((kind, rng.choice((1, 1, 2, 16, 17, 300, 600)), rng.random() < 0.3))
        elif kind in ("touch", "remote", "lazy_write", "set_memory"):
            out.append((kind, rng.randrange(8), rng.randrange(64)))
        elif kind in ("enter", "leave", "irq_fixmap", "ptdump", "vmalloc_huge_pmd"):
            out.append((kind,))
        else:
            out.append((kind, rng.randrange(16)))
    return out


def check_variant(
    variant: str | Variant, sequences: int = 1000, length: int = 20, seed: int = 0
) -> tuple[int, list[SequenceResult]]:
    """Run ``sequences`` random sequences; returns (count, failing results)."""
    rng = random.Random(seed)
    bad = []
    for _ in range(sequences):
        r = run_sequence(variant, random_ops(rng, rng.randrange(1, length + 1)))
        if not r.ok:
            bad.append(r)
    return sequences, bad
