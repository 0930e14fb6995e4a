"""Parse what lib/test_vmalloc.ko prints into per-test, per-worker results.

The module prints, for each worker thread, one line per selected test and then the time the
worker took::

    Summary: fix_size_alloc_test passed: 1 failed: 0 repeat: 1 loops: 1000000 avg: 4527 usec
    All test took worker0=21306990 cycles

Variants handled (all kernels from the per-CPU era to today):

* ``Summary: ... failed: %d repeat:`` (6.12 and older) and ``... failed: %d xfailed: %d
  repeat:`` (newer kernels count align_shift_alloc_test's deliberate failures as xfailed);
* ``All test took CPU%d=%lu cycles`` (per-CPU kernels), ``worker%d=%lu cycles``, and the
  proposed ``worker%d=%lld nsecs``.

The Summary lines carry no worker number: they belong to the ``All test took`` line that
follows them. One log may hold several module loads (busybox loaders retry init_module(),
test_vmalloc.sh modes load it more than once); a worker number that does not increase
starts a new run. A run whose output stops early (Summary lines with no ``All test took``,
missing workers or tests) is returned with ``complete = False`` and the reasons.
"""

from __future__ import annotations

import re
import statistics
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from orchestrator.parsers.kmsg import clean_lines

CASES_PATH = Path(__file__).with_name("test_vmalloc_cases.toml")

_SUMMARY = re.compile(
    r"Summary: (?P<name>\S+) passed: (?P<passed>\d+) failed: (?P<failed>\d+)"
    r"(?: xfailed: (?P<xfailed>\d+))? repeat: (?P<repeat>\d+) loops: (?P<loops>\d+)"
    r" avg: (?P<avg>\d+) usec"
)
_TOOK = re.compile(
    r"All test took (?P<label>CPU|worker)(?P<idx>\d+)=(?P<took>-?\d+) (?P<unit>cycles|nsecs)"
)


@dataclass(frozen=True)
class TestCase:
    name: str
    bit: int
    xfail: bool = False
    newer: bool = False
    may_fail: bool = False


@lru_cache(maxsize=1)
def known_cases() -> dict[str, TestCase]:
    """test_vmalloc's test cases by name (from test_vmalloc_cases.toml)."""
    data = tomllib.loads(CASES_PATH.read_text())
    return {
        c["name"]: TestCase(c["name"], int(c["bit"]), bool(c.get("xfail", False)), "since" in c,
                            bool(c.get("may_fail", False)))
        for c in data["case"]
    }


def cases_for_mask(mask: int) -> list[str]:
    """Names of the known test cases that ``run_test_mask`` selects."""
    return [c.name for c in known_cases().values() if mask & c.bit]


def _status(name: str, passed: int, failed: int, xfailed: int | None) -> str:
    """pass / fail / xfail (expected failure) / xpass (expected failure did not happen)."""
    case = known_cases().get(name)
    if case is not None and case.may_fail:
        # counted as xfailed when it fails, passed when it does not: both are fine
        return "fail" if failed else ("xfail" if xfailed and not passed else "pass")
    if case is not None and case.xfail:
        if xfailed is None:  # old format: the deliberate failures are counted as failed
            return "xpass" if passed else "xfail"
        # new format: a passing xfail case is counted as failed by 6.18
        # (`if (!ret && !xfail) passed++; else if (ret && xfail) xfailed++; else failed++`)
        # and as passed by 7.3 (`if (!ret) passed++; else if (xfail) xfailed++; ...`):
        # either count means the expected failure did not happen.
        return "xpass" if passed or failed else "xfail"
    if failed:
        return "fail"
    return "xfail" if xfailed else "pass"


# How bad each status is, for summing one test case over runs and workers: the worst wins.
# An expected failure that did not happen (xpass) outranks one that did (xfail): the test
# case no longer does what the plan expects, so it must not be hidden by the other runs.
STATUS_RANK = {"pass": 1, "xfail": 2, "xpass": 3, "fail": 4}


