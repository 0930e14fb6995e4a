"""Which upstream change the model says a measured change comes from.

A comparison across releases (6.12 -> 6.18 -> 7.3) or with a series changes many things at
once. For each candidate kernel, the simulator variants of the baseline and the candidate
differ by a set of *features* (orchestrator/sim/features.toml: each an upstream commit with
its release, e.g. barrier batching 5fdd05efa1cd in 6.16, contpte in vmap 06fc959fcff7, the
ptdump static key fa93b45fd397 in 6.18, the generic nesting redesign in 7.0). ``attribute()``
predicts every workload for the baseline, for the candidate, and for the candidate *without*
each gained feature in turn (leave one out): what the candidate would lose without that
change is what the change accounts for. Features that only work together (barrier batching
needs vmalloc's lazy section) each account for the whole of their joint effect, and the row
says so; the "all together" row is the candidate against the baseline.

What the model does not describe is said as such: configuration differences that change the
measurements (LL/SC vs LSE atomics, the linear map's granularity; orchestrator/kernel/mmconfig.py)
are listed as unmodelled causes, never folded into a feature.
"""

from __future__ import annotations

from orchestrator.errors import MmlabError


def _barriers(pred) -> dict[str, float]:
    return {k: round(v, 4) for k, v in pred.per_loop.items()}


def attribute(variants: dict[str, dict], baseline: str, workloads: dict[str, str],
              platform: str = "qemu-tcg") -> dict[str, list[dict]]:
    """{candidate: [{feature, title, release, commit, workload, barriers, time_change}]}.

    ``variants``: {kernel: {"used": variant name or spec}} as compare infers them;
    ``workloads``: {label: simulator workload string}.
    """
    from orchestrator.sim import CostModel, predict, resolve_variant
    from orchestrator.sim.features import features
    from orchestrator.sim.workloads import with_kernel_params

    try:
        model = CostModel.load(platform)
    except (KeyError, MmlabError):
        model = None
    table = features()
    base_v = resolve_variant(variants[baseline]["used"])
    out: dict[str, list[dict]] = {}
    for kname, v in variants.items():
        if kname == baseline:
            continue
        cand_v = resolve_variant(v["used"])
        gained = sorted(cand_v.features - base_v.features)
        lost = sorted(base_v.features - cand_v.features)
        rows: list[dict] = []
        for label, workload_spec in workloads.items():
            try:
                # each kernel with its own config's parameters; the leave-one-out runs
                # with the candidate's
                before = predict(base_v, with_kernel_params(
                    workload_spec, variants[baseline].get("params")))
                workload = with_kernel_params(workload_spec, v.get("params"))
                full = predict(cand_v, workload)
            except MmlabError:
                continue
            b0, b1 = _barriers(before), _barriers(full)
            singles = []
            for fid in gained:
                try:
                    without = predict({"features": sorted(cand_v.features - {fid})}, workload)
                except MmlabError:
                    continue
                row = _row(table, fid, label, _barriers(without), b1, model, without, full)
                singles.append(row)
            whole = _row(table, None, label, b0, b1, model, before, full, together=gained,
                         lost=lost)
            shared = [r for r in singles if r["barriers_change"] and
                      r["barriers_change"] == whole["barriers_change"]]
            for r in singles:
                if len(shared) > 1 and r in shared:
                    r["note"] = "needed together with " + ", ".join(
                        x["feature"] for x in shared if x is not r)
                rows.append(r)
            if len(gained) > 1 or lost:
                rows.append(whole)
        out[kname] = rows
    return out


def _row(table, fid, label, b0, b1, model, before, after, together=None, lost=None) -> dict:
    delta = {k: round(b1.get(k, 0.0) - b0.get(k, 0.0), 4) for k in sorted(set(b0) | set(b1))}
    delta = {k: d for k, d in delta.items() if abs(d) >= 1e-4}
    f = table.get(fid) if fid else None
    return {
        "feature": fid or "all together",
        "title": f.title if f else ("every modelled change at once: " + ", ".join(together or [])
                                    + (f"; removed: {', '.join(lost)}" if lost else "")),
        "release": f.release if f else "",
        "commit": f.commit if f else "",
        "workload": label,
        "barriers_before": b0,
        "barriers_change": delta,
        "time_change": model.relative_change(before, after) if model else None,
        "note": "",
    }


def summary_lines(rows: list[dict], floor: float = 0.005) -> list[str]:
    """Readable lines: 'fix_size_p256: arm64_lazy_mmu_batching (5fdd05efa1cd, v6.16):
    dsb.ishst -255 per loop, time -9.7% (model)'; rows that change nothing are left out."""
    out = []
    for r in rows:
        bits = [f"{q} {d:+g}" for q, d in r["barriers_change"].items()]
        tc = r["time_change"]
        if not bits and (tc is None or abs(tc) < floor):
            continue
        where = ", ".join(x for x in (r["commit"], r["release"]) if x and x != "-")
        text = f"{r['workload']}: {r['feature']}" + (f" ({where})" if where else "") + ": "
        text += ", ".join(bits) + " per loop" if bits else "no barrier change"
        if tc is not None:
            text += f", time {tc * 100:+.1f}% (cost model)"
        if r.get("note"):
            text += f" [{r['note']}]"
        out.append(text)
    return out
