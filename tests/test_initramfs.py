"""The guest initramfs: cpio newc writer, recipe, module loader, content-addressed cache.

All real: the archive is checked with the system's ``cpio`` tool, busybox comes from
Debian's arm64 package (downloaded once into the cache), the loader is cross-compiled and
run through qemu-aarch64-static when that is installed.
"""

from __future__ import annotations

import gzip
import shutil
import stat
import subprocess

import pytest

from orchestrator import loader
from orchestrator.errors import InputError
from orchestrator.image.initramfs import (
    CpioWriter,
    build_initramfs,
    image_listing,
    modules_dep,
    read_newc,
)
from orchestrator.kernel import debpkg


def test_cpio_newc_round_trip_and_system_cpio_agrees(tmp_path):
    w = CpioWriter()
    w.directory("dev")
    w.device("dev/console", "c", 5, 1, 0o600)
    w.directory("bin")
    w.file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
    w.symlink("bin/sh", "/bin/busybox")
    w.file("odd-size", b"x" * 5)
    data = w.finish()
    assert len(data) % 512 == 0

    entries = read_newc(data)
    assert stat.S_ISCHR(entries["dev/console"]["mode"])
    assert entries["dev/console"]["rdev"] == (5, 1)
    assert entries["bin/hello"]["data"] == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE(entries["bin/hello"]["mode"]) == 0o755
    assert stat.S_ISLNK(entries["bin/sh"]["mode"]) and entries["bin/sh"]["data"] == b"/bin/busybox"
    assert all(e["uid"] == 0 and e["mtime"] == 0 for e in entries.values())

    if shutil.which("cpio") is None:
        pytest.skip("cpio tool not installed")
    listing = subprocess.run(["cpio", "-itv"], input=data, capture_output=True, check=True)
    text = listing.stdout.decode()
    assert "crw-------" in text and "dev/console" in text
    assert "bin/sh -> /bin/busybox" in text
    assert "odd-size" in text


def test_cpio_rejects_duplicate_names():
    w = CpioWriter()
    w.file("a", b"1")
    with pytest.raises(Exception, match="added twice"):
        w.file("a", b"2")


def test_debian_arm64_busybox_fetched_without_changing_host_architectures():
    deb = debpkg.fetch("busybox-static")
    assert deb.name.endswith("_arm64.deb")
    root = debpkg.unpack("busybox-static")
    busybox = root / "bin" / "busybox"
    head = busybox.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[18] == 183  # e_machine EM_AARCH64
    archs = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert "arm64" not in archs  # the host's dpkg was not touched
    assert debpkg.fetch("busybox-static") == deb  # cached: no second download


def test_loader_is_a_static_arm64_binary_that_reports_errno():
    binary = loader.build_loader()
    data = binary.read_bytes()
    assert data[:4] == b"\x7fELF" and data[18] == 183
    assert loader.build_loader() == binary  # cached by content
    emu = shutil.which("qemu-aarch64-static")
    if emu is None:
        pytest.skip("qemu-user-static not installed")
    res = subprocess.run([emu, str(binary)], capture_output=True, text=True)
    assert res.returncode == 22 and "usage" in res.stdout
    res = subprocess.run([emu, str(binary), "/nonexistent.ko", "a=1"], capture_output=True,
                         text=True)
    assert res.returncode == 2
    assert "open = -2 (ENOENT)" in res.stdout


def test_image_contents_and_content_addressing():
    img = build_initramfs(None)
    entries = image_listing(img)
    assert stat.S_ISCHR(entries["dev/console"]["mode"])
    assert entries["dev/console"]["rdev"] == (5, 1)
    assert entries["dev/null"]["rdev"] == (1, 3)
    assert entries["init"]["data"].startswith(b"#!/bin/busybox sh")
    assert "mmlab/agent" in entries and "usr/bin/mmlab-load" in entries
    for script in ("vmalloc.sh", "ptdump.sh", "ptdump_vmalloc_stress.sh", "lib.sh"):
        assert f"mmlab/tests/{script}" in entries
    if shutil.which("qemu-aarch64-static"):
        assert entries["bin/sh"]["data"] == b"/bin/busybox"
        assert img.manifest["applets"] > 100
    assert img.path.read_bytes()[:2] == b"\x1f\x8b"
    gzip.decompress(img.path.read_bytes())

    again = build_initramfs(None)
    assert again.key == img.key and again.path == img.path
    other = build_initramfs(None, extra_files={"mmlab/extra.sh": b"echo extra\n"})
    assert other.key != img.key
    assert image_listing(other)["mmlab/extra.sh"]["data"] == b"echo extra\n"


