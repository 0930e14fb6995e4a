"""The built-in demo series (series/lazy-mmu-6.12) against the real, pristine Linux 6.12.

Why: the default `mmlab compare` builds 6.12, 6.12 + batching (0001..0002) and 6.12 +
nesting (0001..0003). If a patch stops applying to Debian's linux-source-6.12 (a new
package revision, an edited patch), the default compare breaks on a fresh machine after
minutes of work. These tests catch that in seconds: they extract only the files the series
touches from /usr/src/linux-source-6.12.tar.xz and apply the patches with `git apply`,
patch by patch, exactly as they will be applied for each simulator variant.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from orchestrator import paths
from orchestrator.kernel.series import check_series, load_series

SERIES_DIR = paths.SERIES / "lazy-mmu-6.12"
TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
TOP = "linux-source-6.12"

# Simulator variant name -> number of leading patches of the series it stands for.
VARIANTS = {"lazy-mmu-6.12/batching": 2, "lazy-mmu-6.12/nesting": 3}

# Upstream work each patch follows; its commit message must credit it.
CREDITS = {
    1: ["44562c71e2cf"],
    2: ["5fdd05efa1cd", "b81c688426a9", "1ef3095b1405"],
    3: ["fully support nested lazy_mmu sections", "20250908073931.4159362-4-kevin.brodsky"],
}


def _patches() -> list[Path]:
    return sorted(SERIES_DIR.glob("*.patch"))


def _touched(patch: Path) -> list[str]:
    return re.findall(r"^diff --git a/(\S+) b/", patch.read_text(), flags=re.M)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """Only the files the series touches, straight from Debian's linux-source-6.12 tarball."""
    if not TARBALL.is_file():
        pytest.fail(f"{TARBALL} is missing; run `mmlab doctor --install` "
                    "(or: apt-get install linux-source-6.12)")
    if shutil.which("git") is None:
        pytest.fail("git is missing; apt-get install git")
    files = sorted({f for p in _patches() for f in _touched(p)})
    dest = tmp_path_factory.mktemp("pristine-6.12")
    # --occurrence=1: stop reading the 140 MB archive once every listed member was found.
    subprocess.run(["tar", "-xJf", str(TARBALL), "-C", str(dest), "--occurrence=1",
                    *[f"{TOP}/{f}" for f in files]], check=True)
    root = dest / TOP
    missing = [f for f in files if not (root / f).is_file()]
    assert not missing, f"not in {TARBALL.name}: {missing}"
    return root


def _copy(tree: Path, dest: Path) -> Path:
    shutil.copytree(tree, dest)
    return dest


def _git_apply(tree: Path, patch: Path, *extra: str) -> subprocess.CompletedProcess:
    # Outside a repository `git apply` works on plain files, like patch(1) without fuzz.
    return subprocess.run(["git", "apply", "--whitespace=error-all", *extra, str(patch)],
                          cwd=tree, capture_output=True, text=True)


def test_series_is_three_format_patch_mails():
    patches = _patches()
    assert [p.name[:5] for p in patches] == ["0001-", "0002-", "0003-"]
    for n, patch in enumerate(patches, 1):
        text = patch.read_text()
        head, _, body = text.partition("\n\n")
        assert re.match(r"From [0-9a-f]{40} Mon Sep 17 00:00:00 2001\n", head), patch.name
        assert re.search(r"^From: .+ <.+@.+>$", head, flags=re.M), patch.name
        assert re.search(r"^Date: \w{3}, \d+ \w{3} \d{4} ", head, flags=re.M), patch.name
        assert re.search(rf"^Subject: \[PATCH {n}/3\] \S", head, flags=re.M), patch.name
        message = body.split("\n---\n", 1)[0]
        assert len(message.splitlines()) > 10, f"{patch.name}: commit message too thin"
        assert "Signed-off-by: " in message
        for credit in CREDITS[n]:
            assert credit in message, f"{patch.name} does not credit {credit}"


def test_series_applies_cleanly_to_pristine_6_12(pristine, tmp_path):
    """Each variant's patches pass `git apply --check` in order, and then apply."""
    patches = _patches()
    for variant, count in VARIANTS.items():
        tree = _copy(pristine, tmp_path / variant.replace("/", "_"))
        for patch in patches[:count]:
            check = _git_apply(tree, patch, "--check")
            assert check.returncode == 0, f"{variant}: {patch.name}: {check.stderr}"
            applied = _git_apply(tree, patch)
            assert applied.returncode == 0, f"{variant}: {patch.name}: {applied.stderr}"


def test_applied_series_adds_the_arm64_hooks_6_12_lacks(pristine, tmp_path):
    """6.12 has no arm64 lazy-MMU hooks (the generic ones are no-ops); the series adds them."""
    pgtable = "arch/arm64/include/asm/pgtable.h"
    assert "__HAVE_ARCH_ENTER_LAZY_MMU_MODE" not in (pristine / pgtable).read_text()
    assert "arch_enter_lazy_mmu_mode" not in (pristine / "mm/vmalloc.c").read_text()

    tree = _copy(pristine, tmp_path / "nesting")
    for patch in _patches():
        assert _git_apply(tree, patch).returncode == 0
    text = (tree / pgtable).read_text()
    assert text.count("#define __HAVE_ARCH_ENTER_LAZY_MMU_MODE") == 1
    assert "dsb(ishst);\n\tisb();" in text  # now only inside emit_pte_barriers()
    assert text.count("dsb(ishst);") == 1
    vmalloc = (tree / "mm/vmalloc.c").read_text()
    assert vmalloc.count("arch_enter_lazy_mmu_mode();") == 3
    assert vmalloc.count("arch_leave_lazy_mmu_mode();") == 3
    thread_info = (tree / "arch/arm64/include/asm/thread_info.h").read_text()
    assert re.search(r"#define TIF_LAZY_MMU\s+31\b", thread_info)
    assert re.search(r"#define TIF_LAZY_MMU_PENDING\s+32\b", thread_info)


def test_build_pipeline_loader_reads_and_checks_the_series(pristine):
    """mmlab's own series loader sees three patches and finds they apply to 6.12."""
    series = load_series(SERIES_DIR)
    assert len(series.patches) == 3
    assert series.patches[0].subject.startswith("mm/vmalloc: enter lazy MMU mode")
    result = check_series(series, pristine)
    assert result.ok, result.first_failure


def test_readme_names_the_simulator_variants():
    readme = (SERIES_DIR / "README.md").read_text()
    variants = tomllib.loads((paths.REPO_ROOT / "orchestrator/sim/variants.toml").read_text())
    for name in VARIANTS:
        assert f"`{name}`" in readme
        assert name in variants, f"simulator has no variant {name}"
