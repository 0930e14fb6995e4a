"""Workloads: what a test run does to kernel page tables, expressed as modelled kernel calls.

A workload spec is a string (``"test_vmalloc run_test_mask=1 nr_pages=256"``), a preset
name from workloads.toml, or a dict (``{"kind": "test_vmalloc", "nr_pages": 256, ...}``).

Each test is a *setup*, a loop *body* (a list of named operations, each a sequence of
kernel calls) and a measurement policy. The loop is simulated, not extrapolated from one
iteration: vmalloc's lazy purge runs once every ``lazy_max_pages()`` of freed address
space, so a per-loop figure is the average over exactly one purge cycle in steady state
(after the page tables the loop touches exist). Workloads whose loop draws random sizes
are averaged over a fixed seeded sample and say so.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.errors import InputError
from orchestrator.sim import pagetable as P
from orchestrator.sim.features import DATA_DIR
from orchestrator.sim.kernel import THREAD_ALIGN, Kernel

PAGE = P.PAGE_SIZE


def _data() -> dict:
    return tomllib.loads((DATA_DIR / "workloads.toml").read_text())


def presets() -> dict[str, str]:
    return dict(_data()["presets"])


_SIZE_RE = re.compile(r"^(\d+)([KMGT]?)$", re.I)


def parse_size(s: str | int) -> int:
    if isinstance(s, int):
        return s
    m = _SIZE_RE.match(str(s).strip())
    if not m:
        raise InputError(f"cannot parse size {s!r}", hint="use e.g. 16G, 512M or a byte count")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    return int(m.group(1)) * mult


def parse_workload(spec: str | dict) -> dict:
    """Normalise a workload spec into a dict with ``kind`` and every parameter filled in."""
    data = _data()
    if isinstance(spec, str):
        s = spec.strip()
        if s in data["presets"]:
            s = data["presets"][s]
        words = s.split()
        if not words:
            raise InputError(
                "empty workload", hint="e.g. 'test_vmalloc run_test_mask=1 nr_pages=256'"
            )
        d: dict = {"kind": words[0]}
        for w in words[1:]:
            if "=" not in w:
                raise InputError(
                    f"workload parameter {w!r} is not key=value", hint="e.g. nr_pages=256"
                )
            k, v = w.split("=", 1)
            d[k] = v
    else:
        d = dict(spec)
    kind = d.get("kind")
    if kind == "vm_map_ram":  # shorthand
        kind = d["kind"] = "test_vmalloc"
        d.setdefault("run_test_mask", 1024)
    if kind not in ("test_vmalloc", "set_memory", "map_mem", "nested"):
        raise InputError(
            f"unknown workload kind {kind!r}",
            hint="kinds: test_vmalloc, set_memory, map_mem, nested; presets: "
            + ", ".join(data["presets"]),
        )
    defaults = data[kind]
    out = {"kind": kind}
    for k, dv in defaults.items():
        v = d.get(k, dv)
        if isinstance(dv, int) and not isinstance(v, int):
            try:
                v = int(str(v), 0)
            except ValueError:
                raise InputError(
                    f"{kind} parameter {k}={v!r} is not an integer", hint=f"e.g. {k}={dv}"
                ) from None
        out[k] = v
    if out.get("atomics", "lse") not in ("lse", "llsc"):
        raise InputError(f"atomics={out['atomics']!r}: give lse or llsc",
                         hint="llsc when the kernel has ARM64_USE_LSE_ATOMICS off or the CPU "
                              "lacks LSE")
    unknown = set(d) - set(defaults) - {"kind", "mode"}
    if unknown:
        raise InputError(
            f"unknown {kind} parameters: {', '.join(sorted(unknown))}",
            hint=f"known: {', '.join(defaults)}",
        )
    if "mode" in d:
        out["mode"] = d["mode"]
    return out


KERNEL_PARAMS = ("atomics", "hugetlb_page", "ptdump_debugfs", "rodata_full")


def with_kernel_params(spec: str | dict, params: dict | None) -> dict:
    """``spec`` parsed, with the kernel parameters (from the kernel's config: infer_kernel's
    ``params``) that its kind takes filled in; parameters the spec sets itself win."""
    w = parse_workload(spec)
    if isinstance(spec, str):
        s = _data()["presets"].get(spec.strip(), spec)
        explicit = {word.split("=", 1)[0] for word in s.split()[1:] if "=" in word}
    else:
        explicit = set(spec)
    defaults = _data()[w["kind"]]
    for k, v in (params or {}).items():
        if k in KERNEL_PARAMS and k in defaults and k not in explicit:
            w[k] = v
    return parse_workload(w)


# ---------------------------------------------------------------------------- tests
Op = tuple[str, Callable[[Kernel, dict], None]]


@dataclass
class TestSpec:
    name: str
    body: list[Op]
    setup: Callable[[Kernel, dict], None] | None = None
    loops: int = 1
    repeat: int = 1
    random_window: int = 0  # >0: average over this many seeded iterations
    one_shot: bool = False  # the "loop" runs once (map_mem, align_shift)
    notes: list[str] = field(default_factory=list)
    pages_per_loop: int = 0


def _touch(k: Kernel, st: dict, key: str = "a") -> None:
    k.m.access(st[key].addr, what="touch")


def _op_vmalloc(pages: int, huge: bool = False, align: int = PAGE, key: str = "a") -> Op:
    def f(k: Kernel, st: dict) -> None:
        st[key] = k.vmalloc(pages * PAGE, huge=huge, align=align)

    return ("vmalloc_huge" if huge else "vmalloc", f)


def _op_touch(key: str = "a") -> Op:
    return ("touch", lambda k, st: _touch(k, st, key))


def _op_vfree(key: str = "a") -> Op:
    return ("vfree", lambda k, st: k.vfree(st.pop(key)))


def test_vmalloc_tests(w: dict) -> tuple[list[TestSpec], list[str]]:
    mask = w["run_test_mask"]
    nr = w["nr_pages"] if w["nr_pages"] > 0 else 1
    loops = w["test_loop_count"]
    rep = w["test_repeat_count"]
    ncpus = max(1, w["ncpus"])
    tests: list[TestSpec] = []
    skipped: list[str] = []

    def add(bit: int, t: TestSpec) -> None:
        if mask & bit:
            t.loops, t.repeat = (1 if t.one_shot else loops), rep
            tests.append(t)

    add(
        1,
        TestSpec(
            "fix_size_alloc_test",
            [_op_vmalloc(nr, bool(w["use_huge"])), _op_touch(), _op_vfree()],
            pages_per_loop=nr,
        ),
    )

    def full_fit_setup(k: Kernel, st: dict) -> None:
        junk_length = ncpus.bit_length() * (32 * 1024 * 1024 // PAGE)
        st["ptr"] = k.vmalloc(8 * junk_length)
        st["junk"] = k.vmalloc(8 * junk_length)
        ptrs, junk = [], []
        for _ in range(junk_length):
            ptrs.append(k.vmalloc(PAGE))
            junk.append(k.vmalloc(PAGE))
        for a in junk:
            k.vfree(a)

    add(
        2,
        TestSpec(
            "full_fit_alloc_test",
            [_op_vmalloc(1), _op_touch(), _op_vfree()],
            setup=full_fit_setup,
            pages_per_loop=1,
            notes=[
                "full_fit: setup (2 x fls(ncpus) x 8192 one-page vmallocs, half "
                "freed) is simulated; the allocator is first-fit-lowest, an "
                "approximation of the augmented free tree"
            ],
        ),
    )

    def busy_setup(k: Kernel, st: dict) -> None:
        st["ptr"] = k.vmalloc(8 * 15000)
        st["busy"] = [k.vmalloc(PAGE) for _ in range(15000)]

    add(
        4,
        TestSpec(
            "long_busy_list_alloc_test",
            [
                _op_vmalloc(100, key="a"),
                _op_vmalloc(1, key="b"),
                _op_touch("a"),
                _op_touch("b"),
                _op_vfree("a"),
                _op_vfree("b"),
            ],
            setup=busy_setup,
            pages_per_loop=101,
        ),
    )

    def rnd_size(k: Kernel, st: dict) -> None:
        n = st["rng"].randint(1, 100)
        st["a"] = k.vmalloc(n * PAGE)

    add(
        8,
        TestSpec(
            "random_size_alloc_test",
            [("vmalloc", rnd_size), _op_touch(), _op_vfree()],
            random_window=2000,
            pages_per_loop=50,
            notes=[
                "random_size: averaged over 2000 seeded iterations "
                "(sizes U[1,100] pages); the kernel's draws differ"
            ],
        ),
    )
    add(
        16,
        TestSpec(
            "fix_align_alloc_test",
            [_op_vmalloc(5, align=THREAD_ALIGN << 1), _op_touch(), _op_vfree()],
            pages_per_loop=5,
            notes=["fix_align: THREAD_ALIGN assumed 32K (arm64, 4K pages, VMAP_STACK)"],
        ),
    )

    def rnd_align(k: Kernel, st: dict) -> None:
        rnd = st["rng"].randrange(256)
        align = 1 << (rnd % 23)
        st["a"] = k.vmalloc(((rnd % 10) + 1) * PAGE, align=max(align, PAGE))

    add(
        32,
        TestSpec(
            "random_size_align_alloc_test",
            [("vmalloc", rnd_align), _op_vfree()],
            random_window=2000,
            pages_per_loop=5,
            notes=["random_size_align: averaged over 2000 seeded draws of get_random_u8()"],
        ),
    )

    def align_shift(k: Kernel, st: dict) -> None:
        for i in range(64):  # BITS_PER_LONG
            try:
                a = k.vmalloc(PAGE, align=max(1 << i, PAGE))
            except MemoryError:
                return  # expected to fail: the test returns -1 here
            k.vfree(a)

    add(
        64,
        TestSpec(
            "align_shift_alloc_test",
            [("align_shift", align_shift)],
            one_shot=True,
            notes=[
                "align_shift: one pass over 64 alignments per repeat (not "
                "test_loop_count times); fails when no aligned VA exists"
            ],
        ),
    )
    if mask & 128:
        skipped.append("pcpu_alloc_test (percpu chunk population is not modelled)")
    for bit, name in (
        (256, "kvfree_rcu_1_arg_vmalloc_test"),
        (512, "kvfree_rcu_2_arg_vmalloc_test"),
    ):
        add(
            bit,
            TestSpec(
                name,
                [_op_vmalloc(1), _op_touch(), _op_vfree()],
                pages_per_loop=1,
                notes=[
                    f"{name}: the RCU-deferred vfree is modelled as an immediate "
                    "vfree (same page-table work, different timing)"
                ],
            ),
        )

    def vmr_setup(k: Kernel, st: dict) -> None:
        pfn = k.pt.alloc_pages(nr)
        st["pages"] = range(pfn, pfn + nr)

    def vmr_map(k: Kernel, st: dict) -> None:
        st["a"] = k.vm_map_ram(st["pages"])

    def vmr_unmap(k: Kernel, st: dict) -> None:
        k.vm_unmap_ram(st.pop("a"))

    add(
        1024,
        TestSpec(
            "vm_map_ram_test",
            [("vm_map_ram", vmr_map), _op_touch(), ("vm_unmap_ram", vmr_unmap)],
            setup=vmr_setup,
            pages_per_loop=nr,
            notes=[
                "vm_map_ram: per-CPU vmap blocks (1024 pages) with bump "
                "allocation; a block is freed (lazily) once fully dirty"
            ],
        ),
    )
    for bit, name in ((2048, "no_block_alloc_test"), (4096, "vrealloc_test")):
        if mask & bit:
            skipped.append(f"{name} (newer kernels; not modelled)")
    return tests, skipped


def set_memory_tests(w: dict) -> tuple[list[TestSpec], list[str]]:
    n = w["pages"]
    masks = {
        "ro": (P.PTE_RDONLY, P.PTE_WRITE),
        "rw": (P.PTE_WRITE, P.PTE_RDONLY),
        "nx": (P.PTE_PXN, 0),
        "x": (0, P.PTE_PXN),
        "valid": (P.PTE_VALID, 0),
        "invalid": (0, P.PTE_VALID),
    }
    op = w["op"]
    if op not in masks:
        raise InputError(f"unknown set_memory op {op!r}", hint=f"one of {', '.join(masks)}")
    s, c = masks[op]

    def setup(k: Kernel, st: dict) -> None:
        st["a"] = k.vmalloc(n * PAGE)

    def body(k: Kernel, st: dict) -> None:
        k.set_memory(st["a"], s, c, what=f"set_memory_{op}")

    return [
        TestSpec(
            f"set_memory_{op}",
            [(f"set_memory_{op}", body)],
            setup=setup,
            loops=w["loops"],
            pages_per_loop=n,
        )
    ], []


def map_mem_tests(w: dict) -> tuple[list[TestSpec], list[str]]:
    size = parse_size(w["mem"])
    nb = bool(w["rodata_full"])

    def body(k: Kernel, st: dict) -> None:
        k.create_pgd_mapping(
            P.PHYS_OFFSET, P.PAGE_OFFSET, size, P.PAGE_KERNEL, no_block=nb, no_cont=nb
        )

    return [
        TestSpec(
            "map_mem",
            [("__create_pgd_mapping", body)],
            one_shot=True,
            pages_per_loop=size // PAGE,
            notes=[
                "map_mem: one memblock region at PHYS_OFFSET; the kernel image "
                "and reserved-region carve-outs are not modelled"
            ],
        )
    ], []


def nested_tests(w: dict) -> tuple[list[TestSpec], list[str]]:
    a, b, c = w["a"], w["b"], w["c"]

    def setup(k: Kernel, st: dict) -> None:
        area = k.vmalloc((a + c) * PAGE)
        st["outer"] = area
        pfn = k.pt.alloc_pages(b)
        la = P.PAGE_OFFSET + (pfn << P.PAGE_SHIFT) - P.PHYS_OFFSET
        k.ensure_linear_mapped(la, b)
        st["la"] = la

    def outer_writes(first: int, n: int):
        def f(k: Kernel, st: dict) -> None:
            m = k.m
            area = st["outer"]
            pmd = k._lookup_pmd(area.addr)
            for j in range(first, first + n):
                va = area.addr + j * PAGE
                pte = k.pt.child(k._lookup_pmd(va).e[P.index(va, 2)])
                m.set_pte(pte, P.index(va, 3), (area.pages[j] << P.PAGE_SHIFT) | P.PAGE_KERNEL)
            del pmd

        return f

    def enter(k: Kernel, st: dict) -> None:
        st["state"] = k.m.lazy_enter()

    def leave(k: Kernel, st: dict) -> None:
        k.m.lazy_leave(st.pop("state"))

    def inner(k: Kernel, st: dict) -> None:
        if b:
            k.kernel_map_pages(st["la"], b, True)
            k.m.access(st["la"], what="page allocated inside the outer section")
        else:  # b = 0: an inner lazy section that writes nothing
            p = k.m.enter("apply_to_pte_range")
            k.m.lazy_leave(k.m.lazy_enter())
            k.m.exit(p)

    return [
        TestSpec(
            "nested_debug_pagealloc",
            [
                ("outer_enter", enter),
                ("outer_writes_a", outer_writes(0, a)),
                ("inner_kernel_map_pages", inner),
                ("outer_writes_c", outer_writes(a, c)),
                ("outer_leave", leave),
            ],
            setup=setup,
            loops=w["loops"],
            pages_per_loop=a + b + c,
            notes=[
                "nested: the outer section stands for a lazy section writing "
                "kernel ptes (DOMAIN.md's a/b/c scenario); the inner call is "
                "DEBUG_PAGEALLOC's __kernel_map_pages (set_memory_valid, "
                "including its TLB flush)"
            ],
        )
    ], []


def tests_for(w: dict) -> tuple[list[TestSpec], list[str]]:
    return {
        "test_vmalloc": test_vmalloc_tests,
        "set_memory": set_memory_tests,
        "map_mem": map_mem_tests,
        "nested": nested_tests,
    }[w["kind"]](w)


def kernel_options(w: dict) -> dict:
    ncpus = max(1, w.get("ncpus", 1))
    opts = {"ncpus_online": ncpus}
    for key in ("rodata_full", "hugetlb_page", "ptdump_debugfs"):
        if key in w:
            opts[key] = bool(w[key])
    return opts
