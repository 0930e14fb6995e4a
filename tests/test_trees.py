"""Kernel trees from Debian's archive, version-gated config fragments, renamed options.

The archive tests (marker ``archive``) read Debian's real signed indexes through mmlab's
private apt state; the ``upstream`` tests build and boot Linux 7.3 from it.
"""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError, InputError
from orchestrator.kernel import debian_archive, kconfig
from orchestrator.kernel.build import BuildRequest, fragments_for
from orchestrator.kernel.sources import TarballSource, makefile_version, resolve_tree


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- version gates ---------------------------------------------------------------------------

def _names(version):
    return [f.name for f in kconfig.resolve_fragments("default", version=version)]


def test_gates_follow_the_kernel_version():
    assert _names("6.12") == ["qemu-virt", "sysctl-proc", "test_vmalloc", "ptdump"]
    assert _names("7.0") == ["qemu-virt", "sysctl-proc", "test_vmalloc", "ptdump",
                             "kunit-lazy-mmu"]
    assert _names("7.3") == ["qemu-virt", "sysctl", "test_vmalloc", "ptdump", "kunit-lazy-mmu"]
    # without a version nothing is skipped (the set as written)
    assert "sysctl" in _names(None) and "sysctl-proc" in _names(None)


def test_gate_skips_say_why():
    skips = kconfig.gate_skips(["sysctl", "kunit-lazy-mmu", "ptdump"], "6.12")
    assert set(skips) == {"sysctl", "kunit-lazy-mmu"}
    assert "7.3" in skips["sysctl"] and "needs >= 7.3" in skips["sysctl"]


@pytest.mark.parametrize("spec,version,ok", [
    ("< 7.3", "7.2.12", True), ("< 7.3", "7.3.4", False), (">= 6.18, < 7.1", "6.18", True),
    (">= 6.18, < 7.1", "7.1", False), ("== 6.12", "6.12.118", True), ("> 6.12", "6.12", False),
])
def test_version_matches(spec, version, ok):
    assert kconfig.version_matches(spec, version) is ok


def test_bad_gate_is_a_clear_error():
    with pytest.raises(InputError, match="bad version gate"):
        kconfig.version_matches("after 7.3", "7.3")


def test_makefile_version():
    text = "VERSION = 7\nPATCHLEVEL = 3\nSUBLEVEL = 4\nEXTRAVERSION =\n"
    assert makefile_version(text) == "7.3.4"
    with pytest.raises(InputError):
        makefile_version("# not a kernel\n")


def test_gated_fragments_leave_the_6_12_key_alone_of_new_fragments(tmp_path):
    """Adding a fragment gated to newer kernels must not change what a 6.12 build merges."""
    tree = _tree(tmp_path / "t", "6", "12", "118")
    src = resolve_tree(str(tree))
    frags, skipped = fragments_for(src, "default")
    assert "kunit-lazy-mmu" in skipped and "sysctl" in skipped
    assert [f.name for f in frags] == ["qemu-virt", "sysctl-proc", "test_vmalloc", "ptdump"]


# --- renamed options --------------------------------------------------------------------------

def _tree(root: Path, v: str, p: str, s: str, kconfig_text: str = "") -> Path:
    (root / "arch" / "arm64").mkdir(parents=True)
    (root / "Makefile").write_text(f"VERSION = {v}\nPATCHLEVEL = {p}\nSUBLEVEL = {s}\n")
    (root / "Kconfig").write_text('mainmenu "x"\nsource "fs/Kconfig"\nsource "arch/$(SRCARCH)/Kconfig"\n')
    (root / "fs").mkdir()
    (root / "fs" / "Kconfig").write_text(kconfig_text)
    (root / "arch" / "arm64" / "Kconfig").write_text("config ARM64\n\tdef_bool y\n")
    return root


def test_a_renamed_option_is_found_by_its_prompt(tmp_path):
    tree = _tree(tmp_path / "t", "7", "3", "4",
                 'config SYSCTL\n\tbool "Sysctl support (/proc/sys)" if EXPERT\n'
                 "\tdepends on PROC_FS\n\tdefault y\n")
    assert kconfig.renamed_to(tree, "PROC_SYSCTL") == ("SYSCTL", "Sysctl support (/proc/sys)")
    why = kconfig.explain_missing(tree, "CONFIG_PROC_SYSCTL", {})
    assert "renamed, CONFIG_SYSCTL" in why
    # a symbol nobody ever had: no rename claimed
    assert "misspelt, or removed" in kconfig.explain_missing(tree, "CONFIG_NO_SUCH_THING", {})


