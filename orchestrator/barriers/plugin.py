"""The barrier-counting QEMU plugin: its header, its build, its arguments, its results.

mmlab counts the DSB/ISB/DMB/TLBI instructions a guest kernel really executes with a TCG
plugin (``orchestrator/barriers/qemu_plugin/mmlab_barriers.c``; its header comment documents the
counting, the window markers and the output format). This module:

* fetches ``qemu-plugin.h``, which Debian's qemu packages do not ship, from Debian's qemu
  *source* package matching the installed qemu (``apt-get source --download-only`` with a
  private deb-src list derived from the host's Debian sources, its own lists and archive
  cache; the host's apt configuration is not touched): :func:`ensure_plugin_header`, called
  by ``mmlab doctor --install``;
* builds the plugin with the host gcc, cached by content under ``cache_dir("plugins")``, and
  checks that this qemu loads it: :func:`ensure_plugin`;
* builds the guest-side marker program (``mmlab-mark ID``) that opens a counting window:
  :func:`ensure_marker_binary`;
* produces the QEMU arguments and parses the output: :class:`BarrierCounter`,
  :func:`parse_counts`, :class:`Counts`.

Usage::

    counter = BarrierCounter(symbol_ranges(vmlinux, ["vmap_pte_range", "__vunmap_range*"]))
    argv = [qemu, ..., *counter.qemu_args(out)]
    counts = counter.read(out)
    counts.windows_with(1)[0].count("dsb.ishst", function="vmap_pte_range")
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import progress
from orchestrator.atomic import atomic_write_text, publish_dir
from orchestrator.errors import InputError, MissingToolError, MmlabError, TargetError
from orchestrator.paths import cache_dir

PLUGIN_DIR = Path(__file__).resolve().parent / "qemu_plugin"
PLUGIN_SOURCE = PLUGIN_DIR / "mmlab_barriers.c"
MARKER_SOURCE = PLUGIN_DIR / "mmlab_mark.S"
QEMU = "qemu-system-aarch64"
HEADER_ENV = "MMLAB_QEMU_PLUGIN_HEADER"  # an explicit qemu-plugin.h overrides the fetch

# QEMU_PLUGIN_VERSION of the header each QEMU release's loader accepts (min, cur). A header
# whose version is outside the range is refused by that qemu's loader.
PLUGIN_API = {"7.2": (0, 1)}

CFLAGS = ["-O2", "-g", "-fPIC", "-shared", "-std=gnu11", "-Wall", "-Wextra",
          "-Wno-unused-parameter", "-Werror"]
RECIPE = "mmlab-plugin-1"  # bump when the build recipe changes

MARKER_TAG = 0x4D00
MARKER_BASE = 0xD2E0001F  # MOVZ XZR, #imm16, LSL #48


def marker_word(marker_id: int) -> int:
    """The 32-bit encoding of the window marker ``marker_id`` (0..255)."""
    if not 0 <= marker_id <= 255:
        raise InputError(f"marker id {marker_id} out of range 0..255",
                         hint="use a small integer per workload phase")
    return MARKER_BASE | ((MARKER_TAG | marker_id) << 5)


# --------------------------------------------------------------------------- qemu


@dataclass(frozen=True)
class QemuVersion:
    upstream: str          # "7.2.22"
    debian: str | None     # "1:7.2+dfsg-7+deb12u18+b3" (None for a non-Debian build)

    @property
    def series(self) -> str:
        """Major.minor, e.g. "7.2": what the plugin API follows."""
        return ".".join(self.upstream.split(".")[:2])

    @property
    def source_version(self) -> str | None:
        """The Debian source version (binNMU suffix ``+bN`` dropped)."""
        if self.debian is None:
            return None
        return re.sub(r"\+b\d+$", "", self.debian)


def _require_qemu(qemu: str) -> str:
    path = shutil.which(qemu)
    if path is None:
        raise MissingToolError(f"{qemu} not found",
                               hint="apt-get install qemu-system-arm (or `mmlab doctor --install`)")
    return path


def qemu_version(qemu: str = QEMU) -> QemuVersion:
    path = _require_qemu(qemu)
    res = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    m = re.search(r"version (\d+\.\d+(?:\.\d+)?)(?: \(Debian ([^)]+)\))?", res.stdout)
    if m is None:
        raise MissingToolError(f"cannot tell the version of {qemu}: {res.stdout.strip()[:80]!r}",
                               hint="apt-get install --reinstall qemu-system-arm")
    return QemuVersion(m.group(1), m.group(2))


def check_plugin_support(qemu: str = QEMU) -> None:
    """Raise :class:`MissingToolError` unless ``qemu`` was built with TCG plugin support.

    A qemu configured with ``--disable-plugins`` (or a static build, such as Debian's
    qemu-user-static) has no ``-plugin`` option in its ``-help``.
    """
    path = _require_qemu(qemu)
    res = subprocess.run([path, "-help"], capture_output=True, text=True, check=False)
    if not re.search(r"^-plugin\b", res.stdout, re.MULTILINE):
        raise MissingToolError(
            f"{qemu} has no TCG plugin support (no -plugin option)",
            hint="install Debian's qemu-system-arm (built with plugins since 1:5.0), "
                 "or a qemu configured with --enable-plugins")


# --------------------------------------------------------------------------- header


def _header_root() -> Path:
    return cache_dir("plugins") / "include"


def _cached_headers() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    root = _header_root()
    for d in sorted(root.glob("qemu-*")):
        meta, hdr = d / "source.json", d / "qemu-plugin.h"
        if meta.is_file() and hdr.is_file():
            out.append((hdr, json.loads(meta.read_text())))
    return out


def header_api_version(header: Path) -> int:
    m = re.search(r"^#define\s+QEMU_PLUGIN_VERSION\s+(\d+)", header.read_text(), re.MULTILINE)
    if m is None:
        raise InputError(f"{header} defines no QEMU_PLUGIN_VERSION",
                         hint=f"it is not QEMU's qemu-plugin.h; unset {HEADER_ENV} or fix it")
    return int(m.group(1))


def _check_api(header: Path, version: QemuVersion) -> None:
    api = header_api_version(header)
    accepted = PLUGIN_API.get(version.series)
    if accepted and not accepted[0] <= api <= accepted[1]:
        raise InputError(
            f"{header} has plugin API {api}; qemu {version.series} accepts "
            f"{accepted[0]}..{accepted[1]}",
            hint="remove it and run `mmlab doctor --install` to fetch the matching header")


def ensure_plugin_header(install: bool = False, qemu: str = QEMU) -> Path:
    """Path of ``qemu-plugin.h`` for the installed qemu; fetched when ``install``.

    Lookup order: ``$MMLAB_QEMU_PLUGIN_HEADER``; the header cached for the installed qemu's
    exact Debian source version; one cached for the same qemu series (7.2). Without
    ``install`` a missing header raises :class:`MissingToolError`.
    """
    env = os.environ.get(HEADER_ENV)
    version = qemu_version(qemu)
    if env:
        hdr = Path(env)
        if not hdr.is_file():
            raise InputError(f"{HEADER_ENV}={env} does not exist",
                             hint=f"unset {HEADER_ENV} to use the fetched header")
        _check_api(hdr, version)
        return hdr
    cached = _cached_headers()
    for hdr, meta in cached:
        if version.source_version and meta.get("source_version") == version.source_version:
            return hdr
    for hdr, meta in cached:
        if meta.get("series") == version.series:
            return hdr
    if not install:
        raise MissingToolError(
            f"qemu-plugin.h for qemu {version.series} is not fetched (Debian ships it in no "
            f"binary package, only in source package qemu)",
            hint="run `mmlab doctor --install` (downloads Debian's qemu source package, "
                 "~24 MB, and extracts include/qemu/qemu-plugin.h)")
    return fetch_plugin_header(version)


def _host_debian_sources() -> list[str]:
    """deb-src entries (one-line format) mirroring the host's Debian ``deb`` entries."""
    from orchestrator.kernel.debian_archive import host_apt_entries

    lines = []
    for e in host_apt_entries():
        if not re.search(r"/debian(-security)?/?$", e.uri):
            continue  # third-party repositories carry no qemu source
        o = f"[{e.options}] " if e.options else ""
        lines.append(f"deb-src {o}{e.uri} {e.suite} {' '.join(e.components) or 'main'}")
    return list(dict.fromkeys(lines))


