"""`mmlab simulate` end to end (the installed entry point, in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys


def mmlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, timeout=120
    )


def test_table_and_json():
    r = mmlab(
        "simulate", "--variant", "v6.16", "--workload", "test_vmalloc run_test_mask=1 nr_pages=256"
    )
    assert r.returncode == 0, r.stderr
    assert "fix_size_alloc_test" in r.stdout and "vmap_pages_pte_range" in r.stdout
    assert "B = dsb(ishst);isb" in r.stdout
    j = mmlab(
        "simulate",
        "--variant",
        "v6.12",
        "--workload",
        "fix_size_256",
        "--json",
        "--baseline",
        "v6.12",
    )
    d = json.loads(j.stdout)
    assert d["barrier_pairs_per_loop"] == 256
    assert d["predicted_relative_time_change"] == 0


def test_errors_are_one_line_with_hint():
    r = mmlab("simulate", "--variant", "v9.99", "--workload", "fix_size_1")
    assert r.returncode == 2
    assert r.stderr.startswith("mmlab: error: unknown kernel variant 'v9.99'")
    assert "mmlab: hint:" in r.stderr and "Traceback" not in r.stderr
    r = mmlab("simulate", "--workload", "test_vmalloc nr_pagez=3")
    assert r.returncode == 2 and "unknown test_vmalloc parameters: nr_pagez" in r.stderr


def test_race_and_lists():
    r = mmlab("simulate", "--race")
    assert r.returncode == 0 and "with use-after-free" in r.stdout
    r = mmlab("simulate", "--list", "variants")
    assert "lazy-mmu-6.12/nesting" in r.stdout
