"""The cost model against published measurements, fitted and held-out figures apart.

``evaluate()`` predicts each published change of ``cost_checks.toml`` with the cost model
(the modelled before/after kernels on the check's workload and platform) and returns the
rows and a summary: the mean absolute error in percentage points over the figures the
constants were fitted to, and, separately, over the held-out figures. Only the held-out
error says how well the model predicts.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).with_name("cost_checks.toml")


@dataclass
class CostCheck:
    id: str
    role: str            # "fit" or "held-out"
    platform: str
    workload: str
    before: str
    after: str
    published: float     # relative change, -0.15 = 15% less time
    predicted: float
    title: str = ""
    where: str = ""      # the published platform text

    @property
    def error_pp(self) -> float:
        return (self.predicted - self.published) * 100

    def to_json(self) -> dict:
        return {**self.__dict__, "error_pp": round(self.error_pp, 2)}


def _model_key() -> str:
    """A hash of everything the figures depend on: the simulator's code and data and the
    published deltas."""
    import hashlib

    h = hashlib.sha256()
    here = Path(__file__).parent
    for p in sorted([*here.glob("*.py"), *here.glob("*.toml"),
                     here.parent / "judge" / "reference_deltas.toml"]):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:20]


@lru_cache(maxsize=1)
def evaluate() -> tuple[tuple[CostCheck, ...], dict]:
    """(rows, summary). The map_mem checks simulate up to 512G of linear map (about a
    minute); the result is kept under the cache, keyed by a hash of the model."""
    import json

    from orchestrator.atomic import atomic_write_json
    from orchestrator.paths import cache_dir

    path = cache_dir("sim") / f"cost-checks-{_model_key()}.json"
    try:
        data = json.loads(path.read_text())
        return tuple(CostCheck(**r) for r in data["rows"]), data["summary"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    rows, summary = _evaluate()
    atomic_write_json(path, {"rows": [r.__dict__ for r in rows], "summary": summary})
    return rows, summary


def _evaluate() -> tuple[tuple[CostCheck, ...], dict]:
    from orchestrator.judge.comparison import load_references
    from orchestrator.sim import CostModel, predict

    refs = {r.id: r for r in load_references()}
    checks = tomllib.loads(DATA.read_text())["check"]
    rows = []
    for cid, c in checks.items():
        ref = refs[cid]
        model = CostModel.load(c["platform"])
        before = predict(c["before"], c["workload"], check=False)
        after = predict(c["after"], c["workload"], check=False)
        rows.append(CostCheck(cid, c["role"], c["platform"], c["workload"], c["before"],
                              c["after"], float(ref.change),
                              model.relative_change(before, after), ref.title, ref.platform))
    summary = {}
    for role in ("fit", "held-out"):
        errs = [abs(r.error_pp) for r in rows if r.role == role]
        summary[role] = {"n": len(errs), "mean_abs_error_pp": round(sum(errs) / len(errs), 1)
                         if errs else None,
                         "max_abs_error_pp": round(max(errs), 1) if errs else None}
    return tuple(rows), summary


def held_out_error_pp() -> float | None:
    """Mean absolute error (percentage points) of the held-out published changes."""
    return evaluate()[1]["held-out"]["mean_abs_error_pp"]


def render() -> str:
    rows, summary = evaluate()
    out = [f"{'check':30} {'role':9} {'platform':13} {'published':>9} {'model':>8} {'error':>8}"]
    for r in rows:
        out.append(f"{r.id:30} {r.role:9} {r.platform:13} {r.published * 100:+8.1f}% "
                   f"{r.predicted * 100:+7.1f}% {r.error_pp:+7.1f}pp")
    for role in ("fit", "held-out"):
        s = summary[role]
        out.append(f"{role}: {s['n']} figures, mean |error| {s['mean_abs_error_pp']} pp, "
                   f"max {s['max_abs_error_pp']} pp")
    out.append("fit: the constants in platforms.toml were fitted to these; held-out: they "
               "were not (the cost model's error as a predictor)")
    return "\n".join(out)
