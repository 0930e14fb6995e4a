"""predict(variant, workload) -> Prediction: counts per instruction class, per kernel path,
per operation and per loop, from running the modelled kernel paths.

The API the comparison stage calls::

    from orchestrator.sim import predict
    p = predict("v6.16", "test_vmalloc run_test_mask=1 nr_pages=256")
    p.per_loop["dsb.ishst"], p.barrier_pairs_per_loop, p.to_json()
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from orchestrator.sim.features import Variant, resolve_variant
from orchestrator.sim.kernel import Kernel
from orchestrator.sim.machine import Machine
from orchestrator.sim.workloads import TestSpec, kernel_options, parse_workload, tests_for

WARM_MAX = 60000  # iterations allowed to reach the first lazy purge
WINDOW_MAX = 60000  # iterations allowed for one purge cycle
WINDOW_NO_PURGE = 64  # window when the loop never purges
STEP_PAGE_LIMIT = 4096  # auto mode: step model up to this many pages per loop


def _delta(after: dict, before: dict) -> dict:
    out = {}
    for key, c in after.items():
        b = before.get(key, {})
        d = {k: n - b.get(k, 0) for k, n in c.items() if n - b.get(k, 0)}
        if d:
            out[key] = d
    return out


def _sum(d: dict, pick) -> dict[str, dict[str, int]]:
    out: dict = defaultdict(lambda: defaultdict(int))
    for key, c in d.items():
        g = pick(key)
        for k, n in c.items():
            out[g][k] += n
    return out


def _flat(d: dict) -> dict[str, int]:
    out: dict = defaultdict(int)
    for c in d.values():
        for k, n in c.items():
            out[k] += n
    return dict(out)


def _scale(d: dict[str, int], div: int) -> dict[str, float]:
    return {k: n / div for k, n in sorted(d.items()) if n}


def group_by_class(counts: dict[str, float]) -> dict:
    """{"DSB": {"ishst": x, ...}, "ISB": n, "DMB": {...}, "TLBI": {...}}."""
    g: dict = {"DSB": {}, "ISB": 0, "DMB": {}, "TLBI": {}}
    for k, n in counts.items():
        cls, _, sub = k.partition(".")
        if cls == "dsb":
            g["DSB"][sub] = n
        elif cls == "dmb":
            g["DMB"][sub] = n
        elif cls == "tlbi":
            g["TLBI"][sub] = n
        elif cls == "isb":
            g["ISB"] = n
        else:
            g.setdefault("other", {})[k] = n
    return g


def _r(x):
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, dict):
        return {k: _r(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_r(v) for v in x]
    return x


@dataclass
class TestPrediction:
    name: str
    mode: str
    loops: int
    repeat: int
    window: int  # iterations the per-loop figures average over
    warmup: int
    per_loop: dict[str, float]
    per_loop_events: dict[str, float]
    per_op: dict[str, dict[str, float]]
    per_op_events: dict[str, dict[str, float]]
    per_path: dict[str, dict[str, float]]
    setup: dict[str, int]
    transient: dict[str, float]
    notes: list[str]
    violations: list[str]
    warnings: list[str]

    @property
    def barrier_pairs_per_loop(self) -> float:
        """B per loop: dsb(ishst);isb pairs emitted by the pte setters / lazy-MMU leave."""
        return self.per_loop_events.get("B", 0.0)

    def total(self) -> dict[str, float]:
        out: dict = defaultdict(float)
        for k, v in self.setup.items():
            out[k] += v * self.repeat
        for k, v in self.transient.items():
            out[k] += v
        for k, v in self.per_loop.items():
            out[k] += v * self.loops * self.repeat
        return {k: v for k, v in out.items() if v}

    def to_json(self) -> dict:
        return _r(
            {
                "name": self.name,
                "mode": self.mode,
                "loops": self.loops,
                "repeat": self.repeat,
                "window_iterations": self.window,
                "warmup_iterations": self.warmup,
                "per_loop": self.per_loop,
                "per_loop_by_class": group_by_class(self.per_loop),
                "per_loop_events": self.per_loop_events,
                "per_op": self.per_op,
                "per_op_events": self.per_op_events,
                "per_path": self.per_path,
                "setup": self.setup,
                "transient": self.transient,
                "total": self.total(),
                "notes": self.notes,
                "violations": self.violations,
                "warnings": sorted(set(self.warnings)),
            }
        )


@dataclass
class Prediction:
    variant: Variant
    workload: dict
    tests: list[TestPrediction]
    skipped: list[str] = field(default_factory=list)

    def _sum(self, attr: str) -> dict[str, float]:
        out: dict = defaultdict(float)
        for t in self.tests:
            for k, v in getattr(t, attr).items():
                out[k] += v
        return dict(sorted(out.items()))

    @property
    def per_loop(self) -> dict[str, float]:
        """Counts for one iteration of every selected test (one test: its loop)."""
        return self._sum("per_loop")

    @property
    def per_loop_events(self) -> dict[str, float]:
        return self._sum("per_loop_events")

    @property
    def barrier_pairs_per_loop(self) -> float:
        return self.per_loop_events.get("B", 0.0)

    @property
    def per_op(self) -> dict[str, dict[str, float]]:
        out: dict = {}
        for t in self.tests:
            for op, c in t.per_op.items():
                out[op if len(self.tests) == 1 else f"{t.name}/{op}"] = c
        return out

    @property
    def per_path(self) -> dict[str, dict[str, float]]:
        out: dict = defaultdict(lambda: defaultdict(float))
        for t in self.tests:
            for p, c in t.per_path.items():
                for k, v in c.items():
                    out[p][k] += v
        return {p: dict(c) for p, c in out.items()}

    def total(self) -> dict[str, float]:
        out: dict = defaultdict(float)
        for t in self.tests:
            for k, v in t.total().items():
                out[k] += v
        return dict(out)

    @property
    def violations(self) -> list[str]:
        return [v for t in self.tests for v in t.violations]

    def test(self, name: str) -> TestPrediction:
        for t in self.tests:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_json(self) -> dict:
        return _r(
            {
                "schema": "mmlab.sim.prediction/1",
                "variant": self.variant.to_json(),
                "workload": self.workload,
                "per_loop": self.per_loop,
                "per_loop_by_class": group_by_class(self.per_loop),
                "per_loop_events": self.per_loop_events,
                "barrier_pairs_per_loop": self.barrier_pairs_per_loop,
                "per_op": self.per_op,
                "per_path": self.per_path,
                "total": self.total(),
                "tests": [t.to_json() for t in self.tests],
                "skipped": self.skipped,
                "violations": self.violations,
            }
        )


def _choose_mode(w: dict, t: TestSpec, mode: str) -> str:
    if mode in ("step", "batched"):
        return mode
    return "step" if t.pages_per_loop <= STEP_PAGE_LIMIT else "batched"


def run_test(
    variant: Variant, w: dict, t: TestSpec, mode: str = "auto", check: bool = True
) -> TestPrediction:
    mode = _choose_mode(w, t, mode)
    m = Machine(variant, ncpus=max(1, w.get("ncpus", 1)), check=check,
                atomics=w.get("atomics", "lse"))
    k = Kernel(m, batched=(mode == "batched"), **kernel_options(w))
    st: dict = {"rng": random.Random(0x5EED)}
    m.set_op("setup")
    if t.setup:
        t.setup(k, st)
    setup_snap = m.snapshot()

    def iterate() -> None:
        for name, fn in t.body:
            m.set_op(name)
            fn(k, st)

    warm = 0
    if not t.one_shot:
        if t.random_window:
            for _ in range(200):
                iterate()
                warm += 1
        else:
            # until the first lazy purge *of the loop* (a purge during setup, e.g. after
            # full_fit's junk frees, leaves a partial cycle), unless nothing accumulates
            p_setup = k.purges
            while k.purges < p_setup + 1 and warm < WARM_MAX:
                before = m.event_totals().get("table_alloc", 0)
                iterate()
                warm += 1
                if not k.accumulating() and m.event_totals().get("table_alloc", 0) == before:
                    break
    start = m.snapshot()
    window = 0
    if t.one_shot:
        iterate()
        window = 1
    elif t.random_window:
        for _ in range(t.random_window):
            iterate()
        window = t.random_window
    else:
        for attempt in range(8):
            p0 = k.purges
            limit = WINDOW_MAX if p0 else WINDOW_NO_PURGE
            window = 0
            while window < limit:
                iterate()
                window += 1
                if p0 and k.purges > p0:
                    break
            end = m.snapshot()
            grew = any(c.get("table_alloc") for c in _delta(end[1], start[1]).values())
            if not grew or attempt == 7:
                break
            warm += window  # still allocating page tables: not steady yet
            start = end
    end = m.snapshot()
    m.set_op("")

    dc, de = _delta(end[0], start[0]), _delta(end[1], start[1])
    per_loop = _scale(_flat(dc), window)
    per_loop_ev = _scale(_flat(de), window)
    ops = [name for name, _ in t.body]
    by_op, by_op_ev = _sum(dc, lambda key: key[0]), _sum(de, lambda key: key[0])
    per_op = {op: _scale(by_op.get(op, {}), window) for op in ops}
    per_op_ev = {op: _scale(by_op_ev.get(op, {}), window) for op in ops}
    per_path = {p: _scale(c, window) for p, c in _sum(dc, lambda key: key[1]).items()}
    setup = _flat(setup_snap[0])
    warm_counts = _flat(_delta(start[0], setup_snap[0]))
    transient = {k2: v - per_loop.get(k2, 0) * warm for k2, v in warm_counts.items()}
    transient = {k2: v for k2, v in transient.items() if abs(v) > 1e-9}
    return TestPrediction(
        name=t.name,
        mode=mode,
        loops=t.loops,
        repeat=t.repeat,
        window=window,
        warmup=warm,
        per_loop=per_loop,
        per_loop_events=per_loop_ev,
        per_op=per_op,
        per_op_events=per_op_ev,
        per_path=per_path,
        setup=setup,
        transient=transient,
        notes=list(t.notes),
        violations=[str(v) for v in m.violations],
        warnings=list(m.warnings),
    )


def predict(
    variant: str | Variant | dict, workload: str | dict, mode: str = "auto", check: bool = True
) -> Prediction:
    """Run ``workload`` on the modelled ``variant``; ``mode``: auto, step or batched."""
    v = resolve_variant(variant)
    w = parse_workload(workload)
    mode = w.pop("mode", mode)
    tests, skipped = tests_for(w)
    return Prediction(v, w, [run_test(v, w, t, mode, check) for t in tests], skipped)