def worse_status(a: str | None, b: str | None) -> str | None:
    """The worse of two test case statuses (None: nothing seen yet; unknown: as bad as fail)."""
    if a is None or b is None:
        return a if b is None else b
    return a if STATUS_RANK.get(a, 4) >= STATUS_RANK.get(b, 4) else b


@dataclass
class TestSummary:
    """One Summary line: one test case on one worker."""

    name: str
    passed: int
    failed: int
    xfailed: int | None  # None: the kernel's format has no xfailed field
    repeat: int
    loops: int
    avg_usec: int
    line: int

    @property
    def status(self) -> str:
        return _status(self.name, self.passed, self.failed, self.xfailed)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "failed": self.failed,
            "xfailed": self.xfailed,
            "repeat": self.repeat,
            "loops": self.loops,
            "avg_usec": self.avg_usec,
            "status": self.status,
            "line": self.line,
        }


@dataclass
class Worker:
    """One test thread: its Summary lines and what its "All test took" line said."""

    index: int | None  # None when the output stopped before the "All test took" line
    label: str | None  # "CPU" (per-CPU kernels) or "worker"
    took: int | None
    unit: str | None  # "cycles" or "nsecs"
    tests: list[TestSummary] = field(default_factory=list)
    line: int | None = None  # line of the "All test took" line

    @property
    def complete(self) -> bool:
        return self.took is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "label": self.label,
            "line": self.line,
            "took": self.took,
            "unit": self.unit,
            "complete": self.complete,
            "passed": sum(t.passed for t in self.tests),
            "failed": sum(t.failed for t in self.tests),
            "xfailed": sum(t.xfailed or 0 for t in self.tests),
            "tests": [t.to_json() for t in self.tests],
        }


@dataclass
class TestTotal:
    """One test case over all workers of a run."""

    name: str
    workers: int
    passed: int
    failed: int
    xfailed: int | None
    repeat: int
    loops: int
    avg_usec: list[int]

    @property
    def status(self) -> str:
        return _status(self.name, self.passed, self.failed, self.xfailed)

    @property
    def expected_failure(self) -> bool:
        case = known_cases().get(self.name)
        return bool(case and case.xfail)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "workers": self.workers,
            "passed": self.passed,
            "failed": self.failed,
            "xfailed": self.xfailed,
            "repeat": self.repeat,
            "loops": self.loops,
            "avg_usec": self.avg_usec,
            "avg_usec_mean": statistics.fmean(self.avg_usec),
            "avg_usec_min": min(self.avg_usec),
            "avg_usec_max": max(self.avg_usec),
            "status": self.status,
            "expected_failure": self.expected_failure,
        }


@dataclass
class VmallocRun:
    """One load of test_vmalloc.ko: its workers, and whether the output is whole."""

    workers: list[Worker]
    complete: bool
    problems: list[str]
    first_line: int
    last_line: int

    @property
    def format(self) -> str:
        """Output format: "xfailed" when the kernel prints that field, else "classic"."""
        tests = [t for w in self.workers for t in w.tests]
        return "xfailed" if any(t.xfailed is not None for t in tests) else "classic"

    def totals(self) -> dict[str, TestTotal]:
        """Per test case, summed over workers (test order as printed by the first worker)."""
        out: dict[str, TestTotal] = {}
        for w in self.workers:
            for t in w.tests:
                tot = out.get(t.name)
                if tot is None:
                    out[t.name] = TestTotal(
                        t.name, 1, t.passed, t.failed, t.xfailed, t.repeat, t.loops, [t.avg_usec]
                    )
                else:
                    tot.workers += 1
                    tot.passed += t.passed
                    tot.failed += t.failed
                    if t.xfailed is not None:
                        tot.xfailed = (tot.xfailed or 0) + t.xfailed
                    tot.avg_usec.append(t.avg_usec)
        return out

    @property
    def unexpected(self) -> list[str]:
        """Tests whose outcome is a regression: fail, or an expected failure that passed."""
        return [n for n, t in self.totals().items() if t.status in ("fail", "xpass")]

    @property
    def passed(self) -> bool:
        """Whole output and no unexpected outcome (align_shift's failure is expected)."""
        return self.complete and not self.unexpected

    def to_json(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "passed": self.passed,
            "problems": self.problems,
            "format": self.format,
            "first_line": self.first_line,
            "last_line": self.last_line,
            "unexpected": self.unexpected,
            "tests": {n: t.to_json() for n, t in self.totals().items()},
            "workers": [w.to_json() for w in self.workers],
        }


