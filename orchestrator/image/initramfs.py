"""Guest initramfs images, built without root and cached by content.

The recipe ``images/initramfs.toml`` says what goes in: busybox-static from Debian arm64
(with applet symlinks), the kernel artifact's modules with ``modules.dep``, the
``guest_tests/`` scripts, the init and console agent, the ``mmlab-load`` module loader and
a few device nodes. The archive is written here as cpio "newc" (the format the kernel
unpacks), so device nodes need no ``mknod`` and no root; every entry has uid/gid 0 and
mtime 0, and entries are sorted, so the same inputs give the same bytes.

Images are content-addressed: the key is a sha256 over the recipe, every file that goes in
(the busybox .deb, the loader binary, the guest tests, the modules) and the builder's
version. ``cache_dir("images")/initramfs-<key>.cpio.gz`` plus a ``.json`` manifest.

Usage::

    image = build_initramfs(artifact)      # InitramfsImage(path, key, manifest)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import loader, progress
from orchestrator.atomic import atomic_write_bytes, atomic_write_json
from orchestrator.errors import InputError
from orchestrator.kernel import debpkg
from orchestrator.kernel.artifacts import Artifact
from orchestrator.paths import GUEST_TESTS, IMAGES, cache_dir

RECIPE = IMAGES / "initramfs.toml"
BUILDER_VERSION = 1


# ---------------------------------------------------------------------------- cpio newc


class CpioWriter:
    """Writes a cpio "newc" archive (as in the kernel's Documentation/.../ramfs-rootfs-
    initramfs.rst): a 110-byte ASCII header, the NUL-terminated name padded to 4 bytes,
    the data padded to 4 bytes; ``TRAILER!!!`` ends it."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 1
        self.names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", *, nlink: int = 1,
               rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/")
        if name in self.names:
            raise InputError(f"initramfs: {name} added twice", hint="fix images/initramfs.toml")
        self.names.add(name)
        raw_name = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(raw_name), 0]
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + raw_name)
        self._pad()
        self._out.write(data)
        self._pad()

    def _pad(self) -> None:
        self._out.write(b"\0" * (-self._out.tell() % 4))

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def device(self, name: str, kind: str, major: int, minor: int, perm: int) -> None:
        fmt = {"c": stat.S_IFCHR, "b": stat.S_IFBLK}[kind]
        self._entry(name, fmt | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, nlink=1)
        self._out.write(b"\0" * (-self._out.tell() % 512))
        return self._out.getvalue()


def read_newc(data: bytes) -> dict[str, dict[str, Any]]:
    """Parse a newc archive: {name: {mode, size, rdev, data}} (for tests and inspection)."""
    out: dict[str, dict[str, Any]] = {}
    pos = 0
    while True:
        if data[pos:pos + 6] != b"070701":
            raise InputError(f"not a newc cpio archive at offset {pos}",
                             hint="was it written by orchestrator.image.initramfs?")
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize
        pos += -pos % 4
        body = data[pos:pos + filesize]
        pos += filesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out[name] = {"mode": f[1], "size": filesize, "rdev": (f[9], f[10]), "data": body,
                     "uid": f[2], "gid": f[3], "mtime": f[5]}


# ---------------------------------------------------------------------------- modules.dep


def _modinfo_depends(ko: Path) -> list[str]:
    """The ``depends=`` list of a module, from its .modinfo section."""
    from elftools.elf.elffile import ELFFile

    with ko.open("rb") as fh:
        sec = ELFFile(fh).get_section_by_name(".modinfo")
        if sec is None:
            return []
        for item in sec.data().split(b"\0"):
            if item.startswith(b"depends="):
                return [d for d in item[8:].decode().split(",") if d]
    return []


def modules_dep(modules_dir: Path) -> str:
    """modules.dep text for a lib/modules/<release> tree, as depmod writes it (relative
    paths; each line lists the module's whole dependency closure, nearest first)."""
    kos = sorted(p for p in modules_dir.rglob("*.ko") if p.is_file())
    by_name = {p.stem.replace("-", "_"): p for p in kos}
    direct = {p: _modinfo_depends(p) for p in kos}

    def closure(p: Path, seen: list[Path]) -> list[Path]:
        for dep in direct[p]:
            q = by_name.get(dep.replace("-", "_"))
            if q is not None and q not in seen:
                seen.append(q)
                closure(q, seen)
        return seen

    lines = []
    for p in kos:
        deps = " ".join(str(q.relative_to(modules_dir)) for q in closure(p, []))
        lines.append(f"{p.relative_to(modules_dir)}:{(' ' + deps) if deps else ''}")
    return "\n".join(lines) + ("\n" if lines else "")


