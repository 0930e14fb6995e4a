"""``mmlab simulate``: predictions, safety checks and the ptdump race from the command line."""

from __future__ import annotations

import json

import click

from orchestrator.errors import InputError


def _fmt(x: float) -> str:
    if x == int(x):
        return str(int(x))
    return f"{x:.4f}".rstrip("0")


def _table(rows: list[list[str]], header: list[str], right: bool = True) -> str:
    """Plain aligned columns: the first left-aligned, the others right (or left)."""
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = [
            c.rjust(w) if (i and right) else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _render(pred, baseline=None, cost=None) -> str:
    out = [
        f"variant:  {pred.variant.name}  ({len(pred.variant.features)} features)",
        f"workload: {pred.workload}",
    ]
    for t in pred.tests:
        out.append("")
        out.append(
            f"== {t.name}  (mode {t.mode}; per-loop = average over {t.window} "
            f"iteration(s) after {t.warmup} warm-up; loops {t.loops} x repeat {t.repeat})"
        )
        keys = sorted(t.per_loop)
        rows = [
            [k, _fmt(t.per_loop[k])] + [_fmt(t.per_op.get(op, {}).get(k, 0)) for op in t.per_op]
            for k in keys
        ]
        rows.append(
            ["B = dsb(ishst);isb from pte setters", _fmt(t.barrier_pairs_per_loop)]
            + [_fmt(t.per_op_events.get(op, {}).get("B", 0)) for op in t.per_op]
        )
        out.append(_table(rows, ["instruction", "per loop"] + [f"op {op}" for op in t.per_op]))
        out.append("")
        prow = [
            [p, ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(c.items()))]
            for p, c in sorted(t.per_path.items())
            if c
        ]
        out.append(_table(prow, ["kernel path", "per loop"], right=False))
        for n in t.notes:
            out.append(f"note: {n}")
        for v in t.violations[:5]:
            out.append(f"SAFETY: {v}")
        for w in sorted(set(t.warnings))[:3]:
            out.append(f"warning: {w}")
    for s in pred.skipped:
        out.append(f"skipped: {s}")
    if baseline is not None and cost is not None:
        ch = cost.relative_change(baseline, pred)
        out.append("")
        out.append(
            f"predicted time per loop vs {baseline.variant.name} on {cost.platform}: "
            f"{ch * 100:+.1f}%  (cost model: {cost.source})"
        )
    return "\n".join(out)


