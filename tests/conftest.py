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
