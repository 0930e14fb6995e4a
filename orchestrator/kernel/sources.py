"""Kernel source trees: where they come from, their content id, and work trees.

A tree source has a content ``key`` (so the artifact cache knows when two builds start from
the same code) and can materialize a *pristine* copy under ``<cache>/trees/<key>/src``.
Builds never touch the user's tree or the pristine copy: each build gets a work tree that
is a hard-link farm of the pristine copy (``cp -al``: seconds, no extra space), and the
series applier replaces any file it modifies by a private copy first.

Sources:
- ``debian:6.12`` (default): Debian's ``linux-source-6.12`` package tarball in /usr/src.
- ``debian:X.Y`` / ``debian:X.Y.Z`` (7.3, 7.2, 6.18 ...): from Debian's archive through a
  private apt state, verified, cached (``orchestrator.kernel.debian_archive``; ``mmlab trees``).
- a ``linux-source-X.Y_*.deb`` (its ``usr/src/linux-source-X.Y.tar.xz``).
- a tarball path (``.tar``, ``.tar.gz``, ``.tar.xz``, ``.tar.bz2``, ``.tgz``).
- a local directory (a kernel tree; if it is a git work tree, its content is still hashed
  as it is on disk, including uncommitted edits).
- a git repository at a ref (``--tree /path/to/linux --ref v6.12``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator import progress
from orchestrator.atomic import atomic_write_json, publish_dir
from orchestrator.errors import InputError, MmlabError
from orchestrator.hosttools import require_command
from orchestrator.paths import cache_dir

DEFAULT_TREE = "debian:6.12"
TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def cached_file_sha256(path: Path) -> str:
    """sha256 of a large file, remembered by (path, size, mtime) so repeat runs are instant."""
    st = path.stat()
    index = cache_dir("trees") / "file-hashes.json"
    ident = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    try:
        known = json.loads(index.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        known = {}
    if ident in known:
        return known[ident]
    digest = sha256_file(path)
    known[ident] = digest
    atomic_write_json(index, known)
    return digest


def makefile_version(text: str) -> str:
    """"7.3.4" from a kernel Makefile's VERSION / PATCHLEVEL / SUBLEVEL lines."""
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL)\s*=\s*(\d*)\s*$", text, re.M))
    if not fields.get("VERSION") or not fields.get("PATCHLEVEL"):
        raise InputError("the tree's Makefile has no VERSION/PATCHLEVEL",
                         hint="point --tree at the top of a Linux tree")
    return f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{fields.get('SUBLEVEL') or 0}"


def _looks_like_kernel(tree: Path) -> bool:
    return (tree / "Makefile").is_file() and (tree / "arch" / "arm64").is_dir() and (
        tree / "Kconfig"
    ).is_file()