def _apt_src_options(base: Path) -> list[str]:
    lists, archives, parts = base / "lists", base / "cache", base / "sources.list.d"
    for d in (lists / "partial", archives / "archives" / "partial", parts):
        d.mkdir(parents=True, exist_ok=True)
    opts = [
        "-o", f"Dir::Etc::SourceList={base / 'sources.list'}",
        "-o", f"Dir::Etc::SourceParts={parts}",
        "-o", f"Dir::State::Lists={lists}",
        "-o", f"Dir::Cache={archives}",
        "-o", "Dir::State::status=/dev/null",
        "-o", "Debug::NoLocking=1",
        "-q",
    ]
    if os.geteuid() == 0:
        opts += ["-o", "APT::Sandbox::User=root"]  # _apt cannot write into root's cache
    return opts


def _apt_error(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("E:"):
            return line
    return text.strip().splitlines()[-1] if text.strip() else "no output"


def fetch_plugin_header(version: QemuVersion | None = None) -> Path:
    """Download Debian's qemu source package and extract ``qemu-plugin.h`` into the cache."""
    version = version or qemu_version()
    apt = shutil.which("apt-get")
    if apt is None:
        raise MissingToolError("apt-get not found (needed to fetch Debian's qemu source)",
                               hint=f"set {HEADER_ENV} to a qemu-plugin.h of qemu "
                                    f"{version.series}")
    base = cache_dir("downloads") / "apt-src"
    sources = _host_debian_sources()
    if not sources:
        raise MissingToolError(
            "no Debian archive in /etc/apt/sources.list* to fetch qemu's source package from",
            hint=f"set {HEADER_ENV} to a qemu-plugin.h of qemu {version.series}")
    opts = _apt_src_options(base)
    atomic_write_text(base / "sources.list", "\n".join(sources) + "\n")
    with progress.phase("plugin", "apt-get update (deb-src lists)"):
        res = subprocess.run([apt, *opts, "update"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise MissingToolError(f"apt-get update for Debian sources failed: {_apt_error(res.stderr)}",
                               hint="check network access to the Debian mirror in "
                                    "/etc/apt/sources.list*")
    dl_root = cache_dir("downloads") / "qemu-source"
    dl_root.mkdir(parents=True, exist_ok=True)
    wanted = [f"qemu={version.source_version}"] if version.source_version else []
    wanted.append("qemu")
    tmp = Path(tempfile.mkdtemp(dir=dl_root, prefix=".dl."))
    try:
        err = ""
        for spec in wanted:
            with progress.phase("plugin", f"apt-get source --download-only {spec}"):
                res = subprocess.run([apt, *opts, "source", "--download-only", spec], cwd=tmp,
                                     capture_output=True, text=True, check=False)
            if res.returncode == 0:
                break
            err = _apt_error(res.stderr)
        else:
            raise MissingToolError(f"cannot download Debian source package qemu: {err}",
                                   hint="check the deb-src access to the Debian mirror; or set "
                                        f"{HEADER_ENV}")
        dsc = next(tmp.glob("qemu_*.dsc"), None)
        orig = next(tmp.glob("qemu_*.orig.tar.*"), None)
        if dsc is None or orig is None:
            raise MissingToolError("apt-get source qemu left no .dsc/.orig tarball",
                                   hint="run `mmlab doctor --install` again")
        src_version = _dsc_version(dsc)
        upstream = src_version.split(":")[-1].split("+")[0].split("-")[0]
        series = ".".join(upstream.split(".")[:2])
        if series != version.series:
            raise MissingToolError(
                f"Debian's qemu source is {src_version}, the installed qemu is {version.series}",
                hint=f"install qemu-system-arm from the same suite, or set {HEADER_ENV}")
        patched = _debian_patches_touching_header(tmp)
        if patched:
            raise MissingToolError(
                f"Debian patches {', '.join(patched)} change qemu-plugin.h; mmlab does not "
                "apply patches", hint=f"set {HEADER_ENV} to the patched header")
        text = _extract_header(orig)
        final = _header_root() / f"qemu-{src_version.replace(':', '_')}"
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=".stage."))
        staging.chmod(0o755)
        (staging / "qemu-plugin.h").write_bytes(text)
        meta = {
            "source_package": "qemu",
            "source_version": src_version,
            "series": series,
            "orig": orig.name,
            "orig_sha256": _sha256_file(orig),
            "api_version": header_api_version(staging / "qemu-plugin.h"),
        }
        (staging / "source.json").write_text(json.dumps(meta, indent=2) + "\n")
        _check_api(staging / "qemu-plugin.h", version)
        for f in tmp.iterdir():  # keep the source package in the downloads cache
            dest = dl_root / f.name
            if not dest.exists():
                os.replace(f, dest)
        return publish_dir(staging, final) / "qemu-plugin.h"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _dsc_version(dsc: Path) -> str:
    for line in dsc.read_text(errors="replace").splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    raise MissingToolError(f"{dsc.name} has no Version", hint="run `mmlab doctor --install` again")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _extract_header(orig: Path) -> bytes:
    """include/qemu/qemu-plugin.h from the orig tarball (streamed: nothing else unpacked)."""
    with tarfile.open(orig, mode="r|*") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith("/include/qemu/qemu-plugin.h"):
                fh = tar.extractfile(member)
                assert fh is not None
                return fh.read()
    raise MissingToolError(f"{orig.name} contains no include/qemu/qemu-plugin.h",
                           hint="this qemu source has no plugin API (qemu >= 4.2 needed)")


def _debian_patches_touching_header(srcdir: Path) -> list[str]:
    deb = next(srcdir.glob("qemu_*.debian.tar.*"), None)
    if deb is None:
        return []
    hits = []
    with tarfile.open(deb, mode="r|*") as tar:
        for member in tar:
            if member.isfile() and member.name.startswith("debian/patches/") and \
                    not member.name.endswith("series"):
                fh = tar.extractfile(member)
                if fh and re.search(rb"^\+\+\+ \S*include/qemu/qemu-plugin\.h", fh.read(),
                                    re.MULTILINE):
                    hits.append(member.name.removeprefix("debian/patches/"))
    return hits


# --------------------------------------------------------------------------- build


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise MissingToolError("gcc not found (needed to build the QEMU barrier plugin)",
                               hint="apt-get install gcc (or `mmlab doctor --install`)")
    return gcc


def _tool_version(tool: str) -> str:
    res = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    return (res.stdout.splitlines() or ["?"])[0]


def ensure_plugin(install: bool = False, qemu: str = QEMU) -> Path:
    """Path of the built ``mmlab_barriers.so``, built on first use and cached by content.

    The key covers the C source, the header, the compiler and the flags. A fresh build is
    load-tested once with ``qemu`` (a plugin API mismatch fails here, not mid-run).
    """
    check_plugin_support(qemu)
    header = ensure_plugin_header(install=install, qemu=qemu)
    gcc = _gcc()
    src = PLUGIN_SOURCE.read_bytes()
    h = hashlib.sha256()
    for part in (RECIPE.encode(), src, header.read_bytes(), _tool_version(gcc).encode(),
                 " ".join(CFLAGS).encode()):
        h.update(hashlib.sha256(part).digest())
    key = h.hexdigest()[:20]
    final = cache_dir("plugins") / f"mmlab_barriers-{key}"
    so = final / "mmlab_barriers.so"
    if not so.is_file():
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=".stage."))
        staging.chmod(0o755)
        try:
            with progress.phase("plugin", "build mmlab_barriers.so"):
                res = subprocess.run(
                    [gcc, *CFLAGS, f"-I{header.parent}", "-o", str(staging / so.name),
                     str(PLUGIN_SOURCE), "-lpthread"],
                    capture_output=True, text=True, check=False)
            if res.returncode != 0:
                first = next((ln for ln in res.stderr.splitlines() if "error" in ln),
                             res.stderr.strip()[:200])
                raise MmlabError(f"building the QEMU barrier plugin failed: {first}",
                                 hint=f"header {header}; compile by hand to see all errors")
            (staging / "build.json").write_text(json.dumps({
                "source_sha256": hashlib.sha256(src).hexdigest(),
                "header": str(header), "gcc": _tool_version(gcc), "cflags": CFLAGS,
            }, indent=2) + "\n")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        publish_dir(staging, final)
    _probe_load(so, qemu)
    return so