@dataclass
class VmallocResult:
    """All test_vmalloc runs found in one log."""

    runs: list[VmallocRun]

    @property
    def complete(self) -> bool:
        return bool(self.runs) and all(r.complete for r in self.runs)

    @property
    def passed(self) -> bool:
        return bool(self.runs) and all(r.passed for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": [r.to_json() for r in self.runs],
            "complete": self.complete,
            "passed": self.passed,
            "unexpected_failures": self.unexpected_failures,
        }

    @property
    def unexpected_failures(self) -> list[str]:
        """Tests that failed (or whose expected failure did not happen) in any run."""
        return sorted({name for r in self.runs for name in r.unexpected})


def parse_test_vmalloc(
    text: str, *, nr_threads: int | None = None, run_test_mask: int | None = None
) -> VmallocResult:
    """Parse every test_vmalloc run in ``text`` (dmesg, console log, or a mailed log).

    ``nr_threads`` and ``run_test_mask`` are what the module was loaded with, when known:
    they let the parser tell that workers or tests are missing (a run cut short). Without
    them, a run is judged on its own: every worker closed by its "All test took" line, worker
    numbers 0..n-1, the same tests on every worker.
    """
    runs: list[VmallocRun] = []
    workers: list[Worker] = []
    pending: list[TestSummary] = []

    def close_run() -> None:
        nonlocal workers, pending
        if pending:
            workers.append(Worker(None, None, None, None, pending))
        if workers:
            runs.append(_judge(workers, nr_threads, run_test_mask))
        workers, pending = [], []

    for ln in clean_lines(text, unwrap=None):
        m = _SUMMARY.search(ln.text)
        if m:
            if any(t.name == m["name"] for t in pending):
                # The same test again before an "All test took": the previous load stopped
                # mid-worker and a new one started.
                close_run()
            pending.append(
                TestSummary(
                    name=m["name"],
                    passed=int(m["passed"]),
                    failed=int(m["failed"]),
                    xfailed=int(m["xfailed"]) if m["xfailed"] is not None else None,
                    repeat=int(m["repeat"]),
                    loops=int(m["loops"]),
                    avg_usec=int(m["avg"]),
                    line=ln.lineno,
                )
            )
            continue
        m = _TOOK.search(ln.text)
        if m:
            idx = int(m["idx"])
            closed = [w.index for w in workers if w.index is not None]
            if closed and idx <= max(closed):
                tests, pending = pending, []
                close_run()
                pending = tests
            workers.append(Worker(idx, m["label"], int(m["took"]), m["unit"], pending, ln.lineno))
            pending = []
    close_run()
    return VmallocResult(runs)