@click.command("simulate")
@click.option(
    "--variant",
    "-v",
    default="v6.12",
    show_default=True,
    help="variant name or spec (NAME+feature-feature)",
)
@click.option(
    "--workload",
    "-w",
    default=None,
    help="e.g. 'test_vmalloc run_test_mask=1 nr_pages=256', or a preset name",
)
@click.option("--json", "as_json", is_flag=True, help="print the prediction as JSON")
@click.option(
    "--mode",
    type=click.Choice(["auto", "step", "batched"]),
    default="auto",
    show_default=True,
    help="step-by-step or batched model",
)
@click.option(
    "--kernel",
    "-k",
    default=None,
    help="a built kernel (artifact key prefix or directory, or a build directory): its "
    "variant and kernel parameters are inferred from its code and config",
)
@click.option("--baseline", default=None, help="variant to compare with (adds a time estimate)")
@click.option("--platform", default="apple-m2", show_default=True, help="cost-model platform")
@click.option(
    "--list",
    "list_what",
    type=click.Choice(["variants", "features", "workloads"]),
    default=None,
    help="list what the simulator knows",
)
@click.option("--race", is_flag=True, help="enumerate the ptdump vs table-freeing race (seed 003)")
@click.option(
    "--cost-checks",
    is_flag=True,
    help="the cost model against published changes: fitted and held-out errors",
)
@click.option(
    "--check",
    "check_n",
    type=int,
    default=0,
    help="run N random operation sequences through the invariant checker",
)
def simulate_command(
    variant, workload, as_json, mode, kernel, baseline, platform, list_what, race, cost_checks,
    check_n,
):
    """Predict barrier/TLBI counts of a kernel variant on a workload (reference simulator).

    With --kernel, the variant is the built kernel's (inferred from its machine code,
    config and applied series, the release only as a tie-breaker) and the workload gets the
    kernel's parameters (LSE or LL/SC atomics, HUGETLB_PAGE, PTDUMP_DEBUGFS, rodata_full).
    Without --workload it prints the inference and its evidence."""
    from orchestrator.sim import features as F
    from orchestrator.sim.predict import predict

    if list_what:
        if list_what == "variants":
            data = {n: F.resolve_variant(n).to_json() for n in F.variant_names()}
        elif list_what == "features":
            data = {k: v.__dict__ for k, v in F.features().items()}
        else:
            from orchestrator.sim.workloads import presets

            data = presets()
        if as_json:
            click.echo(json.dumps(data, indent=2, default=list))
        else:
            for k, v in data.items():
                desc = v if isinstance(v, str) else (v.get("description") or v.get("title", ""))
                click.echo(f"{k:32s} {desc}")
        return
    if cost_checks:
        from orchestrator.sim import cost_checks as cc

        if as_json:
            rows, summary = cc.evaluate()
            click.echo(json.dumps({"checks": [r.to_json() for r in rows],
                                   "summary": summary}, indent=2))
        else:
            click.echo(cc.render())
        return
    if race:
        from orchestrator.sim.race import enumerate_ptdump_race

        res = [enumerate_ptdump_race(k, sb) for sb in (False, True) for k in (False, True)]
        res.append(enumerate_ptdump_race(True, True, flush_dsb=False))
        if as_json:
            click.echo(json.dumps([r.to_json() for r in res], indent=2))
            return
        whats = ["", "", "", "", " (without the dsb in __flush_tlb_kernel_pgtable)"]
        for r, what in zip(res, whats, strict=True):
            click.echo(
                f"{r.model:12s} static key {'on ' if r.static_key else 'off'}{what}: "
                f"{r.executions} executions, {r.uaf_executions} with use-after-free"
            )
            if r.witness and not r.static_key and r.model == "sc":
                for w in r.witness:
                    click.echo(f"    {w}")
        return
    if check_n:
        from orchestrator.sim.checker import check_variant

        n, bad = check_variant(variant, check_n)
        click.echo(f"{variant}: {n} random sequences, {len(bad)} with violations")
        for r in bad[:3]:
            click.echo(f"  {r.violations[0]}")
            click.echo(f"    ops: {r.ops_run}")
        return
    inference = None
    if kernel:
        from orchestrator.sim.infer import infer_kernel
        from orchestrator.sim.workloads import with_kernel_params

        inference = infer_kernel(kernel)
        variant = inference.variant
        if workload:
            workload = with_kernel_params(workload, inference.params)
        if not workload:
            if as_json:
                click.echo(json.dumps(inference.to_json(), indent=2))
            else:
                click.echo(str(inference))
            return
    if not workload:
        raise InputError(
            "no workload given",
            hint="pass --workload, e.g. 'test_vmalloc "
            "run_test_mask=1 nr_pages=256', or --list workloads",
        )
    pred = predict(variant, workload, mode=mode)
    base = predict(baseline, workload, mode=mode) if baseline else None
    cost = None
    if base is not None:
        from orchestrator.sim.cost import CostModel

        cost = CostModel.load(platform)
    if as_json:
        d = pred.to_json()
        if inference is not None:
            d["inference"] = inference.to_json()
        if base is not None:
            d["baseline"] = base.to_json()
            d["predicted_relative_time_change"] = round(cost.relative_change(base, pred), 6)
            d["cost_model"] = cost.to_json()
        click.echo(json.dumps(d, indent=2))
    else:
        if inference is not None:
            click.echo(str(inference))
            click.echo("")
        click.echo(_render(pred, base, cost))
