"""The guest's module loader: a static arm64 program that calls finit_module() once.

busybox ``insmod``/``modprobe`` retry with init_module() when finit_module() fails, and
test_vmalloc's init always fails (-EAGAIN, on purpose): with busybox the tests run twice.
``images/mmlab-load.c`` makes one call and reports the kernel's answer.

It is compiled with the arm64 cross compiler against the kernel tree's own nolibc
(``tools/include/nolibc``) and the tree's UAPI headers, both taken from the Debian
``linux-source-6.12`` tarball (or ``$MMLAB_KERNEL_SOURCE``: a tarball or an unpacked tree),
so no arm64 libc is needed on the host. Both the header sysroot and the binary are cached
under ``cache_dir("images")`` by content.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from orchestrator import progress
from orchestrator.atomic import atomic_write_bytes, publish_dir
from orchestrator.errors import BuildError, InputError, MissingToolError
from orchestrator.paths import IMAGES, cache_dir

SOURCE = IMAGES / "mmlab-load.c"
DEFAULT_KERNEL_SOURCE = Path("/usr/src/linux-source-6.12.tar.xz")
CROSS_CC = "aarch64-linux-gnu-gcc"

# arm64 has taken its syscall numbers from the generic table since the start; from 6.11 the
# tree generates asm/unistd_64.h at build time, so a header-only sysroot uses the generic
# header with arm64's historical opt-ins instead (the numbers are ABI, they never change).
_ARM64_UNISTD = """\
/* mmlab: arm64 syscall numbers from the generic table (pre-6.11 arm64 uapi/asm/unistd.h) */
#define __ARCH_WANT_RENAMEAT
#define __ARCH_WANT_NEW_STAT
#define __ARCH_WANT_SET_GET_RLIMIT
#define __ARCH_WANT_TIME32_SYSCALLS
#define __ARCH_WANT_MEMFD_SECRET
#include <asm-generic/unistd.h>
"""

_WANTED = ("tools/include/nolibc/", "include/uapi/", "arch/arm64/include/uapi/")

# What scripts/headers_install.sh does to a UAPI header besides unifdef (``__KERNEL__`` is
# simply left undefined here).
_HEADER_FIXUPS = [
    (re.compile(r"([\s(])(__user|__force|__iomem)\s"), r"\1"),
    (re.compile(r"__attribute_const__(\s|$)", re.M), r"\1"),
    (re.compile(r"^#include <linux/compiler(|_types)\.h>", re.M), ""),
    (re.compile(r"(^|[^a-zA-Z0-9])__packed([^a-zA-Z0-9_]|$)", re.M),
     r"\1__attribute__((packed))\2"),
    (re.compile(r"(^|[\s(])(inline|asm|volatile)([\s(]|$)", re.M), r"\1__\2__\3"),
    (re.compile(r"#(ifndef|define|endif\s*/[*])\s*_UAPI"), r"#\1 "),
]


def _install_headers(tree: Path) -> None:
    for h in tree.rglob("*.h"):
        text = h.read_text(errors="replace")
        for pat, rep in _HEADER_FIXUPS:
            text = pat.sub(rep, text)
        h.write_text(text)


def kernel_source() -> Path:
    src = Path(os.environ.get("MMLAB_KERNEL_SOURCE", DEFAULT_KERNEL_SOURCE))
    if not src.exists():
        raise MissingToolError(
            f"kernel source {src} not found (needed for nolibc and UAPI headers)",
            hint="apt-get install linux-source-6.12, or set MMLAB_KERNEL_SOURCE to a tree",
        )
    return src


def _source_id(src: Path) -> str:
    st = src.stat()
    return hashlib.sha256(f"{src.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()
                          ).hexdigest()[:16]


def _extract(src: Path, dest: Path) -> None:
    """Copy the three header directories of the tree at ``src`` into ``dest``."""
    if src.is_dir():
        for sub in _WANTED:
            shutil.copytree(src / sub, dest / sub, dirs_exist_ok=True)
        return
    with tarfile.open(src) as tar:
        members = []
        for m in tar:
            parts = m.name.split("/", 1)
            if len(parts) == 2 and parts[1].startswith(_WANTED) and (m.isfile() or m.isdir()):
                if ".." in parts[1].split("/"):
                    raise InputError(f"{src}: unsafe member name {m.name!r}",
                                     hint="use an unmodified kernel tarball")
                m.name = parts[1]
                members.append(m)
        # Only plain files and directories below the three wanted prefixes, no "..": safe
        # with or without tarfile's extraction filters (new in 3.11.4; Debian 12 has 3.11.2).
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=members, filter="data")
        else:
            tar.extractall(dest, members=members)


def sysroot() -> Path:
    """An include directory with nolibc and the arm64 UAPI headers (cached)."""
    src = kernel_source()
    final = cache_dir("images") / f"nolibc-sysroot-{_source_id(src)}"
    if final.is_dir():
        return final
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=".sysroot."))
    try:
        with progress.phase("image", f"extracting nolibc and UAPI headers from {src.name}"):
            raw = staging / "raw"
            _extract(src, raw)
            inc = staging / "include"
            if not (raw / "tools/include/nolibc/nolibc.h").is_file():
                raise InputError(f"{src} has no tools/include/nolibc/nolibc.h",
                                 hint="use a Linux tree of v6.1 or newer")
            shutil.copytree(raw / "include/uapi", inc)
            asm = inc / "asm"
            shutil.copytree(raw / "arch/arm64/include/uapi/asm", asm)
            # asm/X.h that the architecture takes from asm-generic (Kbuild mandatory-y).
            for gen in (inc / "asm-generic").glob("*.h"):
                if not (asm / gen.name).exists():
                    (asm / gen.name).write_text(f"#include <asm-generic/{gen.name}>\n")
            (asm / "unistd.h").write_text(_ARM64_UNISTD)
            _install_headers(inc)
            shutil.copytree(raw / "tools/include/nolibc", staging / "nolibc")
            shutil.rmtree(raw)
        return publish_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _cc() -> str:
    cc = shutil.which(CROSS_CC)
    if cc is None:
        raise MissingToolError(f"{CROSS_CC} not found",
                               hint="apt-get install gcc-aarch64-linux-gnu")
    return cc


def build_loader() -> Path:
    """Path of the static arm64 ``mmlab-load`` binary (built once per source/toolchain)."""
    cc = _cc()
    root = sysroot()
    ccver = subprocess.run([cc, "--version"], capture_output=True, text=True,
                           check=False).stdout.splitlines()[:1]
    flags = ["-Os", "-static", "-nostdlib", "-fno-asynchronous-unwind-tables",
             "-fno-ident", "-fno-stack-protector", "-s", "-D__EXPORTED_HEADERS__",
             "-include", "nolibc.h"]
    includes = ["-I", str(root / "include"), "-I", str(root / "nolibc")]
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    key.update(root.name.encode())
    key.update(repr((ccver, flags)).encode())
    out = cache_dir("images") / f"mmlab-load-{key.hexdigest()[:16]}"
    if out.is_file():
        return out
    with tempfile.TemporaryDirectory(dir=cache_dir("tmp")) as tmp:
        binary = Path(tmp) / "mmlab-load"
        res = subprocess.run([cc, *flags, *includes, "-o", str(binary), str(SOURCE), "-lgcc"],
                             capture_output=True, text=True, check=False)
        if res.returncode != 0:
            first = next((ln for ln in res.stderr.splitlines() if "error" in ln),
                         res.stderr.strip()[:200])
            raise BuildError(f"building the module loader failed: {first}",
                             hint=f"compile {SOURCE} by hand with {CROSS_CC} to see more")
        atomic_write_bytes(out, binary.read_bytes())
    out.chmod(0o755)
    return out
