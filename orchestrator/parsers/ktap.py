"""KTAP (and TAP 13/14) results: what KUnit suites and kselftests print.

Format (Documentation/dev-tools/ktap.rst): a document starts with a version line
(``KTAP version 1``; ``TAP version 13``/``14`` are read the same way), then an optional plan
``1..N`` and one result line per test::

    ok|not ok <number> [-] <description> [# <DIRECTIVE> [<reason>]]

A test with subtests has a nested document before its result line, indented by four more
spaces (KUnit also writes ``# Subtest: <name>`` in it). Lines starting with ``#`` are
diagnostics. Directives: ``SKIP``, ``TODO``, ``XFAIL``, ``TIMEOUT``, ``ERROR``.

Inputs are real logs: kernel timestamps and caller ids are stripped (``kmsg.clean_lines``),
other kernel messages may interleave at any depth (ignored, not errors), and output can stop
mid-suite (a crash, a hang): then the missing results against the plan make the document
``complete = False`` with the reasons, and a test whose subtests started but whose own
result never came is reported as ``incomplete``.

Statuses: ``pass``, ``fail``, ``skip``, ``todo`` (a known failure, not counted as one),
``xfail`` (an expected failure), ``error`` (TIMEOUT/ERROR directives), ``incomplete``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from orchestrator.parsers.kmsg import clean_lines

_VERSION = re.compile(r"^(?:KTAP|TAP) version (\d+)\s*$")
_PLAN = re.compile(r"^1\.\.(\d+)\s*(?:#.*)?$")
_RESULT = re.compile(
    r"^(?P<ok>ok|not ok)\s+(?P<num>\d+)(?:\s+-)?(?:\s+(?P<desc>[^#]*?))?\s*"
    r"(?:#\s*(?P<directive>[A-Za-z]+)\b\s*(?P<reason>.*))?$")
_SUBTEST = re.compile(r"^#\s*Subtest:\s*(\S.*)$")
_TOTALS = re.compile(r"^#\s*(?:(?P<suite>\S+):\s*)?pass:(?P<pass>\d+) fail:(?P<fail>\d+)"
                     r" skip:(?P<skip>\d+) total:(?P<total>\d+)")
STATUSES = ("pass", "fail", "skip", "todo", "xfail", "error", "incomplete")


@dataclass
class KtapTest:
    """One result line (and, for a suite, its subtests)."""

    name: str
    number: int | None
    status: str
    directive: str | None = None
    reason: str = ""
    line: int = 0
    diagnostics: list[str] = field(default_factory=list)
    subtests: list[KtapTest] = field(default_factory=list)
    plan: int | None = None              # the nested document's plan, if any
    problems: list[str] = field(default_factory=list)

    def leaves(self) -> list[tuple[str, KtapTest]]:
        """(path, test) of every test without subtests, e.g. 'suite.case'."""
        if not self.subtests:
            return [(self.name, self)]
        return [(f"{self.name}.{p}", t) for s in self.subtests for p, t in s.leaves()]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "number": self.number, "status": self.status,
                "directive": self.directive, "reason": self.reason, "line": self.line,
                "diagnostics": self.diagnostics[-20:], "plan": self.plan,
                "problems": self.problems, "subtests": [s.to_json() for s in self.subtests]}


@dataclass
class KtapDocument:
    version: str
    plan: int | None
    tests: list[KtapTest]
    problems: list[str]
    first_line: int
    last_line: int

    @property
    def complete(self) -> bool:
        return not self.problems and all(not t.problems for _, t in self._all())

    def _all(self) -> list[tuple[str, KtapTest]]:
        out: list[tuple[str, KtapTest]] = []

        def walk(prefix: str, t: KtapTest) -> None:
            path = f"{prefix}.{t.name}" if prefix else t.name
            out.append((path, t))
            for s in t.subtests:
                walk(path, s)

        for t in self.tests:
            walk("", t)
        return out

    def counts(self) -> dict[str, int]:
        c = dict.fromkeys(STATUSES, 0)
        for t in self.tests:
            for _, leaf in t.leaves():
                c[leaf.status] += 1
        return c

    def failed_suites(self) -> list[str]:
        """Tests with subtests that say ``not ok`` although no subtest failed."""
        out = []
        for path, t in self._all():
            if t.subtests and t.status in ("fail", "error") and not any(
                    leaf.status in ("fail", "error", "incomplete") for _, leaf in t.leaves()):
                out.append(path)
        return out

    @property
    def passed(self) -> bool:
        c = self.counts()
        return self.complete and not (c["fail"] or c["error"] or c["incomplete"]
                                      or self.failed_suites())

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "plan": self.plan, "complete": self.complete,
                "passed": self.passed, "counts": self.counts(), "problems": self.problems,
                "first_line": self.first_line, "last_line": self.last_line,
                "results": {p: t.status for t0 in self.tests for p, t in t0.leaves()},
                "tests": [t.to_json() for t in self.tests]}


@dataclass
class _Doc:
    indent: int
    version: str
    line: int
    name: str | None = None
    plan: int | None = None
    tests: list[KtapTest] = field(default_factory=list)
    pending: _Doc | None = None          # a closed nested document awaiting its result line
    diagnostics: list[str] = field(default_factory=list)


def _status(ok: bool, directive: str | None) -> str:
    d = (directive or "").upper()
    if d == "SKIP":
        return "skip"
    if d == "TODO":
        return "todo"
    if d == "XFAIL":
        return "xfail"
    if d in ("TIMEOUT", "ERROR"):
        return "error"
    return "pass" if ok else "fail"


def _check_plan(plan: int | None, tests: list[KtapTest], what: str) -> list[str]:
    if plan is None:
        return []
    nums = [t.number for t in tests if t.number is not None]
    if len(tests) < plan:
        missing = sorted(set(range(1, plan + 1)) - set(nums))
        return [f"{what}: {len(tests)} of {plan} planned results"
                + (f" (missing {missing[:10]})" if missing else "")]
    if len(tests) > plan:
        return [f"{what}: {len(tests)} results, plan says {plan}"]
    return []


def parse_ktap(text: str) -> list[KtapDocument]:
    """Every top-level KTAP/TAP document in ``text``, in order."""
    docs: list[KtapDocument] = []
    stack: list[_Doc] = []
    last_line = 0

    def close_nested(doc: _Doc) -> KtapTest:
        """A nested document whose parent result line never came (output stopped)."""
        name = doc.name or "(unnamed)"
        t = KtapTest(name, None, "incomplete", line=doc.line, subtests=doc.tests,
                     plan=doc.plan, diagnostics=doc.diagnostics)
        t.problems.append(f"{name}: no result line (output stopped inside it)")
        t.problems += _check_plan(doc.plan, doc.tests, name)
        return t

    def finish_top() -> None:
        nonlocal stack
        if not stack:
            return
        while len(stack) > 1:
            inner = stack.pop()
            if inner.pending is not None:
                inner.tests.append(close_nested(inner.pending))
            stack[-1].tests.append(close_nested(inner))
        top = stack.pop()
        if top.pending is not None:
            top.tests.append(close_nested(top.pending))
        problems = _check_plan(top.plan, top.tests, "document")
        docs.append(KtapDocument(top.version, top.plan, top.tests, problems, top.line,
                                 last_line))

    for ln in clean_lines(text, unwrap=None):
        raw = ln.text.rstrip()
        body = raw.lstrip(" \t")
        indent = len(raw.replace("\t", "    ")) - len(body.replace("\t", "    "))
        mv = _VERSION.match(body)
        if mv and (not stack or indent <= stack[0].indent):
            finish_top()            # a new top-level document begins
            stack = [_Doc(indent, f"{body.split()[0]} {mv.group(1)}", ln.lineno)]
            last_line = ln.lineno
            continue
        if not stack:
            continue
        is_ktap = bool(mv or _PLAN.match(body) or _RESULT.match(body) or body.startswith("#"))
        if not is_ktap:
            continue                # an interleaved kernel message
        if indent < stack[0].indent:
            continue
        # leaving nested documents: each waits for its parent's result line
        while len(stack) > 1 and indent < stack[-1].indent:
            inner = stack.pop()
            if inner.pending is not None:
                inner.tests.append(close_nested(inner.pending))
            if stack[-1].pending is not None:
                stack[-1].tests.append(close_nested(stack[-1].pending))
            stack[-1].pending = inner
        if indent > stack[-1].indent:
            if stack[-1].pending is not None:
                stack[-1].tests.append(close_nested(stack[-1].pending))
            stack.append(_Doc(indent, stack[0].version, ln.lineno))
            if mv:
                last_line = ln.lineno
                continue
        doc = stack[-1]
        last_line = ln.lineno
        if mv:
            continue
        m = _PLAN.match(body)
        if m:
            doc.plan = int(m.group(1))
            continue
        m = _SUBTEST.match(body)
        if m:
            doc.name = m.group(1).strip()
            continue
        m = _RESULT.match(body)
        if m:
            directive = m["directive"] if m["directive"] else None
            if directive and directive.upper() not in ("SKIP", "TODO", "XFAIL", "TIMEOUT",
                                                       "ERROR"):
                directive = None    # '# text' after a name that is not a directive
            t = KtapTest(name=(m["desc"] or "").strip() or f"test {m['num']}",
                         number=int(m["num"]), status=_status(m["ok"] == "ok", directive),
                         directive=directive.upper() if directive else None,
                         reason=(m["reason"] or "").strip(), line=ln.lineno)
            if doc.pending is not None:
                nested = doc.pending
                doc.pending = None
                t.subtests, t.plan = nested.tests, nested.plan
                t.diagnostics = nested.diagnostics
                t.problems += _check_plan(nested.plan, nested.tests, t.name)
                if nested.name and nested.name != t.name:
                    t.problems.append(f"subtest header says {nested.name!r}, result {t.name!r}")
                bad = [s for s in nested.tests if s.status == "incomplete"]
                if t.status == "pass" and bad:
                    t.problems.append(f"{t.name}: passed with {len(bad)} incomplete subtest(s)")
            doc.tests.append(t)
            continue
        if body.startswith("#"):
            (doc.tests[-1].diagnostics if doc.tests and doc.pending is None
             else doc.diagnostics).append(body)
    finish_top()
    return docs


@dataclass
class KtapResult:
    documents: list[KtapDocument]

    @property
    def status(self) -> str:
        """One word: "no output" (no KTAP at all), "incomplete" (stopped early or results
        missing against a plan), "fail", "no tests", "skip" (all skipped), "pass"."""
        if not self.documents:
            return "no output"
        counts = dict.fromkeys(STATUSES, 0)
        for d in self.documents:
            for k, v in d.counts().items():
                counts[k] += v
        if not all(d.complete for d in self.documents):
            return "incomplete"
        if counts["fail"] or counts["error"] or any(d.failed_suites() for d in self.documents):
            return "fail"
        if not sum(counts.values()):
            return "no tests"
        if counts["skip"] == sum(counts.values()):
            return "skip"
        return "pass"

    def to_json(self) -> dict[str, Any]:
        counts = dict.fromkeys(STATUSES, 0)
        results: dict[str, str] = {}
        for d in self.documents:
            for k, v in d.counts().items():
                counts[k] += v
            results.update(d.to_json()["results"])
        for d in self.documents:
            for path in d.failed_suites():
                results[path] = "fail"
        return {"documents": [d.to_json() for d in self.documents], "counts": counts,
                "results": results, "status": self.status,
                "complete": bool(self.documents) and all(d.complete for d in self.documents),
                "passed": self.status in ("pass", "skip"),
                "failed": sorted(p for p, s in results.items()
                                 if s in ("fail", "error", "incomplete"))}


def parse(text: str) -> KtapResult:
    return KtapResult(parse_ktap(text))