# ---------------------------------------------------------------------------- the image


@dataclass(frozen=True)
class InitramfsImage:
    """A built initramfs: the archive, its content key and what went in."""

    path: Path
    key: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def load_recipe(path: Path = RECIPE) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"cannot read image recipe {path}: {exc}",
                         hint="fix the TOML syntax") from exc


def _applets(busybox: Path) -> list[str]:
    """busybox --list-full, run on the host through qemu-aarch64-static (if installed)."""
    emu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if emu is None:
        return []
    res = subprocess.run([emu, str(busybox), "--list-full"], capture_output=True, text=True,
                         check=False, timeout=60)
    if res.returncode != 0:
        return []
    return sorted({ln.strip() for ln in res.stdout.splitlines() if ln.strip()})


def _files_of_tree(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _module_files(artifact: Artifact | None) -> tuple[str | None, dict[str, bytes]]:
    """{relative path under lib/modules: bytes} for the artifact's modules tree."""
    if artifact is None:
        return None, {}
    mdir = artifact.modules_dir
    if not mdir.is_dir():
        return artifact.release, {}
    files: dict[str, bytes] = {}
    for p in _files_of_tree(mdir):
        rel = p.relative_to(mdir)
        if rel.parts[0] in ("build", "source") or p.is_symlink():
            continue
        files[f"{artifact.release}/{rel}"] = p.read_bytes()
    if f"{artifact.release}/modules.dep" not in files:
        files[f"{artifact.release}/modules.dep"] = modules_dep(mdir).encode()
    return artifact.release, files


def build_initramfs(artifact: Artifact | None, recipe_path: Path = RECIPE,
                    extra_files: dict[str, bytes] | None = None) -> InitramfsImage:
    """Build (or find in the cache) the initramfs for ``artifact``.

    ``extra_files`` ({path in image: bytes, or (bytes, mode)}) adds files, e.g. a test's
    own script (0755 by default) or a board's host key (0600: then the image file in the
    cache is 0600 too).
    """
    recipe = load_recipe(recipe_path)
    base = recipe_path.parent
    release, modules = _module_files(artifact)

    h = hashlib.sha256()

    def feed(label: str, data: bytes) -> None:
        h.update(label.encode() + b"\0" + hashlib.sha256(data).digest())

    feed("builder", str(BUILDER_VERSION).encode())
    feed("recipe", recipe_path.read_bytes())

    # Resolve every input before hashing, so the key covers the bytes that go in.
    pkg_files: list[tuple[str, Path, bool]] = []  # (image path, host path, is busybox)
    packages: dict[str, str] = {}
    for pkg in recipe.get("package", []):
        deb = debpkg.fetch(pkg["name"])
        packages[pkg["name"]] = deb.name
        root = debpkg.unpack(pkg["name"])
        feed(f"deb:{pkg['name']}", deb.name.encode())
        for src, dst in pkg.get("files", {}).items():
            p = root / src
            if not p.is_file():
                raise InputError(f"package {pkg['name']} has no file {src}",
                                 hint="fix images/initramfs.toml")
            pkg_files.append((dst, p, bool(pkg.get("busybox_applets"))))
        if pkg.get("all_files"):
            # The whole package (libraries with their symlinks, ...), docs left out.
            for p in _files_of_tree(root):
                rel = str(p.relative_to(root))
                if rel.startswith(("usr/share/doc/", "usr/share/man/", "usr/share/lintian/")):
                    continue
                pkg_files.append((rel, p, False))
                feed(f"pkgfile:{rel}", os.readlink(p).encode() if p.is_symlink()
                     else p.read_bytes())
    repo_files = []
    for src, spec in recipe.get("files", {}).items():
        data = (base / src).read_bytes()
        feed(f"file:{spec['path']}", data)
        repo_files.append((spec["path"], data, spec.get("mode", 0o644)))
    loader_bin = loader.build_loader() if "loader" in recipe else None
    if loader_bin is not None:
        feed("loader", loader_bin.read_bytes())
    tests: list[tuple[str, bytes]] = []
    if "guest_tests" in recipe:
        for p in _files_of_tree(GUEST_TESTS):
            if p.is_file() and not p.name.startswith(".") and "__pycache__" not in p.parts:
                tests.append((str(p.relative_to(GUEST_TESTS)), p.read_bytes()))
                feed(f"test:{tests[-1][0]}", tests[-1][1])
    for rel, data in sorted(modules.items()):
        feed(f"module:{rel}", data)
    extras = {rel: (v if isinstance(v, tuple) else (v, 0o755))
              for rel, v in (extra_files or {}).items()}
    secret = any(not mode & 0o077 for _, mode in extras.values())
    for rel, (data, mode) in sorted(extras.items()):
        feed(f"extra:{rel}", data + f":{mode:o}".encode())
    key = h.hexdigest()

    compression = recipe.get("compression", "gzip")
    suffix = {"gzip": ".cpio.gz", "none": ".cpio"}.get(compression)
    if suffix is None:
        raise InputError(f"unknown compression {compression!r} in {recipe_path}",
                         hint="use gzip or none")
    out = cache_dir("images") / f"initramfs-{key[:24]}{suffix}"
    manifest_path = out.with_suffix(".json") if suffix == ".cpio" else \
        out.with_name(out.name.replace(".cpio.gz", ".json"))
    if out.is_file() and manifest_path.is_file():
        return InitramfsImage(out, key, json.loads(manifest_path.read_text()))

    with progress.phase("image", f"initramfs {key[:12]}"):
        cpio = CpioWriter()
        dirs: set[str] = set()

        def mkdirs(path: str) -> None:
            parts = Path(path).parts[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    cpio.directory(d)

        for d in recipe.get("directories", []):
            mkdirs(d + "/x")
        for dev in recipe.get("device", []):
            mkdirs(dev["path"])
            cpio.device(dev["path"], dev["type"], dev["major"], dev["minor"],
                        dev.get("mode", 0o600))
        applets: list[str] = []
        for dst, src, is_busybox in pkg_files:
            if dst in cpio.names:
                continue  # the same file from two packages (e.g. a shared directory link)
            mkdirs(dst)
            if src.is_symlink():
                cpio.symlink(dst, os.readlink(src))
                continue
            mode = stat.S_IMODE(src.stat().st_mode)
            cpio.file(dst, src.read_bytes(), mode | 0o444)
            if is_busybox:
                for applet in _applets(src):
                    rel = applet.lstrip("/")
                    if rel == dst or rel in cpio.names:
                        continue
                    mkdirs(rel)
                    cpio.symlink(rel, "/" + dst)
                    applets.append(rel)
        for dst, data, mode in repo_files:
            mkdirs(dst)
            cpio.file(dst, data, mode)
        if loader_bin is not None:
            mkdirs(recipe["loader"]["path"])
            cpio.file(recipe["loader"]["path"], loader_bin.read_bytes(), 0o755)
        if tests:
            tdir = recipe["guest_tests"]["path"]
            for rel, data in tests:
                mkdirs(f"{tdir}/{rel}")
                cpio.file(f"{tdir}/{rel}", data, 0o755)
        mroot = recipe.get("modules", {}).get("path", "lib/modules")
        for rel, data in sorted(modules.items()):
            mkdirs(f"{mroot}/{rel}")
            cpio.file(f"{mroot}/{rel}", data, 0o644)
        for t in recipe.get("text", []):
            mkdirs(t["path"])
            cpio.file(t["path"], t["content"].encode(), t.get("mode", 0o644))
        for rel, (data, mode) in sorted(extras.items()):
            mkdirs(rel)
            cpio.file(rel, data, mode)
        raw = cpio.finish()
        if compression == "gzip":
            blob = gzip.compress(raw, compresslevel=recipe.get("gzip_level", 6), mtime=0)
        else:
            blob = raw
        manifest = {
            "key": key,
            "recipe": str(recipe_path),
            "compression": compression,
            "size": len(blob),
            "uncompressed_size": len(raw),
            "release": release,
            "artifact": artifact.key if artifact is not None else None,
            "packages": packages,
            "modules": sorted(r for r in modules if r.endswith((".ko", ".ko.xz", ".ko.gz",
                                                                ".ko.zst"))),
            "guest_tests": [r for r, _ in tests],
            "applets": len(applets),
            "entries": len(cpio.names),
        }
        atomic_write_bytes(out, blob, mode=0o600 if secret else None)
        atomic_write_json(manifest_path, manifest)
    return InitramfsImage(out, key, manifest)


def image_listing(image: InitramfsImage) -> dict[str, dict[str, Any]]:
    """The archive's entries (decompressing when needed)."""
    data = image.path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return read_newc(data)

