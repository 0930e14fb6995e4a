"""Running a plan on kernels: boots, guest commands, parsing, results as they arrive.

The loop is repeats-outer, kernels-inner (A B C A B C ...), so slow drift of the host hits
every kernel alike. Each (kernel, repeat) gets a fresh boot (``boot = "per-repeat"``) or
each entry does (``"per-entry"``). Before an entry, the guest's kernel log is cleared; after
it, the log is read, so each result holds the dmesg of its own entry. Every result is
written atomically as soon as it is known (see :mod:`orchestrator.run.results`); ``resume``
skips what exists.

A target fault (boot failure, timeout, panic) becomes a result with a verdict and a saved
console log, and the run goes on with the next entry or kernel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator import progress
from orchestrator.errors import MmlabError, TargetError
from orchestrator.kernel.artifacts import Artifact
from orchestrator.run.plans import Entry, Plan
from orchestrator.run.results import RunStore


def guest_tests_dir() -> str:
    """Where the image recipe puts guest_tests/ in the guest (images/initramfs.toml)."""
    import tomllib

    from orchestrator.paths import IMAGES

    recipe = tomllib.loads((IMAGES / "initramfs.toml").read_text())
    return "/" + recipe["guest_tests"]["path"].strip("/")


@dataclass
class KernelUnderTest:
    name: str
    artifact: Artifact


def parse_entry(entry: Entry, output: str, dmesg: str) -> dict:
    """Apply the entry's parsers; a parser error is recorded, not raised."""
    from orchestrator.parsers import dmesg as dmesg_parser
    from orchestrator.parsers import ktap as ktap_parser
    from orchestrator.parsers import ptdump as ptdump_parser
    from orchestrator.parsers import test_vmalloc as tv_parser

    parsed: dict = {}
    kinds = set(entry.parse) | {"dmesg"}  # kernel messages are always checked
    for kind in sorted(kinds):
        try:
            if kind == "test_vmalloc":
                parsed[kind] = tv_parser.parse_with_guest(dmesg, output)
            elif kind == "dmesg":
                parsed[kind] = dmesg_parser.parse(dmesg).to_json()
            elif kind == "ptdump":
                parsed[kind] = ptdump_parser.parse(output).to_json()
            elif kind == "wx":
                parsed[kind] = dmesg_parser.parse(dmesg).to_json().get("wx")
            elif kind == "ktap":
                parsed[kind] = ktap_parser.parse(dmesg).to_json()
        except MmlabError as exc:
            parsed[kind] = {"error": str(exc)}
    return parsed


def entry_verdict(exit_status: int | None, parsed: dict) -> str:
    """ok / failed / crashed / skipped, from the exit status and the parsed results."""
    dm = parsed.get("dmesg") or {}
    if dm.get("crashed") or dm.get("fatal"):
        return "crashed"
    if exit_status == 4:
        return "skipped"
    tv = parsed.get("test_vmalloc") or {}
    if exit_status not in (0, None) or tv.get("unexpected_failures"):
        return "failed"
    kt = parsed.get("ktap") or {}
    if kt.get("status") in ("fail", "incomplete"):
        return "failed"
    return "ok"


def run_plan(kernels: list[KernelUnderTest], plan: Plan, store: RunStore,
             make_target: Callable[[], object]) -> list[dict]:
    """Run every entry of ``plan`` ``plan.repeats`` times on every kernel."""
    written: list[dict] = []
    slots = [(r, k, e) for r in range(plan.repeats) for k in kernels for e in plan.entries
             if e.runs_in(r)]
    total = len(slots)
    done = sum(store.has(k.name, e.id, r) for r, k, e in slots)
    with progress.phase("run", f"{plan.name}: {len(kernels)} kernel(s) x {plan.repeats} "
                        f"repeat(s) x {len(plan.entries)} entries") as ph:
        for repeat in range(plan.repeats):
            for kut in kernels:
                todo = [e for e in plan.entries
                        if e.runs_in(repeat) and not store.has(kut.name, e.id, repeat)]
                if not todo:
                    continue
                groups = [todo] if plan.boot == "per-repeat" else [[e] for e in todo]
                for group in groups:
                    for result in _run_group(kut, group, repeat, store, make_target,
                                             ph, done, total):
                        written.append(result)
                        done += 1
    return written


