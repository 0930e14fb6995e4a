"""Reference simulator of arm64 kernel page-table updates (issue 4).

Public API::

    predict(variant, workload, mode="auto") -> Prediction     # counts from modelled paths
    infer_variant(evidence) -> Inference                      # which variant a kernel is
    CostModel.load(platform).relative_change(before, after)   # counts -> time change
    check_sequence(variant, ops) / enumerate_ptdump_race(...)  # safety

See docs/simulator.md.
"""

from orchestrator.sim.features import Variant, resolve_variant, variant_names
from orchestrator.sim.predict import Prediction, TestPrediction, predict

__all__ = [
    "Prediction",
    "TestPrediction",
    "Variant",
    "predict",
    "resolve_variant",
    "variant_names",
    "infer_variant",
    "Inference",
    "CostModel",
]


def __getattr__(name: str):
    if name in ("infer_variant", "Inference"):
        from orchestrator.sim import infer

        return getattr(infer, name)
    if name == "CostModel":
        from orchestrator.sim.cost import CostModel

        return CostModel
    raise AttributeError(name)
