"""What a built kernel's code says about how it updates kernel page tables.

``read_kernel_code(vmlinux, config)`` reads facts from the machine code of vmlinux (and its
resolved .config) that decide the simulator's features and kernel parameters, each with
the evidence behind it. ``orchestrator.sim.infer`` turns them into a variant; the version
number is only the tie-breaker for what the code cannot show.

Facts (``KernelCode.facts``: name -> Fact(value, evidence)):

- ``pte_barriers``: how the pte writes of the vmalloc pte loop get their ``dsb ishst``.
  The loop functions (``infer.VMAP_LOOP_FUNCS``, whichever the compiler kept) are followed
  through their direct calls (BL, and B to another function: tail calls), three levels
  deep, to the functions that hold a ``dsb ishst``. "queued" when a function on that path
  also holds an atomic store (setting TIF_LAZY_MMU_PENDING: LL/SC store-exclusive or LSE
  op) next to the DSB, "immediate" when the DSB is there without one (6.12's
  ``__set_ptes``, an experiment's ``emit_pte_barriers``);
- ``lazy_hooks``: the kernel has out-of-line lazy-MMU hooks that do work
  (``arch_leave_lazy_mmu_mode`` / ``arch_flush_lazy_mmu_mode`` / ``lazy_mmu_mode_disable``
  with an atomic or a DSB), and which of them the vmap loop functions call;
- ``generic_nesting``: ``lazy_mmu_mode_enable``/``lazy_mmu_mode_disable`` exist (7.x's
  generic scheme, the counts in task_struct);
- ``enter_atomic``: the ordering of the atomic in ``arch_enter_lazy_mmu_mode`` (fully
  ordered: seed 001's test_and_set_thread_flag; relaxed: set_thread_flag);
- ``lazy_nr_order``: the ordering of the atomic in ``free_vmap_area_noflush``
  (atomic_long_add_return vs its _relaxed form);
- ``nr_vmalloc_pages``: the global vmalloc page counter exists (symbol), or NR_VMALLOC
  vmstat replaced it;
- ``set_memory_pagewalk``: ``pageattr_pte_entry`` (pagewalk-based set_memory_*) or
  ``change_page_range`` (apply_to_page_range);
- kernel parameters from the config: ``atomics`` (lse / llsc), ``hugetlb_page``,
  ``ptdump_debugfs``, ``rodata_full``.

An atomic is "fully ordered" when the code has a store-release exclusive (``stlxr``: LL/SC
loops of fully ordered ops end in ``dmb ish``) or an acquire-release LSE op (``.al``).
7.x builds carry both forms (alternatives patched at boot); they agree on the ordering.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.kernel import aarch64

FOLLOW_DEPTH = 3
LAZY_HOOK = re.compile(r"^(arch_leave_lazy_mmu_mode|arch_flush_lazy_mmu_mode|"
                       r"lazy_mmu_mode_disable)(#\d+)?$")
FULL_KINDS = ("atomic.stlxr", "atomic.lse.al", "atomic.cas.al")
# callees not followed from the vmap loop: page-table allocation (its set_pmd/set_pud and
# set_swapper_pgd barriers are not the pte setter's), TLB maintenance, memory allocation
NOT_FOLLOWED = re.compile(r"^(__p4d_alloc|__pud_alloc|__pmd_alloc|__pte_alloc|pud_|pmd_|p4d_|"
                          r"pgd_|set_swapper_pgd|__flush_tlb|flush_tlb|__vmalloc|__kmalloc|"
                          r"kmalloc|alloc_|__alloc|kfree|vmap_try_huge|__warn|warn_|"
                          r"__sync_icache_dcache|__check_)")


@dataclass
class Fact:
    value: Any
    evidence: str


@dataclass
class KernelCode:
    """Facts read from one vmlinux (+ .config); ``params`` are simulator kernel parameters."""

    facts: dict[str, Fact] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    param_evidence: dict[str, str] = field(default_factory=dict)
    # functions that issue the pte writes' barriers: the dsb ishst holders reached from the
    # vmap loop and the lazy-MMU hooks that flush (names as elfinspect gives them: "f#2")
    pte_sites: list[str] = field(default_factory=list)

    def get(self, name: str, default: Any = None) -> Any:
        f = self.facts.get(name)
        return default if f is None else f.value

    def to_json(self) -> dict:
        return {"facts": {k: {"value": v.value, "evidence": v.evidence}
                          for k, v in self.facts.items()},
                "params": self.params, "param_evidence": self.param_evidence,
                "pte_sites": self.pte_sites}


class _Code:
    """Functions of a vmlinux by name, with their instruction words on demand."""

    def __init__(self, vmlinux: Any):
        from orchestrator.kernel.elfinspect import _open

        self.elf = _open(vmlinux)
        self.funcs = self.elf.functions()
        self.by_name = {f.name: f for f in self.funcs}
        self.by_addr = {f.address: f for f in self.funcs}
        self._words: dict[str, np.ndarray] = {}

    def words(self, name: str) -> np.ndarray:
        w = self._words.get(name)
        if w is None:
            fn = self.by_name[name]
            data = self.elf.read_addr(fn.address, fn.size) or b""
            w = self._words[name] = np.frombuffer(data[: len(data) - len(data) % 4], dtype="<u4")
        return w

    def names(self, pattern: re.Pattern[str]) -> list[str]:
        return [f.name for f in self.funcs if pattern.match(f.name)]

    def calls(self, name: str) -> list[str]:
        """Functions called directly: BL targets, and B targets outside the function (tail
        calls) that start a function."""
        fn = self.by_name[name]
        w = self.words(name).astype(np.int64)
        out: list[str] = []
        for i in np.flatnonzero(((w & 0xFC000000) == 0x94000000)
                                | ((w & 0xFC000000) == 0x14000000)).tolist():
            imm = ((int(w[i]) & 0x3FFFFFF) ^ 0x2000000) - 0x2000000
            tgt = fn.address + 4 * i + 4 * imm
            if fn.address <= tgt < fn.address + fn.size:
                continue
            callee = self.by_addr.get(tgt)
            if callee is not None and callee.name not in out:
                out.append(callee.name)
        return out

    def kinds(self, name: str) -> dict[str, int]:
        """Barrier and atomic instruction keys in a function, with counts."""
        out: dict[str, int] = {}
        for word in self.words(name).tolist():
            key = aarch64.classify(word) or aarch64.classify_atomic(word)
            if key:
                out[key] = out.get(key, 0) + 1
        return out


def _atomics(kinds: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in kinds.items() if k.startswith("atomic.")}


def _order(kinds: dict[str, int]) -> str | None:
    at = _atomics(kinds)
    if not at:
        return None
    return "full" if any(k in at for k in FULL_KINDS) else "relaxed"


def _config_params(config: dict[str, str] | None) -> tuple[dict, dict]:
    """Simulator kernel parameters from a resolved .config ({CONFIG_X: value}, unset options
    as "n": kconfig.parse_config_text(text, keep_unset=True); a missing option is one the
    tree does not have)."""
    if not config:
        return {}, {}
    params: dict[str, Any] = {}
    why: dict[str, str] = {}
    lse = config.get("CONFIG_ARM64_USE_LSE_ATOMICS")
    if lse is None:
        # 7.x has no such option: LSE atomics are always built in (patched in at boot
        # on CPUs with LSE; QEMU's -cpu max has it)
        params["atomics"] = "lse"
        why["atomics"] = "no CONFIG_ARM64_USE_LSE_ATOMICS (always built in): LSE on a CPU with it"
    else:
        params["atomics"] = "lse" if lse == "y" else "llsc"
        why["atomics"] = f"CONFIG_ARM64_USE_LSE_ATOMICS={lse or 'n'}"
    for key, opt in (("hugetlb_page", "CONFIG_HUGETLB_PAGE"),
                     ("ptdump_debugfs", "CONFIG_PTDUMP_DEBUGFS"),
                     ("rodata_full", "CONFIG_RODATA_FULL_DEFAULT_ENABLED")):
        val = config.get(opt)
        if key == "rodata_full" and opt not in config:
            params[key], why[key] = 1, f"no {opt}: rodata=full is the default"
            continue
        params[key] = int(val == "y")
        why[key] = f"{opt}={val}" if val is not None else f"no {opt} in this tree"
    return params, why


def read_kernel_code(vmlinux: Any, config: dict[str, str] | None = None) -> KernelCode:
    from orchestrator.sim.infer import VMAP_LOOP_FUNCS

    code = _Code(vmlinux)
    kc = KernelCode()
    kc.params, kc.param_evidence = _config_params(config)
    facts = kc.facts

    # --- the vmalloc pte loop and what its calls reach
    loops = [n for n in VMAP_LOOP_FUNCS if n in code.by_name]
    dsb_holders: dict[str, list[str]] = {}  # function holding dsb ishst -> call path
    seen: set[str] = set()
    frontier = [(n, [n]) for n in loops]
    for _depth in range(FOLLOW_DEPTH + 1):
        nxt = []
        for name, path in frontier:
            if name in seen:
                continue
            seen.add(name)
            if code.kinds(name).get("dsb.ishst"):
                dsb_holders.setdefault(name, path)
            for callee in code.calls(name):
                if callee not in seen and not NOT_FOLLOWED.match(callee):
                    nxt.append((callee, path + [callee]))
        frontier = nxt
    setters = {n: p for n, p in dsb_holders.items() if not LAZY_HOOK.match(n)}
    if not loops:
        facts["pte_barriers"] = Fact(None, "none of the vmalloc pte-loop functions is in "
                                     "vmlinux: " + ", ".join(VMAP_LOOP_FUNCS))
    elif not setters:
        facts["pte_barriers"] = Fact(None, f"no dsb ishst reached from {', '.join(loops)} "
                                     f"within {FOLLOW_DEPTH} calls")
    else:
        queued = {n: p for n, p in setters.items() if _atomics(code.kinds(n))}
        if queued:
            name, path = next(iter(queued.items()))
            facts["pte_barriers"] = Fact("queued", (
                f"{' -> '.join(path)}: dsb ishst beside an atomic "
                f"({', '.join(sorted(_atomics(code.kinds(name))))}: the pending flag)"))
        else:
            name, path = next(iter(setters.items()))
            facts["pte_barriers"] = Fact("immediate", (
                f"{' -> '.join(path)}: dsb ishst with no atomic beside it"))

    # --- lazy-MMU hooks
    hooks = [n for n in code.names(LAZY_HOOK)
             if _atomics(code.kinds(n)) or code.kinds(n).get("dsb.ishst")
             or any(LAZY_HOOK.match(c) or c.startswith("emit_pte_barriers")
                    for c in code.calls(n))]
    called = sorted({c for n in loops for c in code.calls(n) if LAZY_HOOK.match(c)})
    if hooks:
        facts["lazy_hooks"] = Fact(True, (
            f"out-of-line hooks doing work: {', '.join(sorted(hooks)[:4])}"
            + (f"; the vmap loop calls {', '.join(called)}" if called else "")))
    else:
        facts["lazy_hooks"] = Fact(False, "no out-of-line arch_leave/arch_flush_lazy_mmu_mode "
                                   "or lazy_mmu_mode_disable with an atomic or a DSB")
    kc.pte_sites = sorted(set(setters) | {h for h in hooks if code.kinds(h).get("dsb.ishst")}
                          | {c for h in hooks for c in code.calls(h)
                             if code.kinds(c).get("dsb.ishst")})
    facts["vmap_calls_hook"] = Fact(bool(called), (
        f"{', '.join(loops)} call(s) {', '.join(called)}" if called else
        f"{', '.join(loops) or 'no vmap loop function'} call(s) no lazy-MMU hook"))

    gen = code.names(re.compile(r"^lazy_mmu_mode_(enable|disable)(#\d+)?$"))
    facts["generic_nesting"] = Fact(bool(gen), (
        f"vmlinux has {', '.join(sorted(set(g.split('#')[0] for g in gen)))}" if gen
        else "no lazy_mmu_mode_enable/disable symbols"))

    enters = code.names(re.compile(r"^arch_enter_lazy_mmu_mode(#\d+)?$"))
    orders = {o for n in enters if (o := _order(code.kinds(n)))}
    if orders:
        val = "full" if "full" in orders else "relaxed"
        facts["enter_atomic"] = Fact(val, f"arch_enter_lazy_mmu_mode: {val} atomic "
                                     f"({len(enters)} out-of-line copies)")

    if "free_vmap_area_noflush" in code.by_name:
        k = code.kinds("free_vmap_area_noflush")
        o = _order(k)
        if o:
            facts["lazy_nr_order"] = Fact(o, "free_vmap_area_noflush: "
                                          + ", ".join(sorted(_atomics(k))))

    if "pageattr_pte_entry" in code.by_name:
        facts["set_memory_pagewalk"] = Fact(True, "vmlinux has pageattr_pte_entry "
                                            "(set_memory_* through the pagewalk API)")
    elif "change_page_range" in code.by_name:
        facts["set_memory_pagewalk"] = Fact(False, "vmlinux has change_page_range "
                                            "(set_memory_* through apply_to_page_range)")

    sym = code.elf.symbol("nr_vmalloc_pages")
    facts["nr_vmalloc_pages"] = Fact(sym is not None, (
        "symbol nr_vmalloc_pages present (global atomic counter)" if sym is not None
        else "no symbol nr_vmalloc_pages (vmalloc pages counted as NR_VMALLOC vmstat)"))
    return kc
