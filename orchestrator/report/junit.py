"""JUnit XML of a comparison, so CI systems can gate on it.

One ``<testsuite>`` per kernel and area, one ``<testcase>`` per correctness check, per
metric verdict and per barrier-count check:

* correctness ``fail`` (only the candidate shows it), a ``regressed`` metric the model
  does not predict and a barrier count that differs from the model are ``<failure>``;
* ``insufficient data``, a check that did not run, a count not measured, problems the
  baseline shows too (``known``) and a regression the model predicts (the series' expected
  cost, a WARN in the verdict) are ``<skipped>`` with the reason, so they are visible but
  do not fail the build;
* everything else (pass, xfail, improved, no change, match) passes, with the plain-words
  reading in ``<system-out>``.

Kernel log excerpts go into the XML as text; characters XML 1.0 cannot carry (most control
characters) are dropped first.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from orchestrator.atomic import atomic_write_bytes
from orchestrator.judge.comparison import Comparison

_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _t(text: str | None) -> str:
    return _BAD_XML.sub("", text or "")


def _cid(kernel_id: str) -> str:
    """A kernel id as one classname component (CI viewers split classnames at dots)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", kernel_id)


def _case(suite: ET.Element, classname: str, name: str, outcome: str, message: str,
          detail: str = "", out: str = "") -> None:
    tc = ET.SubElement(suite, "testcase", classname=_t(classname), name=_t(name), time="0")
    if outcome == "failure":
        el = ET.SubElement(tc, "failure", message=_t(message), type="failure")
        el.text = _t(detail or message)
    elif outcome == "skipped":
        ET.SubElement(tc, "skipped", message=_t(message))
    if out:
        ET.SubElement(tc, "system-out").text = _t(out)


def to_junit(comp: Comparison) -> ET.Element:
    """The JUnit document as an ElementTree element (analyzing first if needed)."""
    a = comp.analysis or comp.analyze()
    names = {k.id: k.name for k in comp.kernels}
    root = ET.Element("testsuites", name=_t(comp.title or "mmlab comparison"))

    def suite(name: str) -> ET.Element:
        return ET.SubElement(root, "testsuite", name=_t(name))

    for k in comp.kernels:
        checks = [c for c in a.checks if c.kernel == k.id]
        if not checks:
            continue
        s = suite(f"correctness.{k.id}")
        for c in checks:
            cls = f"mmlab.correctness.{_cid(k.id)}.{c.category}"
            detail = c.message + (f"\n\n{c.excerpt}" if c.excerpt else "") \
                + (f"\n\nlog: {c.log}" if c.log else "")
            if c.status == "fail":
                _case(s, cls, c.name, "failure", f"{names[k.id]}: {c.message}", detail)
            elif c.status in ("known", "not run"):
                _case(s, cls, c.name, "skipped", f"{c.status}: {c.message}")
            else:
                _case(s, cls, c.name, "pass", c.message, out=f"{c.status}: {c.message}")

    for k in comp.candidates:
        results = [r for r in a.metrics if r.kernel == k.id]
        if not results:
            continue
        s = suite(f"performance.{k.id}")
        for r in results:
            d = r.difference
            cls = f"mmlab.performance.{_cid(k.id)}"
            if d.verdict == "regressed" and r.expected:
                _case(s, cls, r.metric, "skipped", "regressed as the model predicts: "
                      + r.reading)
            elif d.verdict == "regressed":
                _case(s, cls, r.metric, "failure", r.reading, r.reading)
            elif d.verdict == "insufficient data":
                _case(s, cls, r.metric, "skipped", r.reading)
            else:
                _case(s, cls, r.metric, "pass", r.reading, out=f"{d.verdict}: {r.reading}")

    if a.barriers:
        s = suite("model.barriers")
        for b in a.barriers:
            row = b.row
            cls = f"mmlab.model.{_cid(row.kernel)}"
            name = f"{row.workload} {row.quantity} per {row.per}"
            text = f"{names[row.kernel]}: predicted {row.predicted}, measured {row.measured}"
            if b.verdict == "mismatch":
                _case(s, cls, name, "failure", text, text + (f"\n{row.note}" if row.note else ""))
            elif b.verdict in ("not measured", "no prediction"):
                _case(s, cls, name, "skipped", f"{b.verdict}: {text}")
            else:
                _case(s, cls, name, "pass", text, out=f"{b.verdict}: {text}")

    total = fails = skips = 0
    for s in root.findall("testsuite"):
        cases = s.findall("testcase")
        f = sum(1 for c in cases if c.find("failure") is not None)
        sk = sum(1 for c in cases if c.find("skipped") is not None)
        s.set("tests", str(len(cases)))
        s.set("failures", str(f))
        s.set("errors", "0")
        s.set("skipped", str(sk))
        total, fails, skips = total + len(cases), fails + f, skips + sk
    root.set("tests", str(total))
    root.set("failures", str(fails))
    root.set("errors", "0")
    root.set("skipped", str(skips))
    return root


def to_junit_xml(comp: Comparison) -> bytes:
    root = to_junit(comp)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(comp: Comparison, path: str | Path) -> Path:
    path = Path(path)
    atomic_write_bytes(path, to_junit_xml(comp))
    return path
