"""Kernel sources from Debian's archive: any version it ships, fetched and verified.

``--tree debian:7.3`` (or ``debian:7.2``, ``debian:6.18``, ``debian:7.2.6``) is resolved
against the suites in ``debian_trees.toml`` through a *private* apt state under
``<cache>/downloads/apt-kernel/`` (its own sources list, lists and archive cache,
``Dir::State::status=/dev/null``): the host's apt configuration is never touched, and the
mirror is the host's own Debian archive. Two kinds of offer exist:

- ``deb``: a ``linux-source-X.Y`` binary package; the tree is ``usr/src/linux-source-X.Y.tar.xz``
  inside it (Debian's patched source, e.g. 7.3.4-1~bpo13+1 from trixie-backports);
- ``orig``: an upstream ``linux_X.Y.Z.orig.tar.xz`` listed in a signed ``Sources`` index
  (e.g. 6.18.15 in trixie-backports). Its .dsc and Debian diff are often gone from the
  mirror while the orig tarball is still served; only the tarball is needed.

Verification: apt checks the InRelease signatures with Debian's archive keyring and each
downloaded file against the signed index; mmlab checks the sha256 of the kept file against
the index again (and records it), so a file changed in the cache is noticed.

Downloads are kept under ``<cache>/downloads/kernel/`` and reused without the network.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from orchestrator import progress
from orchestrator.atomic import atomic_write_text
from orchestrator.errors import InputError, MissingToolError
from orchestrator.paths import cache_dir

CONFIG = Path(__file__).with_name("debian_trees.toml")
MIRROR_ENV = "MMLAB_DEBIAN_MIRROR"


def settings() -> dict:
    return tomllib.loads(CONFIG.read_text())


# --- the host's Debian sources ------------------------------------------------------------


@dataclass(frozen=True)
class AptEntry:
    uri: str
    suite: str
    components: tuple[str, ...]
    options: str  # "signed-by=..." or ""


def host_apt_entries(etc: Path = Path("/etc/apt")) -> list[AptEntry]:
    """The host's ``deb`` entries (one-line and deb822 formats), in file order."""
    entries: list[AptEntry] = []
    one_line = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for f in one_line:
        if not f.is_file():
            continue
        for line in f.read_text(errors="replace").splitlines():
            line = line.split("#", 1)[0].strip()
            m = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
            if m:
                opts = (m.group(1) or "").strip()[1:-1].strip()
                entries.append(AptEntry(m.group(2), m.group(3), tuple(m.group(4).split()), opts))
    for f in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text(errors="replace")):
            fields: dict[str, str] = {}
            key = None
            for raw in stanza.splitlines():
                if raw.startswith("#") or not raw.strip():
                    continue
                if raw[0].isspace() and key:
                    fields[key] += " " + raw.strip()
                    continue
                key, _, val = raw.partition(":")
                key = key.strip().lower()
                fields[key] = val.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            opts = (f"signed-by={fields['signed-by']}"
                    if fields.get("signed-by", "").startswith("/") else "")
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    entries.append(AptEntry(uri, suite, tuple(fields.get("components", "").split()),
                                            opts))
    return entries


def debian_mirror() -> str:
    """The Debian archive URI to use: $MMLAB_DEBIAN_MIRROR, else the host's own."""
    env = os.environ.get(MIRROR_ENV)
    if env:
        return env.rstrip("/")
    for e in host_apt_entries():
        if re.search(r"/debian/?$", e.uri):
            return e.uri.rstrip("/")
    raise MissingToolError(
        "no Debian archive in /etc/apt/sources.list* to fetch kernel sources from",
        hint=f"set {MIRROR_ENV} to a Debian mirror URI (the one apt uses)")


# --- the private apt state ------------------------------------------------------------------


def _base() -> Path:
    return cache_dir("downloads") / "apt-kernel"


def _apt_options(base: Path) -> list[str]:
    lists, archives, parts = base / "lists", base / "cache", base / "sources.list.d"
    for d in (lists / "partial", archives / "archives" / "partial", parts, base / "state"):
        d.mkdir(parents=True, exist_ok=True)
    opts = [
        "-o", f"Dir::State={base / 'state'}",
        "-o", f"Dir::State::Lists={lists}",
        "-o", "Dir::State::status=/dev/null",
        "-o", f"Dir::Etc::SourceList={base / 'sources.list'}",
        "-o", f"Dir::Etc::SourceParts={parts}",
        "-o", "Dir::Etc::Preferences=/dev/null",
        "-o", f"Dir::Etc::PreferencesParts={parts}",
        "-o", f"Dir::Cache={archives}",
        "-o", "Debug::NoLocking=1",
    ]
    if os.geteuid() == 0:
        opts += ["-o", "APT::Sandbox::User=root"]  # _apt cannot write into root's cache
    return opts


