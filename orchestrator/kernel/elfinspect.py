"""What a built arm64 kernel is, read from its ``vmlinux``: identity, config and barriers.

The batching patches change *where* the kernel-mapping barriers sit (``dsb ishst; isb``
once per pte inside the vmap loop in 6.12, once after the loop from 6.16), and since the
barriers come from inlined helpers they land in whatever out-of-line function the compiler
chose. Reading the machine code is the only way to know what a given build really does,
without trusting the source or the config. This module gives:

* :func:`read_info` -> :class:`KernelInfo`: GNU build-id (the note the running kernel
  exports in ``/sys/kernel/notes``, so a booted kernel can be matched to its build), the
  release (from ``linux_banner`` / ``init_uts_ns``) and the embedded ``.config``
  (CONFIG_IKCONFIG: gzip between ``IKCFG_ST`` and ``IKCFG_ED``).
* :func:`barrier_census` -> ``{name: FunctionCensus}``: per function, counts of DSB by
  domain, DMB by domain, ISB and TLBI by operation; for DSBs, and for calls to functions
  that have barriers, whether they sit inside a loop (on a cycle of the function's
  control-flow graph) or after one.
* :func:`symbol_ranges`: ``[(name, start, end)]`` for names or glob patterns (a QEMU
  plugin attributes executed barriers to functions with them).
* :func:`compare_census`: which functions changed between two builds.
* ``mmlab inspect``: the command line over all of that.

Speed: the symbol table is read as one numpy structured array and each executable section
once as a uint32 array; barrier and branch words are found with vectorised masks, and the
loops of all the functions that need them come from one sparse-graph computation
(scipy), so Python only touches the few thousand interesting words (the default 6.12
vmlinux, 21k functions: about 0.7 s).
"""

from __future__ import annotations

import fnmatch
import gzip
import json
import os
import re
import sys
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import click
import numpy as np
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from orchestrator.errors import InputError
from orchestrator.kernel import aarch64

SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4
STT_FUNC = 2
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
SHN_LORESERVE = 0xFF00

_SYM_DTYPE = np.dtype([
    ("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"),
    ("value", "<u8"), ("size", "<u8"),
])

# Options worth a line in the text summary of an embedded config.
CONFIG_SUMMARY_KEYS = (
    "CONFIG_LOCALVERSION", "CONFIG_ARM64_4K_PAGES", "CONFIG_ARM64_16K_PAGES",
    "CONFIG_ARM64_64K_PAGES", "CONFIG_ARM64_VA_BITS", "CONFIG_PGTABLE_LEVELS", "CONFIG_SMP",
    "CONFIG_NR_CPUS", "CONFIG_PREEMPT", "CONFIG_PREEMPT_NONE", "CONFIG_PREEMPT_VOLUNTARY",
    "CONFIG_TEST_VMALLOC", "CONFIG_PTDUMP_DEBUGFS", "CONFIG_DEBUG_PAGEALLOC",
    "CONFIG_DEBUG_WX", "CONFIG_KASAN", "CONFIG_RANDOMIZE_BASE", "CONFIG_KEXEC",
    "CONFIG_KEXEC_FILE",
)


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class KernelInfo:
    """Identity of a vmlinux: what ``mmlab inspect`` prints first."""

    path: Path
    build_id: str | None
    release: str | None
    banner: str | None
    config: dict[str, str] | None  # {CONFIG_X: value}, unset options absent; None: no IKCONFIG

    def config_summary(self) -> dict[str, str]:
        if self.config is None:
            return {}
        return {k: self.config[k] for k in CONFIG_SUMMARY_KEYS if k in self.config}

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "build_id": self.build_id,
            "release": self.release,
            "banner": self.banner,
            "config": None if self.config is None else {
                "options": len(self.config), "summary": self.config_summary()},
        }


