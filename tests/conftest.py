"""Shared pytest fixtures.

Tests marked ``kernel`` or ``boot`` use a real arm64 kernel: the ``kernel_artifact``
fixture builds the default configuration through the real build pipeline (cached in
~/.cache/mmlab, so only the first run on a machine pays the ~8.5 min cold build).
"""

from __future__ import annotations

import shutil

import pytest


def _require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"host tools missing: {', '.join(missing)}; run `mmlab doctor --install`")


@pytest.fixture(scope="session")
def kernel_artifact():
    """The default kernel (linux-source-6.12 + qemu-virt, test_vmalloc, ptdump), built for real."""
    _require_tools("aarch64-linux-gnu-gcc", "make", "ccache")
    from orchestrator.build import BuildRequest, build_kernel

    return build_kernel(BuildRequest.default())


# The newest upstream release CI builds and boots (fetched from Debian's archive, see
# orchestrator/debian_archive.py): the one judge of mmlab that nobody here wrote.
UPSTREAM_TREE = "debian:7.3"


@pytest.fixture(scope="session")
def upstream_artifact():
    """Linux 7.3 (Debian's linux-source-7.3) with the default fragment set, built for real."""
    _require_tools("aarch64-linux-gnu-gcc", "make", "ccache")
    from orchestrator.build import BuildRequest, build_kernel
    from orchestrator.sources import resolve_tree

    return build_kernel(BuildRequest.for_tree(resolve_tree(UPSTREAM_TREE), "default",
                                              name="v7.3"))