@dataclass
class TreeSource:
    """Base class: ``describe()`` for metadata, ``key()`` for the cache, ``pristine()``."""

    kind: str
    location: str

    def describe(self) -> dict:
        return {"kind": self.kind, "location": self.location, "key": self.key()}

    def key(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def kernel_version(self) -> str:
        """VERSION.PATCHLEVEL.SUBLEVEL of the tree (its top Makefile)."""
        return makefile_version(self._makefile_text())

    def _makefile_text(self) -> str:
        return (self.pristine() / "Makefile").read_text(errors="replace")

    def _extract_into(self, dest: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def pristine(self) -> Path:
        """The pristine tree in the cache (created once, atomically)."""
        root = cache_dir("trees") / self.key()[:24]
        src = root / "src"
        if (root / "tree.json").is_file() and src.is_dir():
            return src
        from orchestrator.atomic import sweep_stale_staging

        sweep_stale_staging(cache_dir("trees"))
        staging = cache_dir("trees") / f".staging-{self.key()[:24]}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            with progress.phase("tree", f"materialize {self.location}"):
                self._extract_into(staging / "src")
            if not _looks_like_kernel(staging / "src"):
                raise InputError(
                    f"{self.location} does not contain a kernel tree with arch/arm64",
                    hint="point --tree at a Linux source tree, tarball or git repository",
                )
            atomic_write_json(staging / "tree.json", self.describe())
            shutil.rmtree(root, ignore_errors=True)
            publish_dir(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return src


@dataclass
class TarballSource(TreeSource):
    path: Path = Path()
    package: str | None = None
    debian: object | None = None  # the debian_archive.Offer it came from

    def describe(self) -> dict:
        d = super().describe()
        if self.debian is not None:
            o = self.debian
            d["debian"] = {"kind": o.kind, "package": o.package, "version": o.debian_version,
                           "upstream": o.upstream, "suite": o.suite, "file": o.local_name,
                           "sha256": o.sha256}
        return d

    def key(self) -> str:
        return "tar-" + cached_file_sha256(self.path)

    def kernel_version(self) -> str:
        # Known without extracting 160 MB when the archive told us.
        if self.debian is not None:
            return self.debian.upstream
        m = re.fullmatch(r"linux-source-(\d+\.\d+)", self.package or "")
        if m and self.kind == "debian":
            return m.group(1)
        return super().kernel_version()

    def _extract_into(self, dest: Path) -> None:
        require_command("tar", "tar")
        tmp = dest.parent / "extract"
        tmp.mkdir()
        proc = subprocess.run(["tar", "-xf", str(self.path), "-C", str(tmp)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["tar failed"])[-1]
            raise InputError(f"cannot extract {self.path}: {err}",
                             hint="the tarball is corrupt or truncated; download it again")
        entries = list(tmp.iterdir())
        top = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        os.rename(top, dest)
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class DirectorySource(TreeSource):
    path: Path = Path()

    def key(self) -> str:
        """Content hash of every regular file (path, mode, content), remembered by stat."""
        index_path = cache_dir("trees") / (
            "dir-" + hashlib.sha256(str(self.path).encode()).hexdigest()[:16] + ".json")
        try:
            index = json.loads(index_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            index = {}
        new_index = {}
        total = hashlib.sha256()
        with progress.phase("tree", f"hash {self.path}") as ph:
            for dirpath, dirnames, filenames in os.walk(self.path):
                dirnames[:] = sorted(d for d in dirnames if d not in (".git", "_build"))
                for name in sorted(filenames):
                    p = Path(dirpath, name)
                    rel = str(p.relative_to(self.path))
                    st = p.lstat()
                    if not (p.is_file() or p.is_symlink()):
                        continue
                    ident = f"{st.st_size}:{st.st_mtime_ns}:{st.st_mode}"
                    cached = index.get(rel)
                    if cached and cached[0] == ident:
                        digest = cached[1]
                    elif p.is_symlink():
                        digest = "link:" + os.readlink(p)
                    else:
                        digest = sha256_file(p)
                    new_index[rel] = [ident, digest]
                    total.update(f"{rel}\0{st.st_mode & 0o111}\0{digest}\n".encode())
                    if len(new_index) % 5000 == 0:
                        ph.update(f"{len(new_index)} files")
        atomic_write_json(index_path, new_index)
        return "dir-" + total.hexdigest()

    def _makefile_text(self) -> str:
        return (self.path / "Makefile").read_text(errors="replace")

    def _extract_into(self, dest: Path) -> None:
        shutil.copytree(self.path, dest, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", "_build"))


@dataclass
class GitRefSource(TreeSource):
    repo: Path = Path()
    ref: str = "HEAD"

    def _git(self, *args: str) -> str:
        require_command("git", "git")
        proc = subprocess.run(["git", "-C", str(self.repo), *args], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["git failed"])[-1]
            raise InputError(f"git {' '.join(args)} in {self.repo}: {err}",
                             hint="check the repository path and the ref name")
        return proc.stdout.strip()

    def key(self) -> str:
        return "git-" + self._git("rev-parse", "--verify", f"{self.ref}^{{tree}}")

    def _makefile_text(self) -> str:
        return self._git("show", f"{self.ref}:Makefile")

    def describe(self) -> dict:
        d = super().describe()
        d["commit"] = self._git("rev-parse", "--verify", f"{self.ref}^{{commit}}")
        d["ref"] = self.ref
        return d

    def _extract_into(self, dest: Path) -> None:
        dest.mkdir()
        archive = subprocess.Popen(["git", "-C", str(self.repo), "archive", "--format=tar",
                                    self.ref], stdout=subprocess.PIPE)
        proc = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout,
                              capture_output=True)
        archive.stdout.close()
        if archive.wait() != 0 or proc.returncode != 0:
            raise InputError(f"git archive of {self.ref} in {self.repo} failed",
                             hint="check the ref name")


def debian_source(version: str) -> TarballSource:
    """``debian:X.Y`` / ``debian:X.Y.Z``: the host's installed linux-source-X.Y when it is
    there (the default tree needs no network), else Debian's archive (private apt state,
    verified downloads; see orchestrator.kernel.debian_archive)."""
    from orchestrator.kernel import debian_archive

    path = Path(f"/usr/src/linux-source-{version}.tar.xz")
    if re.fullmatch(r"\d+\.\d+", version) and path.is_file():
        return TarballSource(kind="debian", location=f"linux-source-{version}", path=path,
                             package=f"linux-source-{version}")
    available = debian_archive.offers()
    picks = debian_archive.pick(version, available)
    if not picks:
        raise debian_archive.no_such_version(version, available)
    last_error: MmlabError | None = None
    for offer in picks:  # newest first; an orig tarball the mirror no longer serves: next
        try:
            tarball = debian_archive.source_tarball(offer)
        except InputError as exc:
            last_error = exc
            progress.info(f"warning: {exc}")
            continue
        return TarballSource(kind="debian", location=offer.describe(), path=tarball,
                             package=offer.package, debian=offer)
    assert last_error is not None
    raise last_error


def resolve_tree(spec: str | None = None, ref: str | None = None) -> TreeSource:
    """Turn a --tree/--ref pair into a TreeSource, with one-line errors for bad input."""
    spec = spec or DEFAULT_TREE
    m = re.fullmatch(r"debian:(\d+\.\d+(?:\.\d+)?(?:-[\w.~+]+)?)", spec)
    if m:
        if ref:
            raise InputError("--ref goes with a git repository, not a Debian source package",
                             hint="drop --ref or point --tree at a git repository")
        return debian_source(m.group(1))
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"kernel tree {spec} does not exist",
                         hint="give a directory, a tarball, a linux-source .deb, a git repository, "
                              "or debian:X.Y (`mmlab trees` lists them)")
    path = path.resolve()
    if ref:
        if not (path / ".git").exists() and not (path / "HEAD").is_file():
            raise InputError(f"{spec} is not a git repository, so --ref {ref} cannot apply",
                             hint="point --tree at a git clone, or drop --ref")
        return GitRefSource(kind="git", location=f"{path}@{ref}", repo=path, ref=ref)
    if path.is_file() and path.name.endswith(".deb"):
        from orchestrator.kernel import debian_archive

        tarball = debian_archive.tarball_from_deb(path)
        return TarballSource(kind="debian-deb", location=str(path), path=tarball,
                             package=path.name.split("_")[0])
    if path.is_file():
        if not path.name.endswith(TARBALL_SUFFIXES):
            raise InputError(f"{spec} is neither a directory nor a tarball",
                             hint=f"tarballs end in one of {', '.join(TARBALL_SUFFIXES)}")
        if not tarfile.is_tarfile(path):
            raise InputError(f"{spec} is not a readable tar archive (corrupt or truncated?)",
                             hint="download the tarball again")
        return TarballSource(kind="tarball", location=str(path), path=path)
    if not _looks_like_kernel(path):
        raise InputError(f"{spec} is not a kernel source tree (no Makefile, Kconfig and "
                         "arch/arm64)", hint="point --tree at the top of a Linux tree")
    return DirectorySource(kind="directory", location=str(path), path=path)


def make_work_tree(pristine: Path, work: Path) -> Path:
    """A hard-link farm of the pristine tree at ``work/src`` (a private copy if links fail)."""
    src = work / "src"
    if src.exists():
        shutil.rmtree(src)
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["cp", "-al", str(pristine), str(src)], capture_output=True,
                          text=True)
    if proc.returncode != 0:  # e.g. another filesystem: fall back to a real copy
        shutil.rmtree(src, ignore_errors=True)
        proc = subprocess.run(["cp", "-a", "--reflink=auto", str(pristine), str(src)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise MmlabError(f"cannot create work tree {src}: {proc.stderr.strip()}",
                             hint="check free space under the cache directory")
    return src