@dataclass
class FunctionCensus:
    """Barriers in one function's bytes.

    ``counts`` keys: ``dsb.<domain>`` (``dsb.ishst``, ``dsb.ish``, ``dsb.sy``...),
    ``dmb.<domain>``, ``isb``, ``tlbi.<op>`` (``tlbi.vaale1is``...); absent means 0.
    ``dsb_in_loop``: DSBs on a cycle of the function's control-flow graph (a backward
    branch of the function spans them *and* flow from its target gets back to it: a
    backward branch out of a loop to a shared tail does not count). ``dsb_after_loop``:
    DSBs on no cycle that a loop of the function reaches. DSBs that only come before
    loops, or in functions without loops, are in neither.
    ``aliases``: other symbol names at the same address and size (e.g. ``__pi_memcpy``).
    ``calls_in_loop`` / ``calls_after_loop``: {callee: number of BL sites} for direct calls
    to functions that have barriers of their own, placed like the DSBs are. When the
    compiler keeps a helper out of line (``-Os`` builds keep ``__set_ptes`` as a
    ``.constprop`` clone), the barrier is in the callee and the loop is in the caller:
    this is where that shows.
    """

    name: str
    address: int
    size: int
    counts: dict[str, int] = field(default_factory=dict)
    dsb_in_loop: int = 0
    dsb_after_loop: int = 0
    aliases: tuple[str, ...] = ()
    calls_in_loop: dict[str, int] = field(default_factory=dict)
    calls_after_loop: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def dsb_total(self) -> int:
        return sum(v for k, v in self.counts.items() if aarch64.is_dsb_key(k))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "size": self.size,
            "counts": dict(sorted(self.counts.items(), key=lambda kv: _key_order(kv[0]))),
            "dsb_in_loop": self.dsb_in_loop,
            "dsb_after_loop": self.dsb_after_loop,
            "aliases": list(self.aliases),
            "calls_in_loop": dict(sorted(self.calls_in_loop.items())),
            "calls_after_loop": dict(sorted(self.calls_after_loop.items())),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FunctionCensus:
        return cls(
            name=data["name"], address=int(data["address"]), size=int(data["size"]),
            counts={k: int(v) for k, v in data.get("counts", {}).items()},
            dsb_in_loop=int(data.get("dsb_in_loop", 0)),
            dsb_after_loop=int(data.get("dsb_after_loop", 0)),
            aliases=tuple(data.get("aliases", ())),
            calls_in_loop={k: int(v) for k, v in data.get("calls_in_loop", {}).items()},
            calls_after_loop={k: int(v) for k, v in data.get("calls_after_loop", {}).items()},
        )


@dataclass(frozen=True)
class CensusChange:
    """One function whose barriers differ between two builds."""

    name: str
    kind: str  # "changed", "added" (only in the second build), "removed" (only in the first)
    before: FunctionCensus | None
    after: FunctionCensus | None
    details: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "details": list(self.details),
            "before": self.before.to_json() if self.before else None,
            "after": self.after.to_json() if self.after else None,
        }


def _key_order(key: str) -> tuple[int, str]:
    family = key.split(".", 1)[0]
    return ({"dsb": 0, "dmb": 1, "isb": 2, "tlbi": 3}.get(family, 9), key)


# --------------------------------------------------------------------------- ELF access


@dataclass(frozen=True)
class _Section:
    index: int
    name: str
    addr: int
    offset: int
    size: int
    flags: int
    nobits: bool


@dataclass(frozen=True)
class _Function:
    name: str
    address: int
    size: int
    shndx: int
    aliases: tuple[str, ...]