def _probe_load(so: Path, qemu: str) -> None:
    """Load the plugin into ``qemu -M none`` once per (plugin, qemu) and quit at once."""
    version = qemu_version(qemu)
    stamp = so.parent / f"loads-with-{hashlib.sha256(str(version).encode()).hexdigest()[:12]}"
    if stamp.is_file():
        return
    path = _require_qemu(qemu)
    with tempfile.TemporaryDirectory(dir=cache_dir("tmp")) as tmp:
        out = Path(tmp) / "probe.txt"
        res = subprocess.run(
            [path, "-M", "none", "-display", "none", "-nodefaults", "-monitor", "stdio",
             "-plugin", f"{_qemu_opt(so)},out={_qemu_opt(out)}"],
            input="quit\n", capture_output=True, text=True, timeout=60, check=False)
        ok = res.returncode == 0 and out.is_file() and out.read_text().startswith(
            "mmlab-barriers 1")
    if not ok:
        err = next((ln for ln in res.stderr.splitlines() if "plugin" in ln.lower()),
                   res.stderr.strip()[-200:])
        raise MissingToolError(f"{qemu} cannot load the barrier plugin: {err}",
                               hint="the header does not match this qemu; remove "
                                    f"{cache_dir('plugins')} and run `mmlab doctor --install`")
    atomic_write_text(stamp, f"{version}\n")


