"""Cost model: per-instruction and per-event costs turn predicted counts into time.

``CostModel.load("apple-m2").relative_change(before, after)`` predicts the relative change
of time per loop between two predictions (e.g. baseline and patched kernel on the same
workload). Costs are per platform (platforms.toml), and ``calibrate()`` refits them from
measurements: it scales five cost groups (barriers, TLBI, atomics, per-page work, per-call
work) by non-negative least squares, keeping the ratios inside a group, because
measurements rarely separate individual instructions.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

import numpy as np

from orchestrator.errors import InputError
from orchestrator.sim.features import DATA_DIR

GROUPS = {
    "barrier": lambda k: k.startswith(("dsb.", "dmb.")) or k == "isb",
    "tlbi": lambda k: k.startswith("tlbi"),
    "atomic": lambda k: k == "atomic",
    "per_page": lambda k: k in ("page_alloc", "page_free", "pte_store", "pte_clear", "pxd_store"),
    "per_call": lambda k: (
        k
        in (
            "va_alloc",
            "va_free_lazy",
            "table_alloc",
            "fixmap_map",
            "fixmap_unmap",
            "vb_alloc",
            "vb_free",
        )
    ),
}


def platforms() -> dict[str, dict]:
    return tomllib.loads((DATA_DIR / "platforms.toml").read_text())


@dataclass
class CostModel:
    platform: str
    insn_ns: dict[str, float]
    event_ns: dict[str, float]
    source: str = ""
    scale: dict[str, float] = field(default_factory=lambda: {g: 1.0 for g in GROUPS})

    @classmethod
    def load(cls, platform: str) -> CostModel:
        p = platforms()
        if platform not in p:
            raise InputError(f"unknown platform {platform!r}", hint=f"known: {', '.join(p)}")
        d = p[platform]
        return cls(platform, dict(d["insn_ns"]), dict(d["event_ns"]), d.get("source", ""))

    def _ns(self, key: str, table: dict[str, float]) -> float:
        if key in table:
            return table[key]
        if key.startswith("tlbi."):
            return table.get("tlbi", 0.0)
        return 0.0

    def _group(self, key: str) -> str | None:
        for g, f in GROUPS.items():
            if f(key):
                return g
        return None

    def breakdown(self, counts: dict[str, float], events: dict[str, float]) -> dict[str, float]:
        """ns per loop by cost group."""
        out = {g: 0.0 for g in GROUPS}
        for k, n in counts.items():
            g = self._group(k)
            if g:
                out[g] += n * self._ns(k, self.insn_ns) * self.scale[g]
        for k, n in events.items():
            g = self._group(k)
            if g:
                out[g] += n * self._ns(k, self.event_ns) * self.scale[g]
        return out

    def time_per_loop_ns(self, pred) -> float:
        return sum(self.breakdown(pred.per_loop, pred.per_loop_events).values())

    def relative_change(self, before, after) -> float:
        """Predicted (after - before) / before of time per loop."""
        t0 = self.time_per_loop_ns(before)
        t1 = self.time_per_loop_ns(after)
        return (t1 - t0) / t0 if t0 else 0.0

    def calibrate(self, observations: list[tuple[object, float]]) -> CostModel:
        """Refit group scales from (prediction, measured ns per loop) pairs (NNLS)."""
        from scipy.optimize import nnls

        if not observations:
            raise InputError(
                "no measurements to calibrate with",
                hint="pass (prediction, ns_per_loop) pairs from real runs",
            )
        groups = list(GROUPS)
        base = CostModel(self.platform, self.insn_ns, self.event_ns, self.source)
        a = np.array(
            [
                [base.breakdown(p.per_loop, p.per_loop_events)[g] for g in groups]
                for p, _ in observations
            ]
        )
        b = np.array([float(t) for _, t in observations])
        x, _ = nnls(a, b)
        scale = {g: (float(x[i]) if a[:, i].any() else 1.0) for i, g in enumerate(groups)}
        return CostModel(
            self.platform,
            self.insn_ns,
            self.event_ns,
            f"calibrated on {len(observations)} measurements",
            scale,
        )

    def to_json(self) -> dict:
        return {
            "platform": self.platform,
            "source": self.source,
            "insn_ns": self.insn_ns,
            "event_ns": self.event_ns,
            "scale": self.scale,
        }