class _Elf:
    """A validated aarch64 ELF: section table, symbols, reads by file offset or address."""

    def __init__(self, path: Path):
        self.path = path
        self.sections: list[_Section] = []
        with open(path, "rb") as f:
            try:
                elf = ELFFile(f)
                self._check_arch(elf)
                for i, sec in enumerate(elf.iter_sections()):
                    h = sec.header
                    self.sections.append(_Section(
                        i, sec.name, h.sh_addr, h.sh_offset, h.sh_size, h.sh_flags,
                        h.sh_type == "SHT_NOBITS"))
                self.build_id = self._read_build_id(elf)
                symtab = elf.get_section_by_name(".symtab")
                self._symtab = None
                if symtab is not None and symtab.header.sh_entsize == _SYM_DTYPE.itemsize:
                    strtab = elf.get_section(symtab.header.sh_link)
                    self._symtab = (symtab.header.sh_offset, symtab.header.sh_size,
                                    strtab.header.sh_offset, strtab.header.sh_size)
            except ELFError as exc:
                raise InputError(f"{path} is a corrupt ELF file ({exc})",
                                 hint="rebuild the kernel or pass another vmlinux") from None
        self._symbols: tuple[np.ndarray, bytes] | None = None
        self._functions: list[_Function] | None = None

    def _check_arch(self, elf: ELFFile) -> None:
        machine = elf["e_machine"]
        if machine != "EM_AARCH64":
            pretty = {"EM_X86_64": "x86-64", "EM_386": "i386", "EM_ARM": "32-bit arm",
                      "EM_RISCV": "riscv"}.get(machine, str(machine))
            raise InputError(
                f"{self.path} is an ELF file for {pretty}, not aarch64",
                hint="pass the arm64 vmlinux from an arm64 kernel build (ARCH=arm64)")
        if elf.elfclass != 64 or not elf.little_endian:
            raise InputError(
                f"{self.path} is a {elf.elfclass}-bit "
                f"{'little' if elf.little_endian else 'big'}-endian aarch64 ELF; "
                "only 64-bit little-endian is supported",
                hint="build the kernel without CPU_BIG_ENDIAN")

    @staticmethod
    def _read_build_id(elf: ELFFile) -> str | None:
        for sec in elf.iter_sections():
            if sec.header.sh_type != "SHT_NOTE":
                continue
            try:
                for note in sec.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                        return str(note["n_desc"])
            except (ELFError, ValueError, KeyError):
                continue
        return None

    def read(self, offset: int, size: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise InputError(f"{self.path} is truncated (wanted {size} bytes at {offset:#x})",
                             hint="the vmlinux is incomplete: rebuild the kernel")
        return data

    def section_at(self, addr: int) -> _Section | None:
        for sec in self.sections:
            if sec.flags & SHF_ALLOC and not sec.nobits and sec.addr <= addr < sec.addr + sec.size:
                return sec
        return None

    def read_addr(self, addr: int, size: int) -> bytes | None:
        """Bytes at a virtual address (clipped to the containing section); None if unmapped."""
        sec = self.section_at(addr)
        if sec is None:
            return None
        size = min(size, sec.addr + sec.size - addr)
        return self.read(sec.offset + addr - sec.addr, size)

    def symbols(self) -> tuple[np.ndarray, bytes]:
        if self._symtab is None:
            raise InputError(f"{self.path} has no symbol table (.symtab)",
                             hint="use the unstripped vmlinux from the build directory")
        if self._symbols is None:
            off, size, stroff, strsize = self._symtab
            syms = np.frombuffer(self.read(off, size), dtype=_SYM_DTYPE)
            self._symbols = (syms, self.read(stroff, strsize))
        return self._symbols

    def symbol(self, name: str) -> tuple[int, int] | None:
        """(value, size) of the first symbol called ``name``."""
        if self._symtab is None:
            return None
        syms, strtab = self.symbols()
        # ld merges string tails ("init_uts_ns" may live inside "__init_uts_ns"), so every
        # occurrence of name + NUL is a candidate offset.
        needle = name.encode() + b"\0"
        offsets = []
        pos = strtab.find(needle)
        while pos >= 0:
            offsets.append(pos)
            pos = strtab.find(needle, pos + 1)
        if not offsets:
            return None
        hits = np.flatnonzero(np.isin(syms["name"], offsets))
        if not len(hits):
            return None
        s = syms[hits[0]]
        return int(s["value"]), int(s["size"])

    def functions(self) -> list[_Function]:
        """Function symbols with a size in executable sections, aliases merged, by address.

        Several names for one (address, size) are one function (``memcpy``/``__pi_memcpy``);
        the preferred name is global over weak over local, then the fewest leading
        underscores, the shortest, alphabetical. Distinct functions sharing a name (static
        functions of different files) get ``name#2``, ``name#3``... in address order.
        """
        if self._functions is not None:
            return self._functions
        syms, strtab = self.symbols()
        exec_idx = [s.index for s in self.sections if s.flags & SHF_EXECINSTR and not s.nobits]
        sel = syms[((syms["info"] & 0xF) == STT_FUNC) & (syms["size"] > 0)
                   & np.isin(syms["shndx"], exec_idx)]
        sel = sel[np.lexsort((sel["shndx"], sel["size"], sel["value"]))]  # by address
        # group boundaries: a new (value, size, shndx) starts a new function
        new = np.ones(len(sel), dtype=bool)
        new[1:] = ((sel["value"][1:] != sel["value"][:-1]) | (sel["size"][1:] != sel["size"][:-1])
                   | (sel["shndx"][1:] != sel["shndx"][:-1]))
        names = []
        for off in sel["name"].tolist():
            names.append(strtab[off:strtab.find(b"\0", off)].decode("utf-8", "replace"))
        binds = (sel["info"] >> 4).tolist()
        starts = np.flatnonzero(new).tolist() + [len(sel)]
        values, sizes, shndxs = sel["value"].tolist(), sel["size"].tolist(), sel["shndx"].tolist()
        rank = {STB_GLOBAL: 0, STB_WEAK: 1}
        funcs: list[_Function] = []
        seen: dict[str, int] = {}
        for g0, g1 in zip(starts[:-1], starts[1:], strict=True):
            if g1 - g0 == 1:
                primary, aliases = names[g0], ()
            else:
                ordered = sorted(zip(binds[g0:g1], names[g0:g1], strict=True), key=lambda bn: (
                    rank.get(bn[0], 2), len(bn[1]) - len(bn[1].lstrip("_")), len(bn[1]), bn[1]))
                uniq = list(dict.fromkeys(n for _, n in ordered))
                primary, aliases = uniq[0], tuple(uniq[1:])
            count = seen[primary] = seen.get(primary, 0) + 1
            if count > 1:
                primary = f"{primary}#{count}"
            funcs.append(_Function(primary, values[g0], sizes[g0], shndxs[g0], aliases))
        self._functions = funcs
        return funcs


def _resolve_path(vmlinux: Any) -> Path:
    """A vmlinux path from a path, an Artifact, an artifact directory or a build directory."""
    from orchestrator.kernel.artifacts import Artifact

    if isinstance(vmlinux, Artifact):
        return vmlinux.vmlinux
    path = Path(vmlinux).expanduser()
    if path.is_dir():
        if (path / "metadata.json").is_file():
            return Artifact.load(path).vmlinux
        if (path / "vmlinux").is_file():
            return path / "vmlinux"
        raise InputError(f"{path} is a directory with no vmlinux and no metadata.json",
                         hint="pass a vmlinux, a kernel build directory or an artifact")
    return path


@lru_cache(maxsize=4)
def _open_cached(path: str, mtime_ns: int, size: int) -> _Elf:
    return _Elf(Path(path))


def _open(vmlinux: Any) -> _Elf:
    path = _resolve_path(vmlinux)
    if not path.exists():
        raise InputError(f"vmlinux not found: {path}",
                         hint="build the kernel first (`mmlab build`) or fix the path")
    if not path.is_file():
        raise InputError(f"{path} is not a regular file", hint="pass the vmlinux ELF file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"\x7fELF":
        hint = "pass vmlinux (the ELF), not the compressed boot Image" \
            if path.name.startswith(("Image", "zImage", "bzImage")) else \
            "pass the vmlinux ELF from the kernel build directory or an artifact"
        raise InputError(f"{path} is not an ELF file", hint=hint)
    st = path.stat()
    return _open_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)


# --------------------------------------------------------------------------- identity


_BANNER_RE = re.compile(rb"Linux version (\S+) [^\0\n]*")


def _release(elf: _Elf) -> tuple[str | None, str | None]:
    """(release, banner) from linux_banner, else init_uts_ns, else a scan of .rodata."""
    sym = elf.symbol("linux_banner")
    if sym is not None:
        data = elf.read_addr(sym[0], sym[1] or 512)
        if data:
            m = _BANNER_RE.match(data)
            if m:
                return m.group(1).decode(errors="replace"), m.group(0).decode(errors="replace")
    sym = elf.symbol("init_uts_ns")
    if sym is not None:
        # struct uts_namespace starts with struct new_utsname: 6 fields of 65 bytes;
        # release is the third (sysname, nodename, release, version, machine, domainname).
        data = elf.read_addr(sym[0], 65 * 3)
        if data and len(data) == 65 * 3 and data.startswith(b"Linux\0"):
            rel = data[130:195].split(b"\0", 1)[0].decode(errors="replace")
            if rel:
                return rel, None
    for sec in elf.sections:
        if sec.name.startswith(".rodata") and not sec.nobits and sec.size:
            data = elf.read(sec.offset, sec.size)
            m = _BANNER_RE.search(data)
            if m:
                return m.group(1).decode(errors="replace"), m.group(0).decode(errors="replace")
    return None, None


def parse_config_text(text: str) -> dict[str, str]:
    """``.config`` text -> {CONFIG_X: value}; ``# ... is not set`` lines are left out
    (orchestrator.kernel.kconfig.parse_config_text, the one parser)."""
    from orchestrator.kernel.kconfig import parse_config_text as parse

    return parse(text)


def _config(elf: _Elf) -> dict[str, str] | None:
    """The IKCONFIG .config, or None when the kernel has none embedded."""
    blob: bytes | None = None
    start, end = elf.symbol("kernel_config_data"), elf.symbol("kernel_config_data_end")
    if start is not None and end is not None and end[0] > start[0]:
        blob = elf.read_addr(start[0], end[0] - start[0])
    if blob is None:
        for sec in elf.sections:
            if not (sec.flags & SHF_ALLOC) or sec.nobits or sec.flags & SHF_EXECINSTR:
                continue
            data = elf.read(sec.offset, sec.size)
            i = data.find(b"IKCFG_ST\x1f\x8b")
            if i >= 0:
                j = data.find(b"IKCFG_ED", i + 8)
                blob = data[i + 8:j if j >= 0 else len(data)]
                break
    if blob is None:
        return None
    try:
        # decompressobj tolerates padding after the gzip member
        text = zlib.decompressobj(wbits=31).decompress(blob)
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{elf.path}: the embedded kernel config is corrupt ({exc})",
                         hint="rebuild the kernel; or read the build's .config instead") from None
    return parse_config_text(text.decode("utf-8", "replace"))