def ensure_marker_binary() -> Path:
    """The static arm64 ``mmlab-mark`` program (``mmlab-mark ID`` opens window ID)."""
    as_, ld = shutil.which("aarch64-linux-gnu-as"), shutil.which("aarch64-linux-gnu-ld")
    if as_ is None or ld is None:
        raise MissingToolError("aarch64-linux-gnu-as/ld not found (to build mmlab-mark)",
                               hint="apt-get install binutils-aarch64-linux-gnu")
    src = MARKER_SOURCE.read_bytes()
    key = hashlib.sha256(src + _tool_version(as_).encode()).hexdigest()[:20]
    final = cache_dir("plugins") / f"mmlab-mark-{key}"
    exe = final / "mmlab-mark"
    if exe.is_file():
        return exe
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=".stage."))
    staging.chmod(0o755)
    try:
        for argv in ([as_, "-o", str(staging / "mark.o"), str(MARKER_SOURCE)],
                     [ld, "-static", "-s", "-o", str(staging / "mmlab-mark"),
                      str(staging / "mark.o")]):
            res = subprocess.run(argv, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise MmlabError(f"building mmlab-mark failed: {res.stderr.strip()[:200]}",
                                 hint=f"assemble {MARKER_SOURCE} by hand to see why")
        (staging / "mark.o").unlink()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return publish_dir(staging, final) / "mmlab-mark"


# --------------------------------------------------------------------------- ranges


@dataclass(frozen=True, order=True)
class FunctionRange:
    start: int
    end: int  # exclusive
    name: str


def as_ranges(ranges: Iterable[Any]) -> list[FunctionRange]:
    """Normalise ranges: FunctionRange, ``(name, start, end)`` as from
    ``elfinspect.symbol_ranges``, or ``(start, end, name)``."""
    out = []
    for r in ranges:
        if isinstance(r, FunctionRange):
            out.append(r)
            continue
        a, b, c = r
        name, start, end = (a, b, c) if isinstance(a, str) else (c, a, b)
        if not isinstance(name, str) or not name or any(ch.isspace() for ch in name):
            raise InputError(f"bad function name {name!r} in address ranges",
                             hint="names must be non-empty and without spaces")
        if int(end) <= int(start):
            raise InputError(f"empty address range for {name}: {start:#x}..{end:#x}",
                             hint="end is exclusive and must be above start")
        out.append(FunctionRange(int(start), int(end), name))
    return sorted(set(out))


def ranges_text(ranges: Iterable[Any]) -> str:
    lines = ["# start end name (end exclusive) -- mmlab_barriers ranges"]
    lines += [f"{r.start:#x} {r.end:#x} {r.name}" for r in as_ranges(ranges)]
    return "\n".join(lines) + "\n"


def _qemu_opt(value: Path | str) -> str:
    """A value inside a QEMU option list: commas are doubled."""
    return str(value).replace(",", ",,")


# --------------------------------------------------------------------------- results


def _family(kind: str) -> str:
    return kind.split(".", 1)[0]


def _kind_matches(kind: str, want: str | None) -> bool:
    return want is None or kind == want or ("." not in want and _family(kind) == want)


@dataclass(frozen=True)
class SiteCount:
    """Executions of one barrier instruction (one guest address and encoding) in a window."""

    vaddr: int
    word: int
    kind: str
    function: str
    count: int


@dataclass
class Window:
    """Counts between two markers. ``label`` is "boot" or the opening marker's id."""

    seq: int
    label: str
    vcpu: int
    sites: list[SiteCount] = field(default_factory=list)
    insns: int | None = None
    closed: bool = False

    @property
    def marker_id(self) -> int | None:
        return int(self.label) if self.label.isdigit() else None

    def count(self, kind: str | None = None, function: str | None = None) -> int:
        """Executions of ``kind`` (exact, e.g. "dsb.ishst", or a family, e.g. "dsb") in
        ``function`` (None: everywhere)."""
        return sum(s.count for s in self.sites
                   if _kind_matches(s.kind, kind) and (function is None or s.function == function))

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for s in self.sites:
            out[s.kind] += s.count
        return dict(sorted(out.items()))

    def by_function(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for s in self.sites:
            out[s.function][s.kind] += s.count
        return {f: dict(sorted(k.items())) for f, k in sorted(out.items())}

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "label": self.label, "vcpu": self.vcpu, "insns": self.insns,
            "closed": self.closed, "by_function": self.by_function(),
            "sites": [{"vaddr": f"{s.vaddr:#x}", "word": f"{s.word:#010x}", "kind": s.kind,
                       "function": s.function, "count": s.count} for s in self.sites],
        }


def merge_windows(windows: Iterable[Window], label: str = "merged") -> Window:
    """One window with the summed counts of ``windows`` (e.g. all windows of a marker id)."""
    acc: dict[tuple[int, int, str, str], int] = defaultdict(int)
    insns: int | None = None
    closed = True
    for w in windows:
        for s in w.sites:
            acc[(s.vaddr, s.word, s.kind, s.function)] += s.count
        if w.insns is not None:
            insns = (insns or 0) + w.insns
        closed &= w.closed
    sites = [SiteCount(v, wd, k, f, n) for (v, wd, k, f), n in sorted(acc.items())]
    return Window(seq=-1, label=label, vcpu=-1, sites=sites, insns=insns, closed=closed)


@dataclass
class Counts:
    """Everything one QEMU run of the plugin counted."""

    windows: list[Window]
    vcpus: int
    insns_counted: bool
    complete: bool  # QEMU exited normally (the plugin wrote "end")
    path: Path | None = None

    def windows_with(self, marker_id: int | str) -> list[Window]:
        return [w for w in self.windows if w.label == str(marker_id)]

    def window(self, marker_id: int | str) -> Window:
        """The one window opened by ``marker_id``; several are an error (merge them)."""
        found = self.windows_with(marker_id)
        if len(found) != 1:
            raise InputError(
                f"{len(found)} windows opened by marker {marker_id} in {self.path or 'counts'}",
                hint="use windows_with() and merge_windows() when a marker repeats")
        return found[0]

    def total(self) -> Window:
        return merge_windows(self.windows, label="total")

    def to_json(self) -> dict[str, Any]:
        return {"vcpus": self.vcpus, "insns_counted": self.insns_counted,
                "complete": self.complete, "windows": [w.to_json() for w in self.windows]}


def _kind_of(word: int, plugin_kind: str) -> str:
    try:
        from orchestrator.kernel.aarch64 import classify, classify_atomic
    except ImportError:  # pragma: no cover - the census module is part of mmlab
        return plugin_kind
    return classify(word) or classify_atomic(word) or plugin_kind


def parse_counts(text: str, path: Path | None = None) -> Counts:
    """Parse the plugin's output (format in mmlab_barriers.c). A run QEMU did not finish
    (killed, timed out) parses with ``complete=False`` and its last window unclosed."""
    where = str(path) if path else "plugin output"
    lines = text.splitlines()
    if not lines or lines[0].strip() != "mmlab-barriers 1":
        raise TargetError(f"{where} is not mmlab_barriers output (version 1)",
                          hint="was QEMU started with the plugin arguments of BarrierCounter?")
    windows: list[Window] = []
    vcpus, insns_counted, complete = 0, False, False
    cur: Window | None = None
    for n, line in enumerate(lines[1:], start=2):
        parts = line.split()
        if not parts:
            continue
        tag = parts[0]
        try:
            if tag == "config":
                kv = dict(p.split("=", 1) for p in parts[1:])
                vcpus, insns_counted = int(kv["vcpus"]), kv["insns"] == "1"
            elif tag == "window":
                cur = Window(seq=int(parts[1]), label=parts[2],
                             vcpu=int(parts[3].removeprefix("vcpu=")))
                windows.append(cur)
            elif tag == "site" and cur is not None:
                word = int(parts[2], 16)
                cur.sites.append(SiteCount(int(parts[1], 16), word, _kind_of(word, parts[3]),
                                           parts[4], int(parts[5])))
            elif tag == "insns" and cur is not None:
                cur.insns = int(parts[1])
            elif tag == "endwindow" and cur is not None:
                cur.closed = True
            elif tag == "end":
                complete = True
            else:
                raise ValueError(tag)
        except (ValueError, IndexError, KeyError) as exc:
            raise TargetError(f"{where}:{n}: cannot parse {line[:80]!r} ({exc})",
                              hint="the plugin and mmlab are out of step; rebuild the plugin"
                              ) from None
    return Counts(windows=windows, vcpus=vcpus, insns_counted=insns_counted, complete=complete,
                  path=path)


class BarrierCounter:
    """Counting barriers in one QEMU run: the arguments to add, and the results after.

    ``ranges``: the functions to attribute counts to (``elfinspect.symbol_ranges`` output,
    FunctionRange objects, or ``(start, end, name)``); addresses outside all ranges count
    as "(kernel)" or "(user)". The guest must not randomise its kernel addresses: boot with
    ``nokaslr`` (or a kernel without RANDOMIZE_BASE) so the vmlinux addresses hold.
    """

    def __init__(self, ranges: Iterable[Any] = (), *, insns: bool = False,
                 plugin: Path | None = None, qemu: str = QEMU):
        self.ranges = as_ranges(ranges)
        self.insns = insns
        self.qemu = qemu
        self._plugin = plugin

    @property
    def plugin(self) -> Path:
        if self._plugin is None:
            self._plugin = ensure_plugin(install=False, qemu=self.qemu)
        return self._plugin

    def qemu_args(self, out_path: str | os.PathLike) -> list[str]:
        """``-plugin`` arguments writing counts to ``out_path`` (and its ranges file next to
        it, ``<out_path>.ranges``)."""
        out = Path(out_path).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.unlink()  # a stale file must not pass for this run's counts
        spec = [_qemu_opt(self.plugin), f"out={_qemu_opt(out)}"]
        if self.ranges:
            rfile = out.with_name(out.name + ".ranges")
            atomic_write_text(rfile, ranges_text(self.ranges))
            spec.append(f"ranges={_qemu_opt(rfile)}")
        if self.insns:
            spec.append("insns=on")
        return ["-plugin", ",".join(spec)]

    def read(self, out_path: str | os.PathLike, *, require_complete: bool = True) -> Counts:
        out = Path(out_path)
        if not out.is_file():
            raise TargetError(f"QEMU left no barrier counts at {out}",
                              hint="check that QEMU started (its log) and loaded the plugin")
        counts = parse_counts(out.read_text(), out)
        if require_complete and not counts.complete:
            raise TargetError(f"barrier counts in {out} are incomplete (QEMU did not exit "
                              "normally)", hint="the guest must power off (poweroff -f), not "
                              "be killed; finished windows are still in the file")
        return counts
