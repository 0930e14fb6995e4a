"""The build pipeline: sources, fragments, cache keys, bad input, and real kernel builds."""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError, InputError
from orchestrator.kernel import kconfig
from orchestrator.kernel.artifacts import Artifact
from orchestrator.kernel.build import BuildRequest, build_kernel, check_config
from orchestrator.kernel.sources import DirectorySource, resolve_tree


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A private MMLAB_CACHE (for tests that must see exactly what gets written)."""
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _tiny_tree(root: Path) -> Path:
    """The skeleton that makes a directory look like a kernel tree (input data only)."""
    (root / "arch" / "arm64").mkdir(parents=True)
    (root / "Makefile").write_text("# not a real kernel\n")
    (root / "Kconfig").write_text("mainmenu \"x\"\n")
    (root / "arch" / "arm64" / "Kconfig").write_text("config ARM64\n\tdef_bool y\n")
    return root


def _tarball(tree: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(tree, arcname="linux-x")
    return out


# --- fragments -------------------------------------------------------------------------

def test_default_fragment_set_resolves_to_data_files():
    frags = kconfig.resolve_fragments("default", version="6.12")
    assert [f.name for f in frags] == ["qemu-virt", "sysctl-proc", "test_vmalloc", "ptdump"]
    req = kconfig.requested(frags)
    assert req["CONFIG_TEST_VMALLOC"] == ("m", "test_vmalloc")
    assert req["CONFIG_PTDUMP_DEBUGFS"] == ("y", "ptdump")


def test_later_fragment_wins_and_unset_lines_mean_n(tmp_path):
    a = tmp_path / "a.config"
    a.write_text("CONFIG_FOO=y\nCONFIG_BAR=y\n")
    b = tmp_path / "b.config"
    b.write_text("# CONFIG_FOO is not set\n")
    req = kconfig.requested(kconfig.resolve_fragments([str(a), str(b)]))
    assert req["CONFIG_FOO"] == ("n", "b")
    assert req["CONFIG_BAR"] == ("y", "a")


def test_unknown_fragment_is_a_clear_error():
    with pytest.raises(InputError, match="unknown config fragment 'nope'") as ei:
        kconfig.resolve_fragments("qemu-virt,nope")
    assert "qemu-virt" in ei.value.hint


def test_fragment_with_garbage_line_is_rejected(tmp_path):
    bad = tmp_path / "bad.config"
    bad.write_text("CONFIG_OK=y\nthis is not config\n")
    with pytest.raises(InputError, match=r"bad.config:2: not a config line"):
        kconfig.load_fragment(str(bad))


# --- sources and keys -----------------------------------------------------------------

def test_missing_tree_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        resolve_tree(str(tmp_path / "nowhere"))


def test_directory_that_is_not_a_kernel_is_rejected(tmp_path):
    with pytest.raises(InputError, match="not a kernel source tree"):
        resolve_tree(str(tmp_path))


def test_ref_without_git_repo_is_rejected(tmp_path):
    tree = _tiny_tree(tmp_path / "t")
    with pytest.raises(InputError, match="not a git repository"):
        resolve_tree(str(tree), ref="v6.12")


def test_garbage_tarball_is_rejected_up_front(tmp_path):
    bad = tmp_path / "linux.tar.xz"
    bad.write_bytes(b"\xfd7zXZ\x00 this is not a tarball" * 10)
    with pytest.raises(InputError, match="not a readable tar archive"):
        resolve_tree(str(bad))


def test_truncated_tarball_leaves_nothing_in_the_cache(tmp_path, isolated_cache):
    tree = _tiny_tree(tmp_path / "t")
    # enough content that truncation cuts a member in the middle
    (tree / "big.bin").write_bytes(bytes(range(256)) * 4096)
    good = _tarball(tree, tmp_path / "linux.tar.gz")
    data = good.read_bytes()
    bad = tmp_path / "cut.tar.gz"
    bad.write_bytes(data[: len(data) // 2])
    source = resolve_tree(str(bad))
    with pytest.raises(InputError, match="cannot extract"):
        source.pristine()
    trees = isolated_cache / "trees"
    leftovers = [p.name for p in trees.iterdir() if p.is_dir()]
    assert leftovers == [], f"half-written trees left behind: {leftovers}"


def test_tarball_tree_materializes_once(tmp_path, isolated_cache):
    tree = _tiny_tree(tmp_path / "t")
    source = resolve_tree(str(_tarball(tree, tmp_path / "linux.tar.gz")))
    src = source.pristine()
    assert (src / "arch" / "arm64" / "Kconfig").is_file()
    stamp = (src.parent / "tree.json").stat().st_mtime_ns
    assert source.pristine() == src
    assert (src.parent / "tree.json").stat().st_mtime_ns == stamp


def test_directory_key_follows_content_not_mtime(tmp_path, isolated_cache):
    tree = _tiny_tree(tmp_path / "t")
    src = DirectorySource(kind="directory", location=str(tree), path=tree)
    k1 = src.key()
    (tree / "Makefile").touch()  # new mtime, same content
    assert src.key() == k1
    (tree / "Makefile").write_text("# changed\n")
    assert src.key() != k1


def test_build_key_covers_fragments_and_tree(tmp_path):
    base = BuildRequest.default()
    k = base.key()
    assert k == BuildRequest.default().key(), "same inputs must give the same key"
    frag = tmp_path / "extra.config"
    frag.write_text("CONFIG_PRINTK_TIME=y\n")
    more = BuildRequest.default()
    more.fragments = more.fragments + [kconfig.load_fragment(str(frag))]
    assert more.key() != k
    inputs = base.inputs()
    assert inputs["tree"]["key"].startswith("tar-")
    assert "aarch64-linux-gnu-gcc" in inputs["toolchain"]["gcc"]


# --- real builds -------------------------------------------------------------------------

@pytest.mark.kernel
def test_default_build_produces_image_module_and_metadata(kernel_artifact: Artifact):
    art = kernel_artifact
    assert art.image.stat().st_size > 2_000_000
    assert art.image.read_bytes()[56:60] == b"ARM\x64", "arm64 Image header magic"
    assert art.module("test_vmalloc") is not None
    assert (art.modules_dir / "modules.dep").is_file()
    assert art.release.startswith("6.12")
    assert art.build_id and len(art.build_id) == 40
    m = art.metadata
    assert m["key"] == art.path.name
    assert set(m["durations_s"]) >= {"prepare", "config", "make", "collect", "total"}
    assert m["files"]["Image"] and m["config_sha256"]
    assert any("Image" in c["argv"] for c in m["commands"])
    assert m["commands"][0]["env"]["KBUILD_BUILD_TIMESTAMP"]
    cfg = art.config()
    assert cfg["CONFIG_TEST_VMALLOC"] == "m" and cfg["CONFIG_PTDUMP_DEBUGFS"] == "y"
    assert (art.path / "reproduce.sh").read_text().count("make") >= 3


@pytest.mark.kernel
def test_repeat_build_is_a_cache_hit_without_make(kernel_artifact: Artifact, monkeypatch):
    import orchestrator.kernel.kbuild as kbuild

    def no_make(*a, **k):  # a repeat build must not run make at all
        raise AssertionError("make was run on a cache hit")

    monkeypatch.setattr(kbuild.Kbuild, "run", no_make)
    t = time.monotonic()
    again = build_kernel(BuildRequest.default())
    took = time.monotonic() - t
    assert again.path == kernel_artifact.path
    assert took <= 5.0, f"cache hit took {took:.1f}s"


@pytest.mark.fault('unknown config option', 'one line naming the option (and a rename, by prompt); every problem in the log', '2')
@pytest.mark.kernel
def test_unknown_config_option_is_a_clear_error(tmp_path, kernel_artifact):
    frag = tmp_path / "typo.config"
    frag.write_text("CONFIG_TEST_VMALLOCC=m\n")
    req = BuildRequest.default()
    req.fragments = req.fragments + [kconfig.load_fragment(str(frag))]
    with pytest.raises(ConfigError, match="CONFIG_TEST_VMALLOCC does not exist"):
        check_config(req)


@pytest.mark.kernel
def test_option_with_missing_dependency_names_the_dependency(tmp_path, kernel_artifact):
    frag = tmp_path / "nomenu.config"
    frag.write_text("# CONFIG_RUNTIME_TESTING_MENU is not set\nCONFIG_TEST_VMALLOC=m\n")
    req = BuildRequest.default()
    req.fragments = [f for f in req.fragments if f.name != "test_vmalloc"]
    req.fragments.append(kconfig.load_fragment(str(frag)))
    with pytest.raises(ConfigError) as ei:
        check_config(req)
    msg = str(ei.value)
    assert "CONFIG_TEST_VMALLOC=m" in msg and "CONFIG_RUNTIME_TESTING_MENU" in msg
    assert "\n" not in msg


def test_metadata_is_json_serializable_and_loadable(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    (d / "metadata.json").write_text(json.dumps({"key": "ab" * 32, "release": "6.12.0"}))
    art = Artifact.load(d)
    assert art.key == "ab" * 32 and art.release == "6.12.0"
    with pytest.raises(InputError, match="not a kernel artifact"):
        Artifact.load(tmp_path)


def _trivial_series(tmp_path: Path, pristine: Path) -> Path:
    """A real one-line patch to mm/vmalloc.c (a comment), as a git-style patch directory."""
    import difflib

    old = (pristine / "mm" / "vmalloc.c").read_text().splitlines(keepends=True)
    new = list(old)
    new.insert(20, "/* mmlab: a trivial change that must not defeat ccache */\n")
    diff = "".join(difflib.unified_diff(old, new, "a/mm/vmalloc.c", "b/mm/vmalloc.c"))
    d = tmp_path / "series"
    d.mkdir()
    (d / "0001-mm-vmalloc-add-a-comment.patch").write_text(
        "From: mmlab tests <tests@mmlab.invalid>\n"
        "Subject: [PATCH] mm/vmalloc: add a comment\n\n"
        "A trivial real patch for the ccache-sharing test.\n---\n"
        f"diff --git a/mm/vmalloc.c b/mm/vmalloc.c\n{diff}")
    return d


@pytest.mark.kernel
@pytest.mark.slow
def test_patched_build_shares_ccache_with_baseline(tmp_path, kernel_artifact):
    from orchestrator.kernel.series import load_series

    base = BuildRequest.default()
    pristine = base.tree.pristine()
    series = load_series(str(_trivial_series(tmp_path, pristine)))
    req = BuildRequest.default()
    req.series = [series]
    req.name = "trivial-patch"
    assert req.key() != kernel_artifact.key
    art = build_kernel(req)
    stats = art.metadata["ccache"]
    # Only mm/vmalloc.c changed, and only in a comment: everything else must hit.
    assert stats["hits"] >= 1000, stats
    assert stats["misses"] <= 10, stats
    assert art.metadata["series"][0]["sha256"] == series.content_hash
    assert "mmlab: a trivial change" not in (pristine / "mm" / "vmalloc.c").read_text(), \
        "the pristine tree must never be patched"


@pytest.mark.fault('non-applying series', 'one line naming patch, file and hunk; nothing cached', '2')
@pytest.mark.kernel
def test_non_applying_series_fails_cleanly_and_caches_nothing(tmp_path, kernel_artifact):
    from orchestrator.errors import SeriesApplyError
    from orchestrator.kernel.artifacts import list_artifacts
    from orchestrator.kernel.series import load_series

    d = tmp_path / "bad"
    d.mkdir()
    (d / "0001-bad.patch").write_text(
        "From: mmlab tests <tests@mmlab.invalid>\nSubject: [PATCH] mm: does not apply\n\n---\n"
        "diff --git a/mm/vmalloc.c b/mm/vmalloc.c\n--- a/mm/vmalloc.c\n+++ b/mm/vmalloc.c\n"
        "@@ -1,3 +1,3 @@\n-this line is not in vmalloc.c\n+replacement\n context\n context2\n")
    req = BuildRequest.default()
    req.series = [load_series(str(d))]
    before = {a.key for a in list_artifacts()}
    with pytest.raises(SeriesApplyError) as ei:
        build_kernel(req)
    msg = str(ei.value)
    assert "mm/vmalloc.c" in msg and "hunk #1" in msg and "does not apply" in msg
    assert {a.key for a in list_artifacts()} == before


@pytest.mark.kernel
@pytest.mark.slow
def test_compile_error_names_the_first_error_and_the_log(tmp_path, kernel_artifact):
    import difflib

    from orchestrator.errors import BuildError
    from orchestrator.kernel.artifacts import list_artifacts
    from orchestrator.kernel.series import load_series

    pristine = BuildRequest.default().tree.pristine()
    old = (pristine / "mm" / "vmalloc.c").read_text().splitlines(keepends=True)
    new = list(old)
    new.insert(40, "this_is_not_c mmlab_broken_build;\n")
    diff = "".join(difflib.unified_diff(old, new, "a/mm/vmalloc.c", "b/mm/vmalloc.c"))
    d = tmp_path / "broken"
    d.mkdir()
    (d / "0001-break.patch").write_text(
        "From: mmlab tests <tests@mmlab.invalid>\nSubject: [PATCH] mm: break the build\n\n---\n"
        f"diff --git a/mm/vmalloc.c b/mm/vmalloc.c\n{diff}")
    req = BuildRequest.default()
    req.series = [load_series(str(d))]
    before = {a.key for a in list_artifacts()}
    with pytest.raises(BuildError) as ei:
        build_kernel(req)
    err = ei.value
    assert "mm/vmalloc.c" in str(err) and "error" in str(err)
    assert err.log and Path(err.log).is_file()
    assert "mmlab_broken_build" in Path(err.log).read_text()
    assert {a.key for a in list_artifacts()} == before, "a failed build caches nothing"


def test_reproducer_comments_cannot_start_a_command(tmp_path):
    """A tree path or series name with a newline was written into reproduce.sh's comments
    as is: the next line ran as a command."""
    from orchestrator.kernel.build import _reproducer

    tree = _tiny_tree(tmp_path / "t\nrm -rf ~\n#")
    req = BuildRequest(tree=DirectorySource(kind="directory", location=str(tree), path=tree),
                       fragments=[])
    text = _reproducer(req, [])
    assert "\nrm -rf" not in text and "t?rm -rf ~?#" in text


def test_a_killed_builds_staging_directory_is_swept(tmp_path):
    import subprocess

    from orchestrator.atomic import sweep_stale_staging

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".staging-abc-{dead.pid}"
    live = tmp_path / f".staging-def-{__import__('os').getpid()}"
    for d in (stale, live):
        (d / "x").mkdir(parents=True)
    assert sweep_stale_staging(tmp_path) == [stale]
    assert not stale.exists() and live.exists()
