"""Build benchmarks: cold build, warm-ccache rebuild, cache hit; and reproducibility.

Runs in a private cache (``MMLAB_CACHE`` in a temp dir) so "cold" is really cold: a fresh
tree extraction and an empty ccache. Takes ~10-15 min on 2 cores. Results are printed and
saved by pytest-benchmark (``nox -s bench``).
"""

from __future__ import annotations

import json
import time

import pytest

from orchestrator.kernel.build import BuildRequest, build_kernel


@pytest.mark.kernel
def test_build_cold_warm_and_cache_hit(tmp_path, monkeypatch, benchmark):
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "cache"))
    t = time.monotonic()
    cold = build_kernel(BuildRequest.default())
    cold_s = time.monotonic() - t
    t = time.monotonic()
    warm = build_kernel(BuildRequest.default(), rebuild=True)
    warm_s = time.monotonic() - t
    hit = benchmark.pedantic(lambda: build_kernel(BuildRequest.default()), rounds=3,
                             iterations=1)
    figures = {"cold_s": round(cold_s, 1), "warm_s": round(warm_s, 1),
               "cold_make_s": cold.metadata["durations_s"]["make"],
               "warm_make_s": warm.metadata["durations_s"]["make"],
               "warm_ccache": {k: warm.metadata["ccache"].get(k) for k in ("hits", "misses")},
               "cache_hit_s": benchmark.stats.stats.max}
    benchmark.extra_info.update(figures)
    print(json.dumps(figures))
    assert hit.key == cold.key
    assert benchmark.stats.stats.max <= 5.0
    # Same inputs, two builds (one cold, one from ccache): bit-identical images.
    assert warm.metadata["files"]["Image"] == cold.metadata["files"]["Image"]
