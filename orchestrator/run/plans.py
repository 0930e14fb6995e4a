"""Test plans: data files in ``plans/`` describing what runs in a guest.

A plan is TOML::

    name = "default"
    description = "..."
    profile = "default"        # QEMU machine profile (qemu_profiles/NAME.toml)
    repeats = 3                # runs per kernel; interleaved across kernels (A B A B ...)
    boot = "per-repeat"        # "per-repeat": one fresh boot per kernel per repeat, all
                               # entries in it; "per-entry": a fresh boot for every entry

    [[entry]]
    id = "fix_size_p256"                    # unique, used in result paths and reports
    run = ["vmalloc.sh", "direct", "run_test_mask=1", "nr_pages=256"]  # guest_tests/ cmd
    timeout = 120                           # seconds (scaled for emulation by the target)
    parse = ["test_vmalloc"]                # parsers applied to the entry's dmesg/output
    workload = "test_vmalloc run_test_mask=1 nr_pages=256"  # simulator workload, optional
    once = false                            # true: only in the first repeat (for
                                            # correctness checks that need no statistics)

The command is an argument list run in the guest (never a shell string built from data);
its first element is a script in ``guest_tests/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import datafiles
from orchestrator.errors import InputError
from orchestrator.names import is_safe_name
from orchestrator.paths import GUEST_TESTS, PLANS

PARSERS = {"test_vmalloc", "ptdump", "dmesg", "wx", "ktap"}


@dataclass(frozen=True)
class Entry:
    id: str
    run: tuple[str, ...]
    timeout: float = 120.0
    parse: tuple[str, ...] = ("dmesg",)
    workload: str | None = None
    once: bool = False
    description: str = ""

    def to_json(self) -> dict:
        return {"id": self.id, "run": list(self.run), "timeout": self.timeout,
                "parse": list(self.parse), "workload": self.workload,
                "once": self.once, "description": self.description}

    def runs_in(self, repeat: int) -> bool:
        return repeat == 0 or not self.once


@dataclass(frozen=True)
class Plan:
    name: str
    path: Path | None
    entries: tuple[Entry, ...]
    profile: str = "default"
    repeats: int = 3
    boot: str = "per-repeat"
    description: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "path": str(self.path) if self.path else None,
                "profile": self.profile, "repeats": self.repeats, "boot": self.boot,
                "description": self.description, "entries": [e.to_json() for e in self.entries]}

    def select(self, ids: list[str]) -> Plan:
        unknown = set(ids) - {e.id for e in self.entries}
        if unknown:
            raise InputError(f"plan {self.name} has no entries {', '.join(sorted(unknown))}",
                             hint=f"entries: {', '.join(e.id for e in self.entries)}")
        keep = tuple(e for e in self.entries if e.id in ids)
        return Plan(self.name, self.path, keep, self.profile, self.repeats, self.boot,
                    self.description, self.extra)


def available() -> list[str]:
    return datafiles.names(PLANS)


def load_plan(name_or_path: str) -> Plan:
    data, path = datafiles.load("plan", PLANS, name_or_path)
    return plan_from_dict(data, path)


def load_plan_with(name_or_path: str, *, entries: str | Sequence[str] | None = None,
                   repeats: int | None = None, profile: str | None = None) -> Plan:
    """``load_plan`` with a command line's overrides: only the ``entries`` named (a list or
    a comma-separated string), and ``repeats`` and ``profile`` where given."""
    plan = load_plan(name_or_path)
    if repeats is not None and (isinstance(repeats, bool) or not isinstance(repeats, int)
                                or repeats < 1):
        raise InputError(f"--repeats {repeats}: a plan runs each entry at least once",
                         hint="give --repeats 1 or more (3 or more for timing statistics)")
    if isinstance(entries, str):
        entries = [e for e in entries.split(",") if e]
    if entries:
        plan = plan.select(list(entries))
    return dataclasses.replace(plan, repeats=plan.repeats if repeats is None else repeats,
                               profile=profile or plan.profile)


def plan_from_dict(data: dict, path: Path | None = None) -> Plan:
    where = str(path or "plan")

    def bad(msg: str) -> InputError:
        return InputError(f"{where}: {msg}", hint="see the format in orchestrator/run/plans.py")

    top = {"name", "description", "profile", "repeats", "boot", "entry"}
    if set(data) - top:
        raise bad(f"unknown key(s) {', '.join(sorted(set(data) - top))} (known: "
                  f"{', '.join(sorted(top))})")
    entries = []
    seen = set()
    for i, raw in enumerate(data.get("entry", []), 1):
        if not isinstance(raw, dict) or "id" not in raw or "run" not in raw:
            raise bad(f"entry #{i} needs an id and a run list")
        eid = str(raw["id"])
        if not is_safe_name(eid) or eid in seen:
            raise bad(f"entry #{i}: id {eid!r} is not a unique simple name")
        seen.add(eid)
        run = raw["run"]
        if not isinstance(run, list) or not run or not all(isinstance(a, str) for a in run):
            raise bad(f"entry {eid}: run must be a non-empty list of strings")
        if not (GUEST_TESTS / run[0]).is_file():
            raise bad(f"entry {eid}: guest_tests/{run[0]} does not exist")
        parse = tuple(raw.get("parse", ["dmesg"]))
        if set(parse) - PARSERS:
            raise bad(f"entry {eid}: unknown parser(s) {sorted(set(parse) - PARSERS)}")
        known = {"id", "run", "timeout", "parse", "workload", "once", "description"}
        if set(raw) - known:
            raise bad(f"entry {eid}: unknown keys {sorted(set(raw) - known)}")
        try:
            timeout = float(raw.get("timeout", 120))
        except (TypeError, ValueError):
            raise bad(f"entry {eid}: timeout {raw.get('timeout')!r} is not a number") from None
        if not timeout > 0 or timeout != timeout or timeout == float("inf"):
            raise bad(f"entry {eid}: timeout must be a positive number of seconds, "
                      f"got {raw.get('timeout')!r}")
        entries.append(Entry(id=eid, run=tuple(run), timeout=timeout,
                             parse=parse, workload=raw.get("workload"),
                             once=bool(raw.get("once", False)),
                             description=str(raw.get("description", ""))))
    if not entries:
        raise bad("no [[entry]] tables")
    repeats = data.get("repeats", 3)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise bad(f"repeats must be a whole number >= 1, got {repeats!r}")
    boot = data.get("boot", "per-repeat")
    if boot not in ("per-repeat", "per-entry"):
        raise bad("boot must be per-repeat or per-entry")
    return Plan(name=str(data.get("name", path.stem if path else "plan")), path=path,
                entries=tuple(entries), profile=str(data.get("profile", "default")),
                repeats=repeats, boot=boot, description=str(data.get("description", "")))