def test_every_problem_goes_to_the_log_and_the_hint_fits(tmp_path):
    tree = _tree(tmp_path / "t", "7", "3", "4",
                 'config SYSCTL\n\tbool "Sysctl support (/proc/sys)"\n'
                 'config FOO\n\tbool "foo"\n\tdepends on BAR\n')
    frag = tmp_path / "f.config"
    frag.write_text("CONFIG_PROC_SYSCTL=y\nCONFIG_FOO=y\nCONFIG_TYPO_X=y\n")
    cfg = tmp_path / ".config"
    cfg.write_text("CONFIG_SYSCTL=y\n")
    log = tmp_path / "build.log"
    with pytest.raises(ConfigError) as ei:
        kconfig.verify(tree, cfg, [kconfig.load_fragment(str(frag))], log_path=log)
    err = ei.value
    assert "(and 2 more)" in str(err) and "\n" not in str(err)
    assert "version gate" in err.hint and err.log == str(log)
    text = log.read_text()
    assert "3 config problem(s)" in text
    assert "CONFIG_FOO=y" in text and "depends on CONFIG_BAR" in text
    assert "renamed, CONFIG_SYSCTL" in text and "CONFIG_TYPO_X" in text


def test_prompts_file_covers_every_fragment_option():
    """prompts.toml must know every option a fragment names (else a rename goes unexplained)
    except those that exist only in newer kernels than the one it was generated from."""
    known = set(kconfig.tomllib.loads(kconfig.PROMPTS_FILE.read_text())["prompts"])
    newer_only = {"SYSCTL", "LAZY_MMU_MODE_KUNIT_TEST", "KUNIT", "KUNIT_DEBUGFS"}
    missing = set()
    for name in kconfig.available():
        for opt in kconfig.load_fragment(name).options():
            sym = opt.removeprefix("CONFIG_")
            if sym not in known and sym not in newer_only:
                missing.add(sym)
    # symbols without a prompt (def_bool ...) cannot be renamed by prompt; list them here
    assert missing <= {"64BIT", "SMP", "PCI_HOST_GENERIC", "NET_CORE"}, missing


# --- .deb trees -----------------------------------------------------------------------------------

def _deb(tmp_path: Path, package: str, files: dict[str, Path | str]) -> Path:
    """A .deb made with the real dpkg-deb: {path in package: a tree to tar.xz, or text}."""
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\n"
        "Maintainer: test <t@example.org>\nDescription: input data for a test\n")
    for rel, content in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            with tarfile.open(dest, "w:xz") as tf:
                tf.add(content, arcname=content.name)
        else:
            dest.write_text(content)
    deb = tmp_path / f"{package}_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


def _fake_linux_source_deb(tmp_path: Path) -> Path:
    """A linux-source-style .deb around a tiny tree tarball."""
    tree = _tree(tmp_path / "linux-source-9.9", "9", "9", "0")
    return _deb(tmp_path, "linux-source-9.9", {"usr/src/linux-source-9.9.tar.xz": tree})


def test_a_linux_source_deb_is_a_tree(tmp_path, isolated_cache):
    deb = _fake_linux_source_deb(tmp_path)
    src = resolve_tree(str(deb))
    assert isinstance(src, TarballSource) and src.kind == "debian-deb"
    assert src.kernel_version() == "9.9.0"
    assert (src.pristine() / "Makefile").is_file()
    # the same .deb again: the extracted tarball is reused, the key is the same
    assert resolve_tree(str(deb)).key() == src.key()


def test_a_deb_that_is_not_linux_source_is_refused(tmp_path, isolated_cache):
    deb = _deb(tmp_path, "hello", {"usr/share/hello": "hi\n"})
    with pytest.raises(InputError, match="holds no usr/src/linux-source"):
        resolve_tree(str(deb))
    trunc = tmp_path / "linux-source-1.0_1_all.deb"
    trunc.write_bytes(deb.read_bytes()[:100])
    with pytest.raises(InputError, match="not a readable Debian package"):
        resolve_tree(str(trunc))


# --- the archive: offers, picking, sources -----------------------------------------------------

def _offer(kind, up, deb="1", suite="trixie-backports"):
    return debian_archive.Offer(kind, "linux-source-" + ".".join(up.split(".")[:2])
                                if kind == "deb" else "linux", f"{up}-{deb}", up, suite,
                                f"x_{up}_{kind}", "0" * 64, 1)