@pytest.mark.kernel
def test_image_carries_the_artifacts_modules_with_modules_dep(kernel_artifact):
    img = build_initramfs(kernel_artifact)
    entries = image_listing(img)
    rel = kernel_artifact.release
    kos = [n for n in entries if n.startswith(f"lib/modules/{rel}/") and n.endswith(".ko")]
    assert any(n.endswith("/test_vmalloc.ko") for n in kos)
    dep = entries[f"lib/modules/{rel}/modules.dep"]["data"].decode()
    assert "test_vmalloc.ko:" in dep
    assert img.manifest["release"] == rel and img.manifest["artifact"] == kernel_artifact.key


@pytest.mark.kernel
def test_generated_modules_dep_matches_depmod(kernel_artifact):
    """Our modules.dep writer (used when an artifact lacks one) agrees with depmod's."""
    ours = modules_dep(kernel_artifact.modules_dir)
    theirs = (kernel_artifact.modules_dir / "modules.dep")
    if not theirs.is_file():
        pytest.skip("artifact has no depmod-made modules.dep")
    assert sorted(ours.splitlines()) == sorted(theirs.read_text().splitlines())


def test_a_recipe_can_take_whole_packages_with_their_symlinks(tmp_path):
    """What a board userland needs (dropbear's libraries): whole packages, links intact."""
    recipe = tmp_path / "small.toml"
    recipe.write_text('version = 1\ncompression = "none"\ndirectories = ["tmp"]\n'
                      '[[package]]\nname = "zlib1g"\nall_files = true\n')
    img = build_initramfs(None, recipe_path=recipe)
    entries = image_listing(img)
    links = {n: e for n, e in entries.items() if stat.S_ISLNK(e["mode"]) and "libz.so" in n}
    files = {n: e for n, e in entries.items() if stat.S_ISREG(e["mode"]) and "libz.so" in n}
    assert links and files
    for name, entry in links.items():  # each link points at the real library
        target = entry["data"].decode()
        assert any(f.endswith("/" + target) for f in files), (name, target)
    assert not any(n.startswith("usr/share/doc/") for n in entries)
    assert img.path.suffix == ".cpio"


@pytest.mark.parametrize("with_filters", [True, False])
def test_header_extraction_with_and_without_tarfile_filters(tmp_path, monkeypatch,
                                                            with_filters):
    """Debian 12's python3 (3.11.2) predates tarfile's extraction filters (3.11.4): the
    loader's header extraction must work on both, and refuse '..' on both."""
    import io
    import tarfile

    if not with_filters:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)

    def tarball(path, names):
        with tarfile.open(path, "w:xz") as tar:
            for name in names:
                data = f"/* {name} */\n".encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path

    good = tarball(tmp_path / "good.tar.xz", [
        "linux-6.12/tools/include/nolibc/nolibc.h", "linux-6.12/include/uapi/linux/types.h",
        "linux-6.12/arch/arm64/include/uapi/asm/unistd.h", "linux-6.12/mm/vmalloc.c"])
    dest = tmp_path / "out"
    loader._extract(good, dest)
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert got == ["arch/arm64/include/uapi/asm/unistd.h", "include/uapi/linux/types.h",
                   "tools/include/nolibc/nolibc.h"]
    bad = tarball(tmp_path / "bad.tar.xz", ["linux-6.12/include/uapi/../../../escape.h"])
    with pytest.raises(InputError, match="unsafe member name"):
        loader._extract(bad, tmp_path / "out2")
    assert not (tmp_path / "escape.h").exists()


def test_a_secret_in_an_image_is_0600_inside_and_on_disk():
    """The board's host private key was 0755 inside a cached image readable by everyone."""
    import stat as st

    from orchestrator.image.initramfs import image_listing

    img = build_initramfs(None, extra_files={"etc/dropbear/key": (b"PRIVATE", 0o600),
                                             "mmlab/run.sh": b"echo hi\n"})
    listing = image_listing(img)
    assert st.S_IMODE(listing["etc/dropbear/key"]["mode"]) == 0o600
    assert st.S_IMODE(listing["mmlab/run.sh"]["mode"]) == 0o755
    assert st.S_IMODE(img.path.stat().st_mode) == 0o600
    plain = build_initramfs(None, extra_files={"mmlab/run.sh": b"echo hi\n"})
    assert st.S_IMODE(plain.path.stat().st_mode) & 0o044  # nothing secret: readable


def test_board_keys_are_never_world_readable(tmp_path):
    """Private keys were written 0644 and chmod-ed afterwards."""
    import stat as st

    from orchestrator.image.board_image import board_keys

    keys = board_keys(tmp_path / "keys")
    assert st.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for p in (keys.host_key, keys.client_key):
        assert st.S_IMODE(p.stat().st_mode) == 0o600
