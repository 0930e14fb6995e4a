"""Running a plan on kernels: boots, guest commands, parsing, results as they arrive.

The loop is repeats-outer, kernels-inner (A B C A B C ...), so slow drift of the host hits
every kernel alike. Each (kernel, repeat) gets a fresh boot (``boot = "per-repeat"``) or
each entry does (``"per-entry"``). Before an entry, the guest's kernel log is cleared; after
it, the log is read, so each result holds the dmesg of its own entry. Every result is
written atomically as soon as it is known (see :mod:`orchestrator.results`); ``resume``
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
from orchestrator.artifacts import Artifact
from orchestrator.errors import MmlabError, TargetError
from orchestrator.plans import Entry, Plan
from orchestrator.results import RunStore

GUEST_TESTS_DIR = "/guest_tests"


@dataclass
class KernelUnderTest:
    name: str
    artifact: Artifact


def parse_entry(entry: Entry, output: str, dmesg: str) -> dict:
    """Apply the entry's parsers; a parser error is recorded, not raised."""
    from orchestrator.parsers import dmesg as dmesg_parser
    from orchestrator.parsers import ptdump as ptdump_parser
    from orchestrator.parsers import test_vmalloc as tv_parser

    parsed: dict = {}
    kinds = set(entry.parse) | {"dmesg"}  # kernel messages are always checked
    for kind in sorted(kinds):
        try:
            if kind == "test_vmalloc":
                parsed[kind] = tv_parser.parse(dmesg).to_json()
            elif kind == "dmesg":
                parsed[kind] = dmesg_parser.parse(dmesg).to_json()
            elif kind == "ptdump":
                parsed[kind] = ptdump_parser.parse(output).to_json()
            elif kind == "wx":
                parsed[kind] = dmesg_parser.parse(dmesg).to_json().get("wx")
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
    return "ok"


def run_plan(kernels: list[KernelUnderTest], plan: Plan, store: RunStore,
             make_target: Callable[[], object], *, resume: bool = False,
             counter_factory: Callable | None = None) -> list[dict]:
    """Run every entry of ``plan`` ``plan.repeats`` times on every kernel."""
    written: list[dict] = []
    total = plan.repeats * len(kernels) * len(plan.entries)
    done = sum(store.has(k.name, e.id, r) for r in range(plan.repeats) for k in kernels
               for e in plan.entries)
    with progress.phase("run", f"{plan.name}: {len(kernels)} kernel(s) x {plan.repeats} "
                        f"repeat(s) x {len(plan.entries)} entries") as ph:
        for repeat in range(plan.repeats):
            for kut in kernels:
                todo = [e for e in plan.entries if not store.has(kut.name, e.id, repeat)]
                if not todo:
                    continue
                groups = [todo] if plan.boot == "per-repeat" else [[e] for e in todo]
                for group in groups:
                    for result in _run_group(kut, group, repeat, store, make_target,
                                             counter_factory, ph, done, total):
                        written.append(result)
                        done += 1
    return written


def _run_group(kut: KernelUnderTest, entries: list[Entry], repeat: int, store: RunStore,
               make_target, counter_factory, ph, done: int, total: int):
    boot_log = store.log_path(kut.name, f"boot-r{repeat}-{entries[0].id}.log")
    target = make_target()
    counter = counter_factory(kut.artifact) if counter_factory and any(
        e.count_barriers for e in entries) else None
    session = None
    t_boot = time.monotonic()
    try:
        ph.update(f"[{done}/{total}] boot {kut.name} r{repeat}")
        session = target.boot(kut.artifact, console_log=boot_log, counter=counter)
        boot_s = time.monotonic() - t_boot
        for entry in entries:
            ph.update(f"[{done}/{total}] {kut.name} r{repeat} {entry.id}")
            result = _run_entry(session, kut, entry, repeat, store, boot_log, boot_s, counter)
            store.write(kut.name, entry.id, repeat, result)
            done += 1
            yield result
            if result["verdict"] in ("crashed", "timeout"):
                break  # the guest is gone; remaining entries get a fresh boot next time
    except TargetError as exc:
        for entry in entries:
            if store.has(kut.name, entry.id, repeat):
                continue
            result = _base_result(kut, entry, repeat) | {
                "verdict": "boot-failed" if session is None else "target-error",
                "error": str(exc), "console_log": str(boot_log)}
            store.write(kut.name, entry.id, repeat, result)
            yield result
    finally:
        if session is not None:
            try:
                session.shutdown()
            except MmlabError:
                pass


def _base_result(kut: KernelUnderTest, entry: Entry, repeat: int) -> dict:
    return {"schema": "mmlab.result/1", "kernel": kut.name, "artifact": kut.artifact.key,
            "release": kut.artifact.release, "build_id": kut.artifact.build_id,
            "entry": entry.id, "repeat": repeat, "command": list(entry.run),
            "workload": entry.workload, "started": time.time()}


def _run_entry(session, kut: KernelUnderTest, entry: Entry, repeat: int, store: RunStore,
               boot_log: Path, boot_s: float, counter) -> dict:
    result = _base_result(kut, entry, repeat)
    result["boot_s"] = round(boot_s, 3)
    argv = [f"{GUEST_TESTS_DIR}/{entry.run[0]}", *entry.run[1:]]
    try:
        session.run(["dmesg", "-c"], timeout=30)
        if counter is not None and entry.count_barriers:
            session.run(["/bin/mmlab-marker", "begin"], timeout=30)
        res = session.run(argv, timeout=entry.timeout)
        if counter is not None and entry.count_barriers:
            session.run(["/bin/mmlab-marker", "end"], timeout=30)
        dmesg = session.run(["dmesg"], timeout=60).output
    except TargetError as exc:
        result.update(verdict="timeout" if "timed out" in str(exc) else "crashed",
                      error=str(exc), console_log=str(boot_log))
        return result
    out_path = store.log_path(kut.name, f"{entry.id}-r{repeat}.out")
    out_path.write_text(res.output)
    dmesg_path = store.log_path(kut.name, f"{entry.id}-r{repeat}.dmesg")
    dmesg_path.write_text(dmesg)
    parsed = parse_entry(entry, res.output, dmesg)
    result.update(exit_status=res.exit_status, duration_s=round(res.duration, 3),
                  output=str(out_path), dmesg=str(dmesg_path), console_log=str(boot_log),
                  parsed=parsed, verdict=entry_verdict(res.exit_status, parsed))
    if counter is not None and entry.count_barriers:
        result["barriers"] = counter.collect(session)
    return result