def read_info(vmlinux: Any) -> KernelInfo:
    """Build-id, release and embedded config of a vmlinux (path, artifact or its directory).

    Raises :class:`InputError` for a missing file, a non-ELF file or a non-aarch64 ELF.
    """
    elf = _open(vmlinux)
    release, banner = _release(elf)
    return KernelInfo(path=elf.path, build_id=elf.build_id, release=release, banner=banner,
                      config=_config(elf))


# --------------------------------------------------------------------------- symbols


def _matcher(names_or_patterns: str | Iterable[str]) -> tuple[set[str], list[str]]:
    if isinstance(names_or_patterns, str):
        names_or_patterns = [names_or_patterns]
    exact: set[str] = set()
    globs: list[str] = []
    for item in names_or_patterns:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            if any(c in part for c in "*?["):
                globs.append(part)
            else:
                exact.add(part)
    return exact, globs


def _matches(fn: _Function, exact: set[str], globs: list[str]) -> str | None:
    """The name of ``fn`` the selection asked for (exact names first), or None."""
    names = (fn.name, *fn.aliases)
    for n in names:
        if n in exact:
            return n
    for n in names:
        if any(fnmatch.fnmatchcase(n, g) for g in globs):
            return fn.name
    return None


def symbol_ranges(vmlinux: Any, names_or_patterns: str | Iterable[str], *,
                  strict: bool = True) -> list[tuple[str, int, int]]:
    """``[(name, start, end)]`` of the functions named or matching glob patterns.

    ``end`` is exclusive (start + st_size). Sorted by start; aliases count once. With
    ``strict`` (the default), an exact name or a pattern that matches no function is an
    :class:`InputError` (a typo, or a function the compiler inlined in this build).
    """
    elf = _open(vmlinux)
    exact, globs = _matcher(names_or_patterns)
    out: list[tuple[str, int, int]] = []
    used: set[str] = set()
    for fn in elf.functions():
        hit = _matches(fn, exact, globs)
        if hit is not None:
            out.append((hit, fn.address, fn.address + fn.size))
            used.update(n for n in (fn.name, *fn.aliases) if n in exact)
            used.update(g for g in globs
                        if any(fnmatch.fnmatchcase(n, g) for n in (fn.name, *fn.aliases)))
    if strict:
        missing = sorted((exact | set(globs)) - used)
        if missing:
            raise InputError(
                f"no function {', '.join(missing)} in {elf.path}",
                hint="check the name (it may be inlined in this build); "
                     "`mmlab inspect --all --functions 'PATTERN*'` lists candidates")
    return out