def test_pick_takes_the_newest_of_a_series_and_prefers_the_deb():
    offers = [_offer("orig", "7.2.6"), _offer("deb", "7.2.6"), _offer("orig", "7.2.12"),
              _offer("deb", "7.2.12"), _offer("orig", "6.18.15")]
    best = debian_archive.pick("7.2", offers)
    assert [(o.kind, o.upstream) for o in best[:2]] == [("deb", "7.2.12"), ("orig", "7.2.12")]
    assert [o.upstream for o in debian_archive.pick("7.2.6", offers)] == ["7.2.6", "7.2.6"]
    assert debian_archive.pick("6.18", offers)[0].kind == "orig"
    err = debian_archive.no_such_version("6.17", offers)
    assert "ships no kernel source 6.17" in str(err)
    assert "debian:6.18, debian:7.2" in err.hint


def test_host_apt_entries_read_both_formats(tmp_path):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(
        "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main # c\n")
    (etc / "sources.list.d" / "x.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb-src\nURIs: http://src.example/debian\nSuites: x\n")
    got = debian_archive.host_apt_entries(etc)
    assert [(e.uri, e.suite, e.options) for e in got] == [
        ("http://mirror.example/debian", "bookworm", "signed-by=/k.gpg"),
        ("http://mirror.example/debian-security", "bookworm-security", "")]


def test_private_sources_list_names_every_suite_with_the_keyring(monkeypatch):
    monkeypatch.setenv(debian_archive.MIRROR_ENV, "http://mirror.example/debian")
    text = debian_archive.sources_list()
    for suite in ("bookworm", "bookworm-backports", "trixie", "trixie-backports"):
        assert f"deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] " \
               f"http://mirror.example/debian {suite} main" in text


def test_an_unknown_debian_version_lists_what_exists(monkeypatch):
    monkeypatch.setattr(debian_archive, "offers", lambda refresh=False: [_offer("deb", "7.3.4")])
    with pytest.raises(InputError, match="ships no kernel source 9.1") as ei:
        resolve_tree("debian:9.1")
    assert "debian:7.3" in ei.value.hint


@pytest.mark.archive
def test_the_real_archive_offers_7_3_7_2_and_6_18():
    """Debian's real signed indexes (private apt state): the versions the issue names."""
    offers = debian_archive.offers()
    series = {o.series for o in offers}
    assert {"7.3", "7.2", "6.18", "6.12"} <= series
    best = debian_archive.pick("7.3", offers)[0]
    assert best.kind == "deb" and best.package == "linux-source-7.3"
    assert len(best.sha256) == 64 and best.size > 100_000_000
    orig = [o for o in debian_archive.pick("6.18", offers) if o.kind == "orig"]
    assert orig and all(o.local_name.endswith(".orig.tar.xz") for o in orig)


@pytest.mark.archive
@pytest.mark.upstream
def test_debian_7_3_is_fetched_verified_and_materialized():
    src = resolve_tree("debian:7.3")
    assert src.kind == "debian" and src.debian.package == "linux-source-7.3"
    assert src.kernel_version().startswith("7.3.")
    from orchestrator.kernel.sources import sha256_file

    deb = debian_archive.cached_file(src.debian)
    assert deb is not None and sha256_file(deb) == src.debian.sha256
    tree = src.pristine()
    assert makefile_version((tree / "Makefile").read_text()).startswith("7.3.")
    # the real 7.3 tree has no PROC_SYSCTL: the rename is found by its prompt
    assert kconfig.renamed_to(tree, "PROC_SYSCTL")[0] == "SYSCTL"
    req = BuildRequest.for_tree(src, "default")
    assert [f.name for f in req.fragments] == ["qemu-virt", "sysctl", "test_vmalloc", "ptdump",
                                               "kunit-lazy-mmu"]


@pytest.mark.parametrize("text,match", [
    ('base_target = "tinyconfig"\n[sets]\nx = ["qemu-virt"]\n[gate.qemu-virt]\n', "unknown key"),
    ('base_target = "tinyconfig"\n[sets]\nx = ["qemu-virtt"]\n', "unknown fragment"),
    ('base_target = "tinyconfig"\n[sets]\nx = ["qemu-virt"]\n[gates.qemu-virt]\n'
     'versions = "after 7.0"\nwhy = "x"\n', "bad version gate"),
    ('base_target = "tinyconfig"\n[sets]\nx = ["qemu-virt"]\n[gates.qemu-virt]\n'
     'versions = ">= 7.0"\n', "needs exactly versions"),
])
def test_bad_fragment_sets_are_refused_at_load(tmp_path, text, match):
    (tmp_path / "qemu-virt.config").write_text("CONFIG_X=y\n")
    (tmp_path / "sets.toml").write_text(text)
    with pytest.raises(InputError, match=match):
        kconfig._sets(tmp_path / "sets.toml")


def test_the_shipped_fragment_sets_load():
    data = kconfig._sets()
    assert "default" in data["sets"] and "kunit-lazy-mmu" in data["gates"]