def _judge(workers: list[Worker], nr_threads: int | None, run_test_mask: int | None) -> VmallocRun:
    problems: list[str] = []
    where = [t.line for w in workers for t in w.tests] + [w.line for w in workers if w.line]
    open_workers = [w for w in workers if not w.complete]
    if open_workers:
        problems.append(
            f"output stops after {len(open_workers[0].tests)} Summary line(s) with no "
            "'All test took' line (run cut short)"
        )
    indices = [w.index for w in workers if w.index is not None]
    expected_n = max(1, nr_threads) if nr_threads is not None else None
    if indices:
        missing = sorted(set(range(max(indices) + 1)) - set(indices))
        if missing:
            problems.append(f"workers {missing} never reported")
    if expected_n is not None and len(indices) < expected_n:
        problems.append(f"{len(indices)} of {expected_n} workers reported")
    names = [[t.name for t in w.tests] for w in workers if w.complete]
    if names and any(set(n) != set(names[0]) for n in names):
        problems.append("workers report different sets of tests")
    seen = {t.name for w in workers for t in w.tests}
    if run_test_mask is not None:
        expected = set(cases_for_mask(run_test_mask))
        cases = known_cases()
        newer_seen = any(cases[n].newer for n in seen if n in cases)
        absent = sorted(n for n in expected - seen if newer_seen or not cases[n].newer)
        if absent:
            problems.append(f"tests {absent} selected by run_test_mask never reported")
        extra = sorted(seen - expected)
        if extra:
            problems.append(f"tests {extra} reported but not selected by run_test_mask")
    return VmallocRun(
        workers=workers,
        complete=not problems,
        problems=problems,
        first_line=min(where),
        last_line=max(where),
    )


_GUEST_PARAMS = re.compile(r"^mmlab-vmalloc: mode=(?P<mode>\S+) cpus=\d+ params=(?P<params>.*)$")
_GUEST_OFFERED = re.compile(r"^mmlab-vmalloc: offered_mask=(?P<mask>\d+)\s*$")


def guest_runs(output: str) -> list[dict]:
    """What guest_tests/vmalloc.sh says it loaded the module with, per load: the mode, the
    key=value parameters, and the mask of every case the module offers (0: unknown)."""
    runs: list[dict] = []
    for line in output.splitlines():
        m = _GUEST_PARAMS.match(line.strip())
        if m:
            params = dict(kv.split("=", 1) for kv in m["params"].split() if "=" in kv)
            runs.append({"mode": m["mode"], "params": params, "offered_mask": 0})
            continue
        m = _GUEST_OFFERED.match(line.strip())
        if m and runs:
            runs[-1]["offered_mask"] = int(m["mask"])
    return runs


def coverage(result: VmallocResult, guest: list[dict]) -> dict[str, Any]:
    """Which test cases ran against which the kernel offers, with a warning when fewer ran.

    A run that selected every case (a mode, or a mask covering the offered ones) but saw
    fewer Summary lines, or a load that relied on the module's default mask (7 on newer
    kernels: 3 of 13 cases), is reported, so "every test case must pass" cannot pass on
    three cases.
    """
    offered = max((g["offered_mask"] for g in guest), default=0)
    ran = sorted({n for r in result.runs for n in r.totals()})
    out: dict[str, Any] = {"offered_mask": offered, "offered": bin(offered).count("1"),
                           "ran": ran, "warnings": []}
    for g in guest:
        mask_text = g["params"].get("run_test_mask")
        if mask_text is None and g["mode"] != "direct" and offered:
            out["warnings"].append(
                f"test_vmalloc ran with the module's default run_test_mask: {len(ran)} of "
                f"{out['offered']} test cases; pass run_test_mask={offered} to run them all")
            continue
        try:
            mask = int(mask_text) if mask_text is not None else None
        except ValueError:
            continue
        if mask is not None and offered and (mask & offered) == offered and len(ran) < out["offered"]:
            out["warnings"].append(
                f"only {len(ran)} of the {out['offered']} test cases the kernel offers "
                f"reported (mask {mask})")
    return out


def parse_with_guest(dmesg: str, output: str) -> dict[str, Any]:
    """The runner's entry point: the dmesg parsed with the mask the guest script used, and
    the coverage of the cases the kernel offers."""
    guest = guest_runs(output)
    masks = {g["params"].get("run_test_mask") for g in guest}
    mask = None
    if len(masks) == 1:
        text = masks.pop()
        mask = int(text) if text and text.isdigit() else None
    res = parse_test_vmalloc(dmesg, run_test_mask=mask)
    out = res.to_json()
    out["coverage"] = coverage(res, guest)
    return out


# Short name used by the runner.
parse = parse_test_vmalloc
