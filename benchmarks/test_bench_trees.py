"""Per tree: fetch (download + verify), extract, and cold build time (``nox -s bench``).

Each tree runs in a private cache (``MMLAB_CACHE`` in a temp dir), so the fetch is a real
download from Debian's archive through the private apt state and the build is cold (empty
ccache). The trees are the ones ``comparisons/upstream.toml`` compares. Takes ~8 min per
tree on 2 idle cores; the figures go to pytest-benchmark's extra_info and stdout.
Select one with ``-k``, e.g. ``nox -s bench -- -k 'trees and 7.3'``.
"""

from __future__ import annotations

import json
import time

import pytest

from orchestrator.kernel.build import BuildRequest, build_kernel
from orchestrator.kernel.sources import resolve_tree


@pytest.mark.kernel
@pytest.mark.archive
@pytest.mark.parametrize("tree", ["debian:6.12", "debian:6.18", "debian:7.3"])
def test_tree_fetch_and_cold_build(tree, tmp_path, monkeypatch, benchmark):
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "cache"))
    figures: dict = {"tree": tree}

    def fetch():
        t = time.monotonic()
        src = resolve_tree(tree)
        figures["fetch_s"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        src.pristine()
        figures["extract_s"] = round(time.monotonic() - t, 1)
        return src

    src = benchmark.pedantic(fetch, rounds=1, iterations=1)
    figures["version"] = src.kernel_version()
    t = time.monotonic()
    art = build_kernel(BuildRequest.for_tree(src, "default"))
    figures["cold_build_s"] = round(time.monotonic() - t, 1)
    figures["make_s"] = art.metadata["durations_s"]["make"]
    benchmark.extra_info.update(figures)
    print(json.dumps(figures))
    assert art.release.startswith(tree.split(":")[1])