# --------------------------------------------------------------------------- census


def barrier_census(vmlinux_path: Any, functions: str | Iterable[str] | None = None
                   ) -> dict[str, FunctionCensus]:
    """Barriers per function: ``{name: FunctionCensus}`` in address order.

    ``functions``: None for every function, else names and/or glob patterns (a name that
    is an alias selects its function, keyed by the requested name). Functions without
    barriers are included with empty counts. Words are read from each executable section
    once; barrier and branch words are found with numpy masks.
    """
    elf = _open(vmlinux_path)
    funcs = elf.functions()
    if functions is not None:
        exact, globs = _matcher(functions)
        chosen = [(hit, fn) for fn in funcs
                  if (hit := _matches(fn, exact, globs)) is not None]
    else:
        chosen = [(fn.name, fn) for fn in funcs]
    # Pass 1: every function's own barriers (a caller's census needs to know which of its
    # callees have barriers, whether or not they were selected).
    scans: dict[int, _SectionScan] = {}
    own: dict[_Function, dict[str, int]] = {}  # counts of the functions with barriers
    by_section: dict[int, list[_Function]] = {}
    for fn in funcs:
        by_section.setdefault(fn.shndx, []).append(fn)
    for shndx, members in by_section.items():
        scan = scans[shndx] = _SectionScan(elf, elf.sections[shndx], members)
        for fn, counts in scan.counts():
            own[fn] = counts
    barrier_fns: dict[int, str] = {}  # address -> name, for calls
    for fn in own:
        barrier_fns.setdefault(fn.address, fn.name)
    # Pass 2: placement of DSBs and of calls to barrier functions, for the selection.
    result: dict[str, FunctionCensus] = {}
    chosen_by_section: dict[int, list[tuple[_Function, FunctionCensus]]] = {}
    for label, fn in chosen:
        cen = result[label] = FunctionCensus(
            label, fn.address, fn.size, counts=dict(own.get(fn, {})),
            aliases=fn.aliases)
        chosen_by_section.setdefault(fn.shndx, []).append((fn, cen))
    for shndx, pairs in chosen_by_section.items():
        scans[shndx].placements(pairs, barrier_fns)
    return result