def _run_group(kut: KernelUnderTest, entries: list[Entry], repeat: int, store: RunStore,
               make_target, ph, done: int, total: int):
    boot_log = store.log_path(kut.name, f"boot-r{repeat}-{entries[0].id}.log")
    target = make_target()
    session = None
    t_boot = time.monotonic()
    written: set[str] = set()  # entries of this group with a result from this boot
    try:
        ph.update(f"[{done}/{total}] boot {kut.name} r{repeat}")
        session = target.boot(kut.artifact, console_log=boot_log)
        boot_s = time.monotonic() - t_boot
        for entry in entries:
            ph.update(f"[{done}/{total}] {kut.name} r{repeat} {entry.id}")
            result = _run_entry(session, kut, entry, repeat, store, boot_log, boot_s)
            store.write(kut.name, entry.id, repeat, result)
            written.add(entry.id)
            done += 1
            yield result
            if result["verdict"] == "crashed" or (result["verdict"] == "timeout"
                                                  and not result.get("recovered")):
                break  # the guest is gone; the rest of the group is recorded below
    except TargetError as exc:
        for entry in entries:
            if entry.id in written:
                continue
            result = _base_result(kut, entry, repeat) | {
                "verdict": "boot-failed" if session is None else "not-run",
                "error": str(exc), "console_log": str(boot_log)}
            store.write(kut.name, entry.id, repeat, result)
            written.add(entry.id)
            yield result
    finally:
        if session is not None:
            try:
                session.shutdown()
            except MmlabError:
                pass
    # entries skipped because an earlier one took the guest down
    for entry in entries:
        if entry.id not in written:
            result = _base_result(kut, entry, repeat) | {
                "verdict": "not-run", "error": "an earlier entry of this boot took the guest "
                "down (crash, or a timeout that ^C could not recover)",
                "console_log": str(boot_log)}
            store.write(kut.name, entry.id, repeat, result)
            yield result


def _base_result(kut: KernelUnderTest, entry: Entry, repeat: int) -> dict:
    return {"schema": "mmlab.result/1", "kernel": kut.name, "artifact": kut.artifact.key,
            "release": kut.artifact.release, "build_id": kut.artifact.build_id,
            "entry": entry.id, "repeat": repeat, "command": list(entry.run),
            "workload": entry.workload, "started": time.time()}


def _run_entry(session, kut: KernelUnderTest, entry: Entry, repeat: int, store: RunStore,
               boot_log: Path, boot_s: float) -> dict:
    from orchestrator.targets.base import CommandTimeout

    result = _base_result(kut, entry, repeat)
    result["boot_s"] = round(boot_s, 3)
    result["boot_stages"] = dict(getattr(session, "boot_stages", {}) or {})
    argv = [f"{guest_tests_dir()}/{entry.run[0]}", *entry.run[1:]]
    try:
        session.run(["dmesg", "-c"], timeout=30)
        res = session.run(argv, timeout=entry.timeout)
        dmesg = session.run(["dmesg"], timeout=60).output
    except CommandTimeout as exc:
        # recovered: ^C brought the shell back, the boot goes on with the next entry
        result.update(verdict="timeout", error=str(exc), console_log=str(boot_log),
                      recovered=bool(getattr(exc, "recovered", False)))
        return result
    except TargetError as exc:
        result.update(verdict="crashed", error=str(exc), console_log=str(boot_log))
        _attach_console_dmesg(result, boot_log)
        return result
    out_path = store.log_path(kut.name, f"{entry.id}-r{repeat}.out")
    out_path.write_text(res.output)
    dmesg_path = store.log_path(kut.name, f"{entry.id}-r{repeat}.dmesg")
    dmesg_path.write_text(dmesg)
    parsed = parse_entry(entry, res.output, dmesg)
    result.update(exit_status=res.exit_status, duration_s=round(res.duration, 3),
                  output=str(out_path), dmesg=str(dmesg_path), console_log=str(boot_log),
                  parsed=parsed, verdict=entry_verdict(res.exit_status, parsed))
    return result


def _attach_console_dmesg(result: dict, boot_log: Path) -> None:
    """After a crash the guest cannot be asked for dmesg: parse the console log instead."""
    from orchestrator.parsers import dmesg as dmesg_parser

    try:
        text = boot_log.read_text(errors="replace")
        result["parsed"] = {"dmesg": dmesg_parser.parse(text).to_json()}
    except (OSError, MmlabError) as exc:
        result["parsed"] = {"dmesg": {"error": str(exc)}}


# --- `mmlab run` -----------------------------------------------------------------------

