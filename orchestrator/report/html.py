"""The HTML report of a comparison, and ``mmlab report`` to re-render one from saved JSON.

One self-contained HTML file (no scripts, no external resources: inline CSS and SVG), so it
can be archived as a CI artifact and opened anywhere. The verdict comes first, then the
kernels and their provenance, per-test tables with plain-words readings and distribution
plots, the correctness checks with dmesg excerpts, the model comparison, the logs and the
plan.

Kernel logs are untrusted (anything can print to dmesg), so the template is rendered with
jinja2 autoescaping on, and the page carries a Content-Security-Policy that forbids scripts
as a second line of defence. Log links are relative paths, rebased from the results
directory to the report's directory; anything that looks like a URL is shown, not linked.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import click
import jinja2

from orchestrator import __version__
from orchestrator.atomic import atomic_write_text
from orchestrator.errors import InputError
from orchestrator.judge import stats as st
from orchestrator.judge.comparison import Comparison, Metric, MetricResult

TEMPLATES = Path(__file__).parent / "templates"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,               # dmesg excerpts are untrusted: escape everything
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_num
    env.filters["pct"] = fmt_pct
    env.filters["pct1"] = lambda x: "–" if x is None else st._pct(x, digits=1)
    env.filters["pctu"] = lambda x: "–" if x is None else st._pct(x, sign=False)
    env.filters["pval"] = st._p
    env.filters["ci"] = fmt_ci
    return env


def fmt_num(x: float | None, digits: int = 4) -> str:
    """A number with about ``digits`` significant digits, thousands separated."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    ax = abs(x)
    if ax >= 10 ** (digits - 1) or float(x).is_integer():
        return f"{x:,.0f}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(ax)))) if ax else 0
    return f"{x:,.{min(decimals, 6)}f}"


def fmt_pct(x: float | None) -> str:
    return "–" if x is None else st._pct(x)


def fmt_ci(ci: list[float] | None) -> str:
    return "–" if not ci else f"[{st._pct(ci[0])}, {st._pct(ci[1])}]"


# ---- plots ----------------------------------------------------------------------------

@dataclass
class PlotRow:
    label: str
    y: float
    points: list[tuple[float, float]]
    box: tuple[float, float] | None       # x of q1, q3
    median: float | None
    whisker: tuple[float, float] | None   # x of min, max
    baseline: bool


@dataclass
class Plot:
    width: int
    height: int
    left: int
    right: int
    rows: list[PlotRow]
    ticks: list[tuple[float, str]]
    baseline_median: float | None
    unit: str
    title: str


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step) * step
    out = []
    v = start
    while v <= hi + step * 1e-9:
        out.append(round(v, 10))
        v += step
    return out


def make_plot(comp: Comparison, metric: Metric) -> Plot | None:
    """Strip + box plot geometry: one row per kernel, shared x axis. Pure numbers."""
    kernels = [k for k in comp.kernels if metric.samples.get(k.id)]
    if not kernels:
        return None
    values = [v for k in kernels for v in metric.samples[k.id]]
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = abs(lo) * 0.05 or 1.0
    else:
        pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    left, right, width, row_h, top = 150, 20, 720, 34, 10
    span = width - left - right

    def x(v: float) -> float:
        return round(left + (v - lo) / (hi - lo) * span, 2)

    rows = []
    for i, k in enumerate(kernels):
        vals = metric.samples[k.id]
        s = st.summarize(vals)
        y = top + row_h * i + row_h / 2
        pts = []
        for j, v in enumerate(vals):
            jitter = ((j * 7919) % 11 - 5) * 1.3    # deterministic spread, no overlap
            pts.append((x(v), round(y + jitter, 2)))
        box = (x(s.q1), x(s.q3)) if s.n >= 3 else None
        whisk = (x(s.min), x(s.max)) if s.n >= 2 else None
        rows.append(PlotRow(k.name, y, pts, box, x(s.median), whisk, k.id == comp.baseline))
    ticks = [(x(t), fmt_num(t, 3)) for t in _nice_ticks(lo, hi) if lo <= t <= hi]
    base_vals = metric.samples.get(comp.baseline)
    base_med = x(st.summarize(base_vals).median) if base_vals else None
    height = top + row_h * len(kernels) + 34
    return Plot(width, height, left, right, rows, ticks, base_med, metric.unit, metric.label)


# ---- view model -----------------------------------------------------------------------

def _href(path: str | None, results_dir: Path | None, out_dir: Path | None) -> str | None:
    """A relative link to a log, or None when the path is not a plain relative path."""
    if not path or _SCHEME.match(path) or path.startswith("//") or "\x00" in path:
        return None
    p = Path(path)
    if not p.is_absolute() and results_dir is not None and out_dir is not None:
        p = Path(os.path.relpath((results_dir / p).resolve(), out_dir.resolve()))
    elif p.is_absolute():
        if out_dir is None:
            return None
        p = Path(os.path.relpath(p, out_dir.resolve()))
    return quote(p.as_posix())


def _excerpt(text: str, max_lines: int = 40) -> str:
    lines = text.splitlines()
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"[... {len(lines) - max_lines} more lines in the log]"]
    return "\n".join(lines)