class _SectionScan:
    """One executable section as words: its barriers, its loops and its calls.

    Positions are byte offsets from the section start (kernel addresses, 0xffff8000...,
    do not fit numpy's int64); word ``i`` is at offset ``4 * i``.
    """

    def __init__(self, elf: _Elf, sec: _Section, members: list[_Function]):
        self.sec = sec
        data = elf.read(sec.offset, sec.size - sec.size % 4)
        self.words = np.frombuffer(data, dtype="<u4")
        b_idx, self.b_keys = aarch64.find_barriers(self.words)
        self.b_off = 4 * b_idx.astype(np.int64)
        self.b_dsb = np.array([aarch64.is_dsb_key(k) for k in self.b_keys], dtype=bool)
        self.members = members

    def counts(self) -> Iterable[tuple[_Function, dict[str, int]]]:
        """(function, counts) for the functions of the section that have barriers."""
        if not len(self.b_off):
            return
        starts = np.array([fn.address - self.sec.addr for fn in self.members], dtype=np.int64)
        ends = starts + np.array([fn.size for fn in self.members], dtype=np.int64)
        lo = np.searchsorted(self.b_off, starts, side="left")
        hi = np.searchsorted(self.b_off, ends, side="left")
        for k in np.flatnonzero(hi > lo).tolist():
            counts: dict[str, int] = {}
            for key in self.b_keys[int(lo[k]):int(hi[k])]:
                counts[key] = counts.get(key, 0) + 1
            yield self.members[k], counts

    def loop_flags(self, starts: np.ndarray, ends: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(in a loop, after a loop) per word of the functions [starts, ends), and the index
        of each function's first word in those arrays (the functions' words laid end to end).

        Control-flow graph: nodes are instructions; edges are fall-through (not after B,
        BR, RET, ERET, BRK, UDF) and direct branch targets inside the same function. A word
        is *in a loop* when it lies on a cycle: a non-trivial strongly connected component,
        or a branch to itself. It is *after a loop* when it is on no cycle but a cycle
        reaches it. All the functions at once, with scipy's sparse-graph code.
        """
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import breadth_first_order, connected_components

        lens = (ends - starts) // 4
        base = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        n = int(lens.sum())
        fid = np.repeat(np.arange(len(lens)), lens)
        gidx = np.arange(n, dtype=np.int64) - base[fid] + starts[fid] // 4
        w = self.words[gidx]

        opc = (w >> np.uint32(21)) & np.uint32(0xF)
        stops = (
            ((w & np.uint32(0xFC000000)) == np.uint32(0x14000000))            # B
            | (((w & np.uint32(0xFE000000)) == np.uint32(0xD6000000)) & (opc != 1))  # BR/RET..
            | ((w & np.uint32(0xFFE0001F)) == np.uint32(0xD4200000))          # BRK
            | ((w & np.uint32(0xFFFF0000)) == 0)                              # UDF
        )
        ft = np.flatnonzero(~stops[:-1] & (fid[:-1] == fid[1:]))
        br_off, br_tgt = aarch64.find_branches(w, 0)
        src, dst = br_off // 4, br_tgt // 4  # branch offsets are relative: compact is fine
        lo, hi = base[fid[src]], base[fid[src]] + lens[fid[src]]
        ok = (dst >= lo) & (dst < hi)
        src, dst = np.concatenate([ft, src[ok]]), np.concatenate([ft + 1, dst[ok]])

        graph = csr_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
        _, labels = connected_components(graph, directed=True, connection="strong")
        in_loop = np.bincount(labels)[labels] > 1
        in_loop[src[src == dst]] = True
        # reachability from any loop: one breadth-first search from an extra node that
        # points at every word on a cycle
        seeds = np.flatnonzero(in_loop)
        src2 = np.concatenate([src, np.full(len(seeds), n)])
        dst2 = np.concatenate([dst, seeds])
        graph2 = csr_matrix((np.ones(len(src2), dtype=np.int8), (src2, dst2)),
                            shape=(n + 1, n + 1))
        reached = np.zeros(n + 1, dtype=bool)
        reached[breadth_first_order(graph2, n, directed=True, return_predecessors=False)] = True
        return in_loop, reached[:n] & ~in_loop, base

    def placements(self, pairs: list[tuple[_Function, FunctionCensus]],
                   barrier_fns: dict[int, str]) -> None:
        """Fill DSB and call placement for the functions of this section in ``pairs``."""
        bl_idx = np.flatnonzero((self.words & np.uint32(0xFC000000)) == np.uint32(0x94000000))
        imm = self.words[bl_idx].astype(np.int64) & 0x3FFFFFF
        bl_off = 4 * bl_idx.astype(np.int64)
        bl_tgt = bl_off + 4 * ((imm ^ 0x2000000) - 0x2000000)
        rel_targets = np.array([addr - self.sec.addr for addr in barrier_fns], dtype=np.int64)
        to_barrier = np.isin(bl_tgt, rel_targets)
        bl_off, bl_tgt = bl_off[to_barrier], bl_tgt[to_barrier]
        dsb_off = self.b_off[self.b_dsb]
        starts = np.array([fn.address - self.sec.addr for fn, _ in pairs], dtype=np.int64)
        ends = starts + np.array([fn.size for fn, _ in pairs], dtype=np.int64)
        d_lo, d_hi = np.searchsorted(dsb_off, starts), np.searchsorted(dsb_off, ends)
        c_lo, c_hi = np.searchsorted(bl_off, starts), np.searchsorted(bl_off, ends)
        todo = np.flatnonzero((d_hi > d_lo) | (c_hi > c_lo))
        if not len(todo):
            return
        in_loop, after, cbase = self.loop_flags(starts[todo], ends[todo])
        for j, k in enumerate(todo.tolist()):
            fn, cen = pairs[k]
            shift = int(cbase[j]) - int(starts[k]) // 4  # section word index -> compact index
            d = dsb_off[d_lo[k]:d_hi[k]] // 4 + shift
            cen.dsb_in_loop += int(in_loop[d].sum())
            cen.dsb_after_loop += int(after[d].sum())
            for off, tgt in zip(bl_off[c_lo[k]:c_hi[k]].tolist(),
                                bl_tgt[c_lo[k]:c_hi[k]].tolist(), strict=True):
                callee = barrier_fns[self.sec.addr + tgt]
                if callee == fn.name:
                    continue  # recursion
                i = off // 4 + shift
                place = cen.calls_in_loop if in_loop[i] else \
                    cen.calls_after_loop if after[i] else None
                if place is not None:
                    place[callee] = place.get(callee, 0) + 1


def with_barriers(census: dict[str, FunctionCensus]) -> dict[str, FunctionCensus]:
    return {k: v for k, v in census.items() if v.counts}


def has_barrier_work(c: FunctionCensus) -> bool:
    """Own barriers, or calls to barrier functions inside/after a loop."""
    return bool(c.counts or c.calls_in_loop or c.calls_after_loop)


def _calls_by_base(calls: dict[str, int]) -> dict[str, int]:
    """Callee names without the ``#N`` of same-named statics: they renumber across builds."""
    out: dict[str, int] = {}
    for name, n in calls.items():
        base = re.sub(r"#\d+$", "", name)
        out[base] = out.get(base, 0) + n
    return out