def summarize(results: list[dict]) -> list[str]:
    """One line per result: verdict, key numbers, where the logs are."""
    lines = []
    for r in sorted(results, key=lambda r: (r["kernel"], r["entry"], r["repeat"])):
        bits = [f"{r['kernel']:<10} {r['entry']:<16} r{r['repeat']}  {r['verdict'].upper():<11}"]
        parsed = r.get("parsed") or {}
        tv = parsed.get("test_vmalloc") or {}
        for run in tv.get("runs", [])[:1]:
            for name, t in run.get("tests", {}).items():
                if t.get("avg_usec_mean") is not None:
                    bits.append(f"{name} {t['status']} avg {t['avg_usec_mean']:.0f} usec")
                if len(bits) > 3:
                    bits.append("...")
                    break
        dm = parsed.get("dmesg") or {}
        # the dmesg parser's "unexpected" is a count; the messages themselves carry the kinds
        issues = [m for m in dm.get("messages") or [] if m.get("expected") is None]
        if issues:
            bits.append(f"{len(issues)} kernel message(s): "
                        + ", ".join(sorted({i.get('kind') or '?' for i in issues})))
        kt = parsed.get("ktap") or {}
        if kt.get("documents"):
            c = kt.get("counts") or {}
            bits.append(f"KTAP {kt.get('status')}: " + ", ".join(
                f"{v} {k}" for k, v in c.items() if v))
        for w in (tv.get("coverage") or {}).get("warnings", []):
            bits.append(f"warning: {w}")
        wx = dm.get("wx") or parsed.get("wx")
        if isinstance(wx, list) and wx:
            bits.append("W+X " + ("FAILED" if any(not w.get("passed", True) for w in wx)
                                  else "passed"))
        if r.get("output") and Path(r["output"]).is_file():
            for line in Path(r["output"]).read_text(errors="replace").splitlines():
                if line.startswith(("mmlab-ptdump:", "mmlab-ptdump-stress:")):
                    bits.append(line.split(":", 1)[1].strip())
        if r.get("error"):
            bits.append(r["error"][:120])
        lines.append("  ".join(bits))
    return lines


def _run_command():
    import hashlib
    import json

    import click

    from orchestrator.kernel.artifacts import find
    from orchestrator.kernel.build import BuildRequest, build_kernel, load_series_spec
    from orchestrator.kernel.sources import resolve_tree
    from orchestrator.run.plans import load_plan_with
    from orchestrator.run.results import host_info, new_run_id

    @click.command("run")
    @click.option("--kernel", "kernel_spec", default=None, help="A built artifact (directory or "
                  "key prefix). Default: build (or reuse) the default kernel.")
    @click.option("--tree", default=None, help="Build this tree first (see `mmlab build`).")
    @click.option("--series", "series_specs", multiple=True, help="Series to apply first.")
    @click.option("--config", "fragments", default="default", show_default=True)
    @click.option("--plan", "plan_name", default="default", show_default=True,
                  help="A plan in plans/ or a path to a plan TOML.")
    @click.option("--entries", default=None, help="Only these plan entries (comma-separated).")
    @click.option("--profile", default=None, help="QEMU profile (default: the plan's).")
    @click.option("--repeats", type=int, default=1, show_default=True)
    @click.option("--out", type=click.Path(path_type=Path), default=None,
                  help="Results directory (default ./mmlab-results/<run-id>).")
    @click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
    @click.option("--json", "as_json", is_flag=True, help="Print all results as JSON.")
    def run_command(kernel_spec, tree, series_specs, fragments, plan_name, entries, profile,
                    repeats, out, resume, as_json):
        """Boot a kernel in QEMU, run a plan in the guest, print parsed results."""
        from orchestrator.hosttools import ensure
        from orchestrator.targets.qemu import QemuTarget

        # checked before a build, so a missing qemu does not show up only after it
        ensure({"image", "boot"} | (set() if kernel_spec else {"build"}), install=False,
               why="mmlab run")
        # the plan and its QEMU profile are checked before a build and before run.json
        plan = load_plan_with(plan_name, entries=entries, repeats=repeats, profile=profile)
        from orchestrator.targets.qemu import load_profile

        load_profile(plan.profile)
        if kernel_spec:
            art = find(kernel_spec)
        else:
            source = resolve_tree(tree)
            series = [load_series_spec(s, source) for s in series_specs]
            art = build_kernel(BuildRequest.for_tree(source, fragments, series=series,
                                                     name="patched" if series else "baseline"))
        if out is None:
            if resume:
                raise click.UsageError("--resume needs --out (the directory of the run)")
            out = Path("mmlab-results") / new_run_id("run")
        store = RunStore(out)
        fingerprint = hashlib.sha256(json.dumps(
            [art.key, plan.to_json()], sort_keys=True).encode()).hexdigest()
        store.start({"kind": "run", "fingerprint": fingerprint, "plan": plan.to_json(),
                     "kernels": {art.name: art.metadata}, "host": host_info(),
                     "created": time.time()}, resume=resume)
        kut = KernelUnderTest(art.name, art)
        run_plan([kut], plan, store, lambda: QemuTarget(plan.profile))
        results = store.load_all()
        if as_json:
            click.echo(json.dumps(results, indent=2, sort_keys=True))
        else:
            for line in summarize(results):
                click.echo(line)
            click.echo(f"results: {out}")
        for p in store.unreadable:
            click.echo(f"mmlab: warning: unreadable result {p} (damaged after it was written?);"
                       " `--resume` runs it again", err=True)
        bad = [r for r in results if r["verdict"] not in ("ok", "skipped")]
        if bad or store.unreadable:
            raise SystemExit(1)

    return run_command


run_command = _run_command()