def view_model(comp: Comparison, results_dir: Path | None = None,
               out_dir: Path | None = None) -> dict:
    if comp.analysis is None:
        comp.analyze()
    a = comp.analysis
    assert a is not None
    by_metric: dict[str, list[MetricResult]] = {}
    for r in a.metrics:
        by_metric.setdefault(r.metric, []).append(r)

    # instructions per loop (the plugin's count) for the timed test's workload, by kernel
    insns: dict[tuple[str, str], float] = {}
    for b in comp.barriers:
        if b.quantity == "insns" and b.measured is not None:
            insns[(b.kernel, b.workload.split(" (run_test_mask")[0])] = b.measured

    def insns_for(m, kid: str) -> float | None:
        nr = m.params.get("nr_pages", 1)
        label = m.test + (" use_huge=1" if m.params.get("use_huge") else "")
        return insns.get((kid, f"{label} nr_pages={nr}"))

    tests = []
    for m in comp.metrics:
        results = {r.kernel: r for r in by_metric.get(m.id, [])}
        rows = []
        for k in comp.kernels:
            if not m.samples.get(k.id):
                continue
            rows.append({"kernel": k, "summary": st.summarize(m.samples[k.id]),
                         "result": results.get(k.id), "is_base": k.id == comp.baseline,
                         "insns": insns_for(m, k.id)})
        tests.append({"metric": m, "rows": rows, "plot": make_plot(comp, m),
                      "readings": [results[k.id] for k in comp.kernels if k.id in results]})

    def link(path: str | None) -> str | None:
        return _href(path, results_dir, out_dir)

    checks = []
    for c in a.checks:
        checks.append({"c": c, "kernel": comp.kernel(c.kernel), "href": link(c.log),
                       "excerpt": _excerpt(c.excerpt) if c.excerpt else ""})
    order = {"fail": 0, "known": 1, "not run": 2, "info": 3, "xfail": 4, "pass": 5}
    problems = sorted([c for c in checks if c["c"].status in ("fail", "known")],
                      key=lambda c: order[c["c"].status])
    logs = [{"l": lg, "kernel": comp.kernel(lg.kernel), "href": link(lg.path)}
            for lg in comp.logs]
    metric_labels = {m.id: m.label for m in comp.metrics}
    return {
        "comp": comp,
        "a": a,
        "v": a.verdict,
        "headline": re.sub(r"^(PASS|WARN|FAIL): ", "", a.verdict.headline),
        "names": {k.id: k.name for k in comp.kernels},
        "tests": tests,
        "checks": checks,
        "problems": problems,
        "logs": logs,
        "metric_labels": metric_labels,
        "version": __version__,
    }


def render_html(comp: Comparison, results_dir: Path | None = None,
                out_dir: Path | None = None) -> str:
    """The report as one HTML string (analyzing the comparison first if needed)."""
    return _env().get_template("report.html.j2").render(**view_model(comp, results_dir, out_dir))


def write_report(comp: Comparison, out: str | Path, results_dir: Path | None = None) -> Path:
    """Write the HTML report atomically; log links are made relative to its directory."""
    out = Path(out)
    html = render_html(comp, results_dir=results_dir, out_dir=out.parent.resolve())
    atomic_write_text(out, html)
    return out


# ---- CLI ------------------------------------------------------------------------------

@click.command("report")
@click.argument("results", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file to write (default: report.html next to RESULTS).")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write JUnit XML for CI gating here.")
@click.option("--reanalyze", is_flag=True,
              help="Recompute the statistics and verdicts from the saved samples.")
@click.option("--alpha", type=float, help="Significance level (implies --reanalyze).")
@click.option("--floor", type=float,
              help="Smallest relative change that counts, e.g. 0.01 (implies --reanalyze).")
@click.option("--test", "test_name", type=click.Choice(st.TESTS),
              help="Test the verdict uses (implies --reanalyze).")
@click.option("--correction", type=click.Choice(st.CORRECTIONS),
              help="Multiple-comparison correction (implies --reanalyze).")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Check RESULTS against the JSON Schema before reading it.")
@click.option("--exit-code", is_flag=True,
              help="Exit with status 1 when the overall verdict is FAIL (for CI scripts).")
def report_command(results: Path, output: Path | None, junit: Path | None, reanalyze: bool,
                   alpha: float | None, floor: float | None, test_name: str | None,
                   correction: str | None, validate: bool, exit_code: bool) -> None:
    """Re-render the HTML report (and JUnit XML) of a saved comparison RESULTS.json."""
    import json

    from orchestrator.judge.comparison import validate_json

    if validate:  # before loading: a malformed file is one schema error, not a traceback
        if not results.is_file():
            raise InputError(f"no such results file: {results}",
                             hint="pass a results.json written by `mmlab compare`")
        try:
            data = json.loads(results.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {results}: {exc}",
                             hint="pass a results.json written by `mmlab compare`") from None
        validate_json(data)
    comp = Comparison.load(results)
    overrides = {k: v for k, v in (("alpha", alpha), ("floor", floor), ("test", test_name),
                                   ("correction", correction)) if v is not None}
    if reanalyze or overrides or comp.analysis is None:
        base = comp.analysis.settings.to_dict() if comp.analysis else {}
        try:
            settings = st.Settings.from_dict(base | overrides)
        except ValueError as exc:
            raise InputError(str(exc), hint="see `mmlab report --help`") from exc
        comp.analyze(settings)
    out = output or results.with_name("report.html")
    write_report(comp, out, results_dir=results.parent.resolve())
    click.echo(str(out))
    if junit:
        from orchestrator.report.junit import write_junit

        write_junit(comp, junit)
        click.echo(str(junit))
    assert comp.analysis is not None
    click.echo(comp.analysis.verdict.headline)
    if exit_code and comp.analysis.verdict.status == "fail":
        sys.exit(1)