def compare_census(before: dict[str, FunctionCensus], after: dict[str, FunctionCensus]
                   ) -> list[CensusChange]:
    """Functions whose barrier counts, DSB placement or barrier calls differ, by name.

    A function with barrier work (:func:`has_barrier_work`) in only one build is
    "added"/"removed" (often: inlined differently). Others are ignored.
    """
    changes: list[CensusChange] = []
    names = [n for n, c in before.items() if has_barrier_work(c)]
    names += [n for n, c in after.items()
              if has_barrier_work(c) and not (n in before and has_barrier_work(before[n]))]
    for name in names:
        a, b = before.get(name), after.get(name)
        a = a if a is not None and has_barrier_work(a) else None
        b = b if b is not None and has_barrier_work(b) else None
        if a is None or b is None:
            present = b if a is None else a
            assert present is not None
            changes.append(CensusChange(
                name, "added" if a is None else "removed", a, b,
                (_format_census(present),)))
            continue
        details = []
        for key in sorted(set(a.counts) | set(b.counts), key=_key_order):
            x, y = a.counts.get(key, 0), b.counts.get(key, 0)
            if x != y:
                details.append(f"{key} {x}->{y}")
        if a.dsb_in_loop != b.dsb_in_loop:
            details.append(f"dsb in loop {a.dsb_in_loop}->{b.dsb_in_loop}")
        if a.dsb_after_loop != b.dsb_after_loop:
            details.append(f"dsb after loop {a.dsb_after_loop}->{b.dsb_after_loop}")
        for where, ca, cb in (("in loop", a.calls_in_loop, b.calls_in_loop),
                              ("after loop", a.calls_after_loop, b.calls_after_loop)):
            ca, cb = _calls_by_base(ca), _calls_by_base(cb)
            for callee in sorted(set(ca) | set(cb)):
                x, y = ca.get(callee, 0), cb.get(callee, 0)
                if x != y:
                    details.append(f"calls {callee} {where} {x}->{y}")
        if details:
            changes.append(CensusChange(name, "changed", a, b, tuple(details)))
    return changes


# --------------------------------------------------------------------------- CLI


def _format_counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: _key_order(
        kv[0])))