def sources_list(mirror: str | None = None) -> str:
    cfg = settings()
    mirror = mirror or debian_mirror()
    keyring = cfg["keyring"]
    if not Path(keyring).is_file():
        raise MissingToolError(f"Debian's archive keyring {keyring} is missing",
                               hint="apt-get install debian-archive-keyring")
    comps = " ".join(cfg["components"])
    lines = ["# written by mmlab (orchestrator/kernel/debian_archive.py); not the host's apt config"]
    for suite in cfg["suites"]:
        for kind in ("deb", "deb-src"):
            lines.append(f"{kind} [signed-by={keyring}] {mirror} {suite} {comps}")
    return "\n".join(lines) + "\n"


def _apt(tool: str, args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which(tool)
    if exe is None:
        raise MissingToolError(f"{tool} not found (needed to fetch Debian kernel sources)",
                               hint="apt-get install apt")
    return subprocess.run([exe, *_apt_options(_base()), *args], cwd=cwd, capture_output=True,
                          text=True, check=False)


def _apt_error(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("E:"):
            return line[2:].strip()
    return text.strip().splitlines()[-1] if text.strip() else "no output"


def _lists_age_hours() -> float | None:
    stamp = _base() / "updated"
    if not stamp.is_file():
        return None
    return (time.time() - stamp.stat().st_mtime) / 3600


def update(force: bool = False) -> None:
    """Refresh the private lists when missing, stale or ``force``d."""
    base = _base()
    want = sources_list()
    current = (base / "sources.list").read_text() if (base / "sources.list").is_file() else ""
    age = _lists_age_hours()
    fresh = age is not None and age < settings()["max_list_age_hours"] and current == want
    if fresh and not force:
        return
    atomic_write_text(base / "sources.list", want)
    with progress.phase("tree", "apt-get update (Debian kernel source indexes, private state)"):
        res = _apt("apt-get", ["-q", "update"])
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith(("E:", "W:"))
              and "Unable to read" not in ln]
    if res.returncode != 0 or any(e.startswith("E:") for e in errors):
        if age is not None and current == want:
            progress.info(f"warning: apt-get update failed ({_apt_error(res.stderr)}); "
                          f"using the lists from {age:.0f} h ago")
            return
        raise InputError(f"cannot read Debian's kernel source indexes: {_apt_error(res.stderr)}",
                         hint="check network access to the Debian mirror in /etc/apt/sources.list* "
                              f"(or set {MIRROR_ENV})")
    (base / "updated").touch()


# --- what the archive offers ------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """One kernel source the archive ships."""

    kind: str            # "deb" (linux-source-X.Y) or "orig" (upstream orig tarball)
    package: str         # linux-source-7.3 / linux
    debian_version: str  # 7.3.4-1~bpo13+1
    upstream: str        # 7.3.4
    suite: str           # trixie-backports
    filename: str        # pool path (deb) or file name (orig)
    sha256: str
    size: int

    @property
    def series(self) -> str:
        return ".".join(self.upstream.split(".")[:2])

    @property
    def local_name(self) -> str:
        return Path(self.filename).name

    def sort_key(self) -> tuple:
        return (_version_tuple(self.upstream), self.kind == "deb",
                _version_tuple(self.debian_version))

    def describe(self) -> str:
        what = (f"{self.package} {self.debian_version}" if self.kind == "deb"
                else f"{self.local_name} (upstream, from the {self.package} "
                     f"{self.debian_version} source index)")
        return f"{what}, {self.suite}"


def _version_tuple(v: str) -> tuple:
    return tuple(int(x) if x.isdigit() else x for x in re.split(r"[.\-~+]", v))


def _upstream_of(debian_version: str) -> str:
    v = debian_version.split(":")[-1].split("-")[0]
    return v.split("+")[0].split("~")[0]


def _stanzas(text: str) -> list[dict[str, str]]:
    out = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for raw in block.splitlines():
            if raw[:1].isspace() and key:
                fields[key] += "\n" + raw.strip()
                continue
            key, sep, val = raw.partition(":")
            if not sep:
                continue
            key = key.strip()
            fields[key] = val.strip()
        if fields:
            out.append(fields)
    return out


def _suites_of(package: str) -> dict[str, str]:
    """{version: suite} from ``apt-cache madison``."""
    res = _apt("apt-cache", ["madison", package])
    out: dict[str, str] = {}
    for line in res.stdout.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 3:
            m = re.search(r"\s(\S+?)/\S+\s+(?:\S+\s+)?(Packages|Sources)\s*$", parts[2])
            if m:
                out.setdefault(parts[1], m.group(1))
    return out


def offers(refresh: bool = False) -> list[Offer]:
    """Every kernel source the configured suites ship, oldest first (remembered per
    refresh of the lists, so a repeat resolve costs no apt-cache calls)."""
    import json

    update(force=refresh)
    memo = _base() / "offers.json"
    stamp = (_base() / "updated").stat().st_mtime_ns if (_base() / "updated").is_file() else 0
    try:
        data = json.loads(memo.read_text())
        if data.get("stamp") == stamp and data.get("suites") == settings()["suites"]:
            return [Offer(**o) for o in data["offers"]]
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        pass
    result = _scan_offers()
    from orchestrator.atomic import atomic_write_json

    atomic_write_json(memo, {"stamp": stamp, "suites": settings()["suites"],
                             "offers": [o.__dict__ for o in result]})
    return result


def _scan_offers() -> list[Offer]:
    found: list[Offer] = []
    names = _apt("apt-cache", ["pkgnames", "linux-source-"]).stdout.split()
    names = sorted(n for n in names if re.fullmatch(r"linux-source-\d+\.\d+", n))
    for name in names:
        suites = _suites_of(name)
        for st in _stanzas(_apt("apt-cache", ["show", name]).stdout):
            if st.get("Package") != name or "Filename" not in st:
                continue
            ver = st["Version"]
            found.append(Offer("deb", name, ver, _upstream_of(ver), suites.get(ver, "?"),
                               st["Filename"], st.get("SHA256", ""), int(st.get("Size", 0))))
    src_suites = _suites_of("linux")
    for st in _stanzas(_apt("apt-cache", ["showsrc", "linux"]).stdout):
        if st.get("Package") != "linux":
            continue
        ver = st["Version"]
        for line in st.get("Checksums-Sha256", "").splitlines():
            parts = line.split()
            if len(parts) == 3 and re.fullmatch(r"linux_[\d.]+\.orig\.tar\.\w+", parts[2]):
                found.append(Offer("orig", "linux", ver, _upstream_of(ver),
                                   src_suites.get(ver, "?"), parts[2], parts[0], int(parts[1])))
    uniq = {(o.kind, o.local_name): o for o in found}
    return sorted(uniq.values(), key=lambda o: o.sort_key())


def pick(spec: str, available: list[Offer]) -> list[Offer]:
    """Offers matching ``spec`` (a series 7.3, or an upstream version 7.2.6), best first."""
    if re.fullmatch(r"\d+\.\d+", spec):
        hits = [o for o in available if o.series == spec]
    else:
        hits = [o for o in available if o.upstream == spec or o.debian_version == spec]
    return sorted(hits, key=lambda o: o.sort_key(), reverse=True)


def no_such_version(spec: str, available: list[Offer]) -> InputError:
    series = sorted({o.series for o in available}, key=_version_tuple)
    return InputError(
        f"Debian's archive ships no kernel source {spec} (suites: "
        f"{', '.join(settings()['suites'])})",
        hint=f"available: {', '.join('debian:' + s for s in series) or 'none'}; "
             "`mmlab trees` lists every version")


# --- downloads ----------------------------------------------------------------------------------


def _kernel_dir() -> Path:
    d = cache_dir("downloads") / "kernel"
    d.mkdir(parents=True, exist_ok=True)
    return d


def cached_file(offer: Offer) -> Path | None:
    p = _kernel_dir() / offer.local_name
    return p if p.is_file() and p.stat().st_size == offer.size else None


def _watch(dirs: list[Path], total: int, ph: progress.Phase, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        size = 0
        for d in dirs:
            for p in d.rglob("*"):
                try:
                    size += p.stat().st_size if p.is_file() else 0
                except OSError:
                    pass
        if total:
            ph.update(f"{size / 1e6:.0f} of {total / 1e6:.0f} MB")


def download(offer: Offer) -> Path:
    """The offer's file in the downloads cache, fetched and verified once."""
    from orchestrator.kernel.sources import sha256_file

    hit = cached_file(offer)
    if hit is not None:
        return hit
    dest = _kernel_dir() / offer.local_name
    tmp = Path(tempfile.mkdtemp(dir=_kernel_dir(), prefix=".dl."))
    partial = _base() / "cache" / "archives" / "partial"
    stop = threading.Event()
    try:
        with progress.phase("tree", f"download {offer.describe()}") as ph:
            watcher = threading.Thread(target=_watch, args=([tmp, partial], offer.size, ph, stop),
                                       daemon=True)
            watcher.start()
            if offer.kind == "deb":
                res = _apt("apt-get", ["-q", "download",
                                       f"{offer.package}={offer.debian_version}"], cwd=tmp)
            else:
                res = _apt("apt-get", ["-q", "source", "--download-only",
                                       f"linux={offer.debian_version}"], cwd=tmp)
            stop.set()
            watcher.join()
        got = tmp / offer.local_name
        if not got.is_file():
            got = next(tmp.glob(f"{offer.package}_*.deb"), got) if offer.kind == "deb" else got
        if not got.is_file():
            raise InputError(f"cannot download {offer.describe()}: {_apt_error(res.stderr)}",
                             hint="the mirror no longer serves this file; `mmlab trees --refresh` "
                                  "lists what it has")
        # For an orig tarball apt also asks for the .dsc and Debian diff, which the mirror may
        # no longer serve; the tarball is what matters, checked against the signed index.
        digest = sha256_file(got)
        if digest != offer.sha256:
            raise InputError(f"{offer.local_name}: sha256 {digest[:16]}... does not match the "
                             f"signed index ({offer.sha256[:16]}...)",
                             hint="the mirror served a different file; try again later")
        os.replace(got, dest)
    finally:
        stop.set()
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def source_tarball(offer: Offer) -> Path:
    """The kernel source tarball of an offer (the orig itself, or the .tar.xz inside the .deb)."""
    path = download(offer)
    if offer.kind == "orig":
        return path
    return tarball_from_deb(path)


def tarball_from_deb(deb: Path) -> Path:
    """``usr/src/linux-source-X.Y.tar.*`` from a linux-source .deb, extracted once and cached."""
    from orchestrator.kernel.sources import cached_file_sha256

    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb is None:
        raise MissingToolError("dpkg-deb not found (needed to read a .deb)",
                               hint="apt-get install dpkg")
    res = subprocess.run([dpkg_deb, "-c", str(deb)], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        raise InputError(f"{deb} is not a readable Debian package: {_apt_error(res.stderr)}",
                         hint="download it again (a truncated .deb cannot be read)")
    members = [ln.split()[-1] for ln in res.stdout.splitlines()
               if re.search(r"usr/src/linux-source-[\d.]+\.tar\.\w+$", ln)]
    if not members:
        raise InputError(f"{deb.name} holds no usr/src/linux-source-*.tar.* (not a linux-source "
                         "package)", hint="give a linux-source-X.Y .deb, a tarball or a tree")
    member = members[0]
    key = cached_file_sha256(deb)[:16]
    out = _kernel_dir() / f"{Path(member).name.split('.tar')[0]}-{key}{''.join(Path(member).suffixes[-2:])}"
    if out.is_file():
        return out
    tmp = Path(tempfile.mkdtemp(dir=_kernel_dir(), prefix=".x."))
    try:
        with progress.phase("tree", f"extract {Path(member).name} from {deb.name}"):
            fsys = subprocess.Popen([dpkg_deb, "--fsys-tarfile", str(deb)],
                                    stdout=subprocess.PIPE)
            proc = subprocess.run(["tar", "-x", "-C", str(tmp), member], stdin=fsys.stdout,
                                  capture_output=True, text=True)
            fsys.stdout.close()
            if fsys.wait() != 0 or proc.returncode != 0:
                raise InputError(f"cannot extract {member} from {deb.name}",
                                 hint="the .deb is corrupt or truncated; download it again")
        os.replace(tmp / member, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
