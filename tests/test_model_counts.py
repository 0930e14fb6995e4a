"""The model against real kernels: every barrier kind and atomic the plugin counts, per loop
of every counted test_vmalloc test, measured on a built kernel and predicted for the variant
inferred from that kernel's own code (no declared variant, no constant from a measurement).

The default 6.12 kernel (LL/SC atomics, no batching) and Debian's 7.3 (LSE atomics, generic
lazy-MMU nesting, batching) are the two shapes CI checks; `nox -s long` adds the rest of
the upstream comparison (6.18) and the demo series through `mmlab compare`."""

from __future__ import annotations

import pytest

from orchestrator.barriers.counts import kernel_files, measure
from orchestrator.pipeline.compare import COUNTED, barrier_rows
from orchestrator.sim import predict
from orchestrator.sim.infer import infer_kernel
from orchestrator.sim.workloads import with_kernel_params

pytestmark = [pytest.mark.kernel, pytest.mark.boot, pytest.mark.slow]

PAGES = {"fix_size_alloc_test": (1, 256), "fix_size_alloc_test use_huge=1": (16, 256),
         "full_fit_alloc_test": (1,), "vm_map_ram_test": (1, 256)}


def _check(artifact, variant: str, atomics: str) -> None:
    inf = infer_kernel(artifact)
    assert inf.variant == variant and not inf.conflicts, str(inf)
    assert inf.params["atomics"] == atomics
    files = kernel_files(str(artifact.path))
    bad, compared = [], 0
    for t in COUNTED:
        m = measure(files, nr_pages=PAGES[t.label], loops=(1000, 2000), repeat=1,
                    run_test_mask=t.mask, use_huge=t.use_huge)
        for nr, point in m["runs"][0].items():
            pred = predict(inf.variant, with_kernel_params(t.workload(int(nr)), inf.params),
                           check=False)
            for row in barrier_rows(artifact.name, f"{t.label} {nr}", [point], pred.per_loop):
                if row.predicted is None:
                    continue
                compared += 1
                tol = max(row.abs_tolerance, row.rel_tolerance * abs(row.predicted))
                if abs(row.measured - row.predicted) > tol:
                    bad.append(f"{row.workload} {row.quantity}: measured {row.measured:.3f}, "
                               f"predicted {row.predicted:.3f}")
    assert compared == 7 * 8  # 7 (test, nr_pages) points x 8 quantities
    assert not bad, "\n".join(bad)


def test_the_default_6_12_kernel_counts_match_the_model(kernel_artifact):
    # LL/SC atomics: every page freed costs a fully ordered refcount drop and its dmb ish
    _check(kernel_artifact, "v6.12", "llsc")


@pytest.mark.upstream
@pytest.mark.archive
def test_debian_7_3_counts_match_the_model(upstream_artifact):
    _check(upstream_artifact, "v7.3", "lse")


def test_simulate_takes_a_built_kernel(kernel_artifact):
    import json

    from click.testing import CliRunner

    from orchestrator.sim.cli import simulate_command

    r = CliRunner().invoke(simulate_command, ["--kernel", str(kernel_artifact.path),
                                              "-w", "fix_size_256", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["inference"]["variant"] == "v6.12" and not data["inference"]["conflicts"]
    assert data["workload"]["atomics"] == "llsc"
    per_loop = data["tests"][0]["per_loop"]
    assert round(per_loop["dsb.ishst"]) == 256 and per_loop["dmb.ish"] >= 256