def _format_census(c: FunctionCensus) -> str:
    """Counts, then the barrier calls: ``dsb.ishst=1 isb=1 [loop calls: f x2]``."""
    parts = [_format_counts(c.counts) or "-"]
    for label, calls in (("loop calls", c.calls_in_loop),
                         ("after-loop calls", c.calls_after_loop)):
        if calls:
            parts.append(f"[{label}: " + ", ".join(
                f"{k} x{v}" if v > 1 else k for k, v in sorted(calls.items())) + "]")
    return " ".join(parts)


def _print_info(info: KernelInfo, label: str = "") -> None:
    p = f"{label}" if label else ""
    click.echo(f"{p}vmlinux:  {info.path}")
    click.echo(f"{p}release:  {info.release or '(unknown)'}")
    click.echo(f"{p}build-id: {info.build_id or '(none)'}")
    if info.config is None:
        click.echo(f"{p}config:   not embedded (CONFIG_IKCONFIG is off)")
    else:
        summary = " ".join(f"{k.removeprefix('CONFIG_')}={v}"
                           for k, v in info.config_summary().items())
        click.echo(f"{p}config:   {len(info.config)} options set; {summary}")


def _print_census(census: dict[str, FunctionCensus]) -> None:
    if not census:
        click.echo("no matching functions")
        return
    width = max(24, *(len(n) for n in census))
    click.echo(f"{'function':<{width}}  {'address':>18}  {'size':>6}  loop:in/after  barriers")
    for name, c in census.items():
        place = f"{c.dsb_in_loop}/{c.dsb_after_loop}" if c.dsb_total else "-"
        click.echo(f"{name:<{width}}  {c.address:#18x}  {c.size:>6}  {place:>13}  "
                   f"{_format_census(c)}")


def _select(census: dict[str, FunctionCensus], show_all: bool, selected: bool
            ) -> dict[str, FunctionCensus]:
    """--all: everything; --functions: barriers or barrier calls; default: own barriers."""
    if show_all:
        return census
    if selected:
        return {k: v for k, v in census.items() if has_barrier_work(v)}
    return with_barriers(census)


@click.command("inspect")
@click.argument("kernel")
@click.option("--functions", "-f", "patterns", multiple=True, metavar="PATTERN",
              help="Only these functions: names or glob patterns (repeatable, comma-separated).")
@click.option("--all", "show_all", is_flag=True,
              help="List matching functions even when they have no barriers.")
@click.option("--compare", "other", metavar="KERNEL",
              help="A second build: show the functions whose barriers changed.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def inspect_command(kernel: str, patterns: tuple[str, ...], show_all: bool,
                    other: str | None, as_json: bool) -> None:
    """Build-id, release, config and per-function barrier census of a kernel.

    KERNEL is a vmlinux, a kernel build directory, an artifact directory or an artifact
    key (prefix). Counts DSB (by domain), DMB, ISB and TLBI words per function and says
    whether each DSB sits inside a loop or after one.
    """
    selection = list(patterns) or None
    path_a = _kernel_arg(kernel)
    info_a = read_info(path_a)
    census_a = barrier_census(path_a, selection)
    if other is None:
        shown = _select(census_a, show_all, selection is not None)
        if as_json:
            json.dump({**info_a.to_json(),
                       "functions": {k: v.to_json() for k, v in shown.items()}},
                      sys.stdout, indent=2)
            sys.stdout.write("\n")
            return
        _print_info(info_a)
        click.echo(f"functions: {len(census_a)} "
                   f"({len(with_barriers(census_a))} with barriers)")
        click.echo("")
        _print_census(shown)
        return
    path_b = _kernel_arg(other)
    info_b = read_info(path_b)
    census_b = barrier_census(path_b, selection)
    changes = compare_census(census_a, census_b)
    if as_json:
        json.dump({"a": info_a.to_json(), "b": info_b.to_json(),
                   "changes": [c.to_json() for c in changes]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    _print_info(info_a, "A ")
    _print_info(info_b, "B ")
    click.echo("")
    if not changes:
        click.echo("no function changed its barriers")
        return
    width = max(24, *(len(c.name) for c in changes))
    for c in changes:
        click.echo(f"{c.name:<{width}}  {c.kind:<8}  {'; '.join(c.details)}")
    click.echo(f"\n{len(changes)} function(s) changed")


def _kernel_arg(spec: str) -> Path:
    """CLI KERNEL: a path (file or directory) or an artifact key prefix."""
    if os.path.exists(spec) or os.sep in spec:
        return _resolve_path(spec)
    if re.fullmatch(r"[0-9a-f]{4,64}", spec):
        from orchestrator.kernel.artifacts import find

        return find(spec).vmlinux
    raise InputError(f"vmlinux not found: {spec}",
                     hint="pass a vmlinux, a kernel build directory, an artifact directory "
                          "or an artifact key")
