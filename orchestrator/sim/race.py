"""ptdump vs. page-table freeing (seed 003): every interleaving of the two threads.

Thread P0 is ptdump (``ptdump_walk_pgd`` under ``mmap_write_lock(&init_mm)``, and with the
fix, ``static_branch_inc`` of the arm64 ptdump key first). Thread P1 is vmalloc replacing a
pte table with a PMD block: ``pmd_free_pte_page``: read the pmd, ``pmd_clear``,
``__flush_tlb_kernel_pgtable`` (dsb ishst; tlbi; dsb ish; isb), with the fix the static
branch that takes and drops ``mmap_read_lock(&init_mm)``, then ``pte_free_kernel``.

The explorer runs both threads over every interleaving of their steps, under sequential
consistency and under a store-buffer model (each CPU's stores wait in a FIFO; its own loads
see them; a DSB waits for the buffer to drain; lock release drains). It counts the complete
executions and reports one use-after-free witness if any exists: ptdump loading through a
pmd value that still points at the pte table after that table was freed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

# shared variables
PMD, KEY, LOCK, FREED = 0, 1, 2, 3  # LOCK: 0 free, -1 writer, n>0 readers
TABLE = 1  # pmd value: points at the pte table
VARS = ("pmd", "key", "lock", "freed")


def ptdump_thread(static_key: bool, key_barrier: bool = True) -> tuple:
    prog = []
    if static_key:
        prog.append(("store", KEY, 1, "static_branch_inc(&arm64_ptdump_lock_key)"))
        if key_barrier:
            prog.append(("dsb", "code patching: dsb ish; isb"))
    prog += [
        ("wlock", "mmap_write_lock(&init_mm)"),
        ("load", PMD, 0, "walk: READ_ONCE(*pmdp)"),
        ("walk", 0, "walk: read the pte table the pmd points at"),
        ("wunlock", "mmap_write_unlock(&init_mm)"),
    ]
    if static_key:
        prog.append(("store", KEY, 0, "static_branch_dec"))
    return tuple(prog)


def free_thread(static_key: bool, flush_dsb: bool = True) -> tuple:
    prog = [
        ("load", PMD, 0, "pmd_free_pte_page: READ_ONCE(*pmdp)"),
        ("store", PMD, 0, "pmd_clear(pmdp)"),
    ]
    if flush_dsb:
        prog.append(("dsb", "__flush_tlb_kernel_pgtable: dsb ishst; tlbi vaae1is; dsb ish; isb"))
    if static_key:
        prog += [
            ("load", KEY, 1, "static_branch_unlikely(&arm64_ptdump_lock_key)"),
            ("skip_if_zero", 1, 2, "if (static key enabled) take the lock"),
            ("rlock", "mmap_read_lock(&init_mm)"),
            ("runlock", "mmap_read_unlock(&init_mm)"),
        ]
    prog.append(("free", "pte_free_kernel(table)"))
    return tuple(prog)


@dataclass
class RaceResult:
    model: str
    static_key: bool
    executions: int  # complete interleavings
    states: int
    uaf_executions: int
    witness: list[str]

    @property
    def use_after_free(self) -> bool:
        return self.uaf_executions > 0

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "static_key": self.static_key,
            "executions": self.executions,
            "states": self.states,
            "uaf_executions": self.uaf_executions,
            "use_after_free": self.use_after_free,
            "witness": self.witness,
        }


def explore(
    p0: tuple,
    p1: tuple,
    store_buffer: bool = False,
    static_key: bool = True,
    model: str | None = None,
) -> RaceResult:
    progs = (p0, p1)
    init_mem = (TABLE, 0, 0, 0)

    def steps(state):
        """Successor states: (label, next_state, uaf_flag)."""
        pcs, mem, bufs, regs = state
        out = []
        for t in (0, 1):
            pc = pcs[t]
            # store-buffer: commit the oldest buffered store of thread t
            if bufs[t]:
                (var, val), rest = bufs[t][0], bufs[t][1:]
                m2 = list(mem)
                m2[var] = val
                b2 = list(bufs)
                b2[t] = rest
                out.append(
                    (
                        f"P{t}: (store buffer) {VARS[var]}={val} reaches memory",
                        (pcs, tuple(m2), tuple(b2), regs),
                        False,
                    )
                )
            if pc >= len(progs[t]):
                continue
            ins = progs[t][pc]
            op = ins[0]
            m2, b2, r2 = list(mem), list(bufs), [list(regs[0]), list(regs[1])]
            npc = list(pcs)
            npc[t] = pc + 1
            uaf = False
            label = f"P{t}: {ins[-1]}"

            def load(var, t=t):
                for v, val in reversed(bufs[t]):
                    if v == var:
                        return val
                return mem[var]

            if op == "store":
                if store_buffer:
                    b2[t] = bufs[t] + ((ins[1], ins[2]),)
                else:
                    m2[ins[1]] = ins[2]
            elif op == "load":
                r2[t][ins[2]] = load(ins[1])
                label += f" -> {r2[t][ins[2]]}"
            elif op == "dsb":
                if bufs[t]:
                    continue  # waits for the store buffer to drain
            elif op == "wlock":
                if mem[LOCK] != 0 or bufs[t]:
                    continue
                m2[LOCK] = -1
            elif op == "wunlock":
                if bufs[t]:
                    continue  # release: earlier stores first
                m2[LOCK] = 0
            elif op == "rlock":
                if mem[LOCK] < 0 or bufs[t]:
                    continue
                m2[LOCK] = mem[LOCK] + 1
            elif op == "runlock":
                if bufs[t]:
                    continue
                m2[LOCK] = mem[LOCK] - 1
            elif op == "skip_if_zero":
                if regs[t][ins[1]] == 0:
                    npc[t] = pc + 1 + ins[2]
                    label += ": no"
                else:
                    label += ": yes"
            elif op == "walk":
                if regs[t][ins[1]] == TABLE:
                    uaf = bool(mem[FREED])
                    label += " [USE-AFTER-FREE]" if uaf else " (table live)"
                else:
                    label += " (pmd cleared: nothing to walk)"
            elif op == "free":
                m2[FREED] = 1  # the page goes back to the allocator
            out.append(
                (label, (tuple(npc), tuple(m2), tuple(b2), (tuple(r2[0]), tuple(r2[1]))), uaf)
            )
        return out

    @cache
    def count(state) -> tuple[int, int]:
        """(complete executions, executions with a use-after-free) from ``state``."""
        succ = steps(state)
        if not succ:
            pcs, _, bufs, _ = state
            done = all(pcs[t] >= len(progs[t]) for t in (0, 1))
            return (1, 0) if done else (0, 0)  # deadlock states are not executions
        total = bad = 0
        for _, nxt, uaf in succ:
            n, b = count(nxt)
            total += n
            bad += n if uaf else b
        return total, bad

    start = ((0, 0), init_mem, ((), ()), ((0, 0), (0, 0)))
    total, bad = count(start)
    witness: list[str] = []
    if bad:
        s = start
        while True:
            for label, nxt, uaf in steps(s):
                if uaf:
                    witness.append(label)
                    break
                if count(nxt)[1]:
                    witness.append(label)
                    s = nxt
                    break
            else:
                break
            if witness[-1].endswith("[USE-AFTER-FREE]"):
                break
    states = count.cache_info().currsize
    return RaceResult(
        model or ("store-buffer" if store_buffer else "sc"), static_key, total, states, bad, witness
    )


def enumerate_ptdump_race(
    static_key: bool, store_buffer: bool = False, flush_dsb: bool = True, key_barrier: bool = True
) -> RaceResult:
    """The seed-003 race with or without the static key, under SC or a store buffer."""
    return explore(
        ptdump_thread(static_key, key_barrier),
        free_thread(static_key, flush_dsb),
        store_buffer=store_buffer,
        static_key=static_key,
    )
