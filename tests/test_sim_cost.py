"""Cost model: counts -> predicted relative time change, and calibration."""

from __future__ import annotations

import pytest

from orchestrator.sim import CostModel, predict


@pytest.mark.parametrize(
    "platform,published",
    [
        ("apple-m2", {1: 2.1, 16: -25.1, 256: -31.5}),
        ("ampere-altra", {1: 1.8, 16: -14.2, 256: -20.6}),
    ],
)
def test_series_000_published_shape(platform, published):
    cm = CostModel.load(platform)
    for n, pub in published.items():
        w = f"test_vmalloc run_test_mask=1 nr_pages={n}"
        change = 100 * cm.relative_change(predict("v6.12", w), predict("v6.16", w))
        assert change == pytest.approx(pub, abs=3.0), n
        assert (change > 0) == (pub > 0)


def test_calibration_recovers_a_scaled_platform():
    cm = CostModel.load("qemu-tcg")
    preds = [
        predict(v, f"test_vmalloc run_test_mask=1 nr_pages={n}")
        for v in ("v6.12", "v6.16")
        for n in (1, 16, 256)
    ]
    truth = CostModel(
        cm.platform,
        cm.insn_ns,
        cm.event_ns,
        scale={"barrier": 3.0, "tlbi": 1.0, "atomic": 0.5, "per_page": 2.0, "per_call": 1.5},
    )
    obs = [(p, truth.time_per_loop_ns(p)) for p in preds]
    fit = cm.calibrate(obs)
    for p, t in obs:
        assert fit.time_per_loop_ns(p) == pytest.approx(t, rel=1e-6)
    assert fit.scale["barrier"] == pytest.approx(3.0, rel=1e-3)
