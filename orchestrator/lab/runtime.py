"""The lab: a plan across several SSH boards in parallel (``mmlab lab run``).

An inventory (TOML) lists the boards; ``[defaults]`` apply to every board::

    lease_dir = "/var/lib/mmlab/leases"     # optional; default cache_dir("lab")/leases

    [defaults]
    user = "root"
    key = "~/.ssh/mmlab_lab"
    known_hosts = "~/.config/mmlab/known_hosts"

    [[board]]
    name = "rk3588-a"
    address = "10.0.0.7"
    port = 22
    console = ["telnet", "consoles.lab", "7001"]     # optional: prints the serial console
    power = ["/usr/local/bin/pdu", "cycle", "4"]     # optional: power-cycles the board
    tags = { soc = "rk3588", memory = "16G", cpu = "cortex-a76" }

Every key of :class:`orchestrator.targets.ssh.BoardConfig` may appear in a board or in
``[defaults]``. The inventory is validated before anything runs: unknown keys, missing
names or addresses, duplicate names, wrong types are errors naming the board and the key.

``mmlab lab run`` gives each board one worker thread. A worker first takes the board's
*lease*, an exclusive ``flock`` on ``<lease_dir>/<board>.lock`` (so two lab runs, or a lab
run and a person, never drive one board at once: the second sees "busy, leased by pid N"
and skips it), then runs the plan on it through the same runner as QEMU runs
(:func:`orchestrator.run.runner.run_plan` with an :class:`~orchestrator.targets.ssh.SshTarget`),
one job at a time. Results stream to ``<out>/boards/<board>/`` (a
:class:`~orchestrator.run.results.RunStore`) the moment each is known. When a board fails (host
unreachable, the kernel did not come up, the connection died), its failed results are moved
to ``attempts/<n>/`` and the board is tried again (``--retries``); when it still fails it is
marked ``failed`` and the other boards go on. ``<out>/summary.json`` and the printed table
sum up every board.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from orchestrator import progress
from orchestrator.atomic import atomic_write_json
from orchestrator.errors import ConfigError, InputError, MmlabError, TargetError
from orchestrator.names import HINT, is_safe_name
from orchestrator.paths import cache_dir
from orchestrator.run.results import RunStore, host_info, new_run_id

# verdicts that say the board (not the kernel under test) let the run down
BOARD_FAULT_VERDICTS = ("boot-failed", "not-run")
_LIST_KEYS = ("console", "power", "boot_hook", "cmdline")


# ---------------------------------------------------------------------------- inventory


@dataclass
class Inventory:
    path: Path
    boards: list[Any]            # BoardConfig
    lease_dir: Path

    def select(self, names: list[str] | None = None, tags: dict[str, str] | None = None
               ) -> list[Any]:
        """Boards by name and/or tag values (``soc=rk3588``)."""
        boards = self.boards
        if names:
            unknown = set(names) - {b.name for b in boards}
            if unknown:
                raise InputError(f"inventory {self.path} has no board(s) "
                                 f"{', '.join(sorted(unknown))}",
                                 hint=f"boards: {', '.join(b.name for b in boards)}")
            boards = [b for b in boards if b.name in names]
        for k, v in (tags or {}).items():
            boards = [b for b in boards if str(b.tags.get(k)) == v]
        if not boards:
            raise InputError("no board matches the selection",
                             hint=f"boards: {', '.join(b.name for b in self.boards)}")
        return boards


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory; errors name the board and the key."""
    from orchestrator.targets.ssh import BoardConfig

    path = Path(path)
    if not path.is_file():
        raise InputError(f"inventory {path} does not exist",
                         hint="write one (see docs/boards.md) and pass its path")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"inventory {path}: not valid TOML: {exc}",
                          hint="fix the TOML syntax") from None
    known_top = {"defaults", "board", "lease_dir"}
    if set(data) - known_top:
        raise ConfigError(f"inventory {path}: unknown top-level keys "
                          f"{sorted(set(data) - known_top)}",
                          hint="use [defaults], [[board]] and lease_dir")
    fields = {f.name: f for f in dataclasses.fields(BoardConfig)}
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"inventory {path}: [defaults] must be a table", hint="see docs")
    raw_boards = data.get("board", [])
    if not isinstance(raw_boards, list) or not raw_boards:
        raise ConfigError(f"inventory {path}: no [[board]] entries",
                          hint="add at least one [[board]] with name and address")
    boards = []
    seen: set[str] = set()
    base = path.parent
    for i, raw in enumerate(raw_boards, 1):
        if not isinstance(raw, dict):
            raise ConfigError(f"inventory {path}: board #{i} is not a table", hint="see docs")
        merged = {**defaults, **raw}
        label = f"inventory {path}: board #{i} ({merged.get('name', '?')})"
        for req in ("name", "address"):
            if not isinstance(merged.get(req), str) or not merged.get(req):
                raise ConfigError(f"{label}: `{req}` is missing or not a string",
                                  hint=f"add {req} = \"...\"")
        unknown = set(merged) - set(fields)
        if unknown:
            raise ConfigError(f"{label}: unknown keys {sorted(unknown)}",
                              hint=f"known keys: {', '.join(sorted(fields))}")
        if not is_safe_name(merged["name"]):
            raise ConfigError(f"{label}: board name {merged['name']!r} is not a short name (it "
                              "becomes a directory under --out and a lease file)", hint=HINT)
        if merged["name"] in seen:
            raise ConfigError(f"{label}: duplicate board name", hint="names must be unique")
        seen.add(merged["name"])
        if not isinstance(merged.get("port", 22), int) or not 0 < merged.get("port", 22) < 65536:
            raise ConfigError(f"{label}: `port` must be an integer 1-65535",
                              hint="e.g. port = 22")
        for k in _LIST_KEYS:
            v = merged.get(k)
            if v is not None and (not isinstance(v, list) or not v and k != "cmdline"
                                  or not all(isinstance(w, str) for w in v)):
                raise ConfigError(f"{label}: `{k}` must be a list of strings (a command, "
                                  "never a shell string)", hint=f"e.g. {k} = [\"prog\", \"arg\"]")
        if "tags" in merged and not isinstance(merged["tags"], dict):
            raise ConfigError(f"{label}: `tags` must be a table", hint="tags = { soc = \"...\" }")
        for k in ("timeout_scale", "boot_timeout", "restore_timeout", "connect_timeout",
                  "reconnect_timeout"):
            if k in merged and (not isinstance(merged[k], int | float) or merged[k] <= 0):
                raise ConfigError(f"{label}: `{k}` must be a positive number", hint="fix it")
        for k in ("key", "known_hosts", "board_keys"):  # relative to the inventory
            if isinstance(merged.get(k), str) and not os.path.isabs(
                    os.path.expanduser(merged[k])):
                merged[k] = str(base / merged[k])
        try:
            boards.append(BoardConfig(**merged))
        except InputError as exc:
            raise ConfigError(f"{label}: {exc.message}", hint=exc.hint) from None
        except TypeError as exc:
            raise ConfigError(f"{label}: {exc}", hint="check the value types") from None
    lease_dir = Path(data.get("lease_dir") or cache_dir("lab") / "leases")
    if not lease_dir.is_absolute():
        lease_dir = base / lease_dir
    return Inventory(path=path, boards=boards, lease_dir=lease_dir)


# ---------------------------------------------------------------------------- leases


class BoardBusy(TargetError):
    """Another run holds the board's lease."""


class Lease:
    """An exclusive lease on one board: ``flock`` on ``<dir>/<board>.lock``. The kernel
    drops the lock when the holder exits, so a killed run never leaves a stale lease."""

    def __init__(self, lease_dir: Path, board: str, holder: dict | None = None):
        self.path = Path(lease_dir) / f"{board}.lock"
        self.board = board
        self.holder = holder or {}
        self._fd: int | None = None

    def acquire(self) -> Lease:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                held = os.read(fd, 4096).decode(errors="replace").strip()
            finally:
                os.close(fd)
            raise BoardBusy(f"board {self.board} is leased by another run ({held or '?'})",
                            hint=f"wait for it, or check {self.path}") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                **self.holder}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# ---------------------------------------------------------------------------- the run


def _board_faults(store: RunStore) -> list[dict]:
    out = []
    for r in store.load_all():
        err = r.get("error") or ""
        if r.get("verdict") in BOARD_FAULT_VERDICTS or "SSH connection lost" in err \
                or "cannot open SSH" in err:
            out.append(r)
    return out


def _set_aside(store: RunStore, results: list[dict], attempt: int) -> None:
    """Move failed results to attempts/<n>/ so the retry runs them again (kept on disk)."""
    for r in results:
        src = store.result_path(r["kernel"], r["entry"], r["repeat"])
        dst = store.root / "attempts" / str(attempt) / src.relative_to(store.root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_file():
            os.replace(src, dst)


def run_board(cfg: Any, kernels: list, plan: Any, out: Path, lease_dir: Path,
              retries: int = 1, resume: bool = False, run_id: str = "") -> dict:
    """Run ``plan`` on one board (holding its lease); the board's status dict."""
    from orchestrator.run.runner import run_plan
    from orchestrator.targets.ssh import BoardUnreachable, HostKeyRefused, SshTarget

    root = out / "boards" / cfg.name
    status: dict[str, Any] = {"board": cfg.name, "address": f"{cfg.address}:{cfg.port}",
                              "tags": cfg.tags, "status": "running", "attempts": 0,
                              "started": time.time(), "results": str(root)}
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / "status.json", status)
    t0 = time.monotonic()
    try:
        with Lease(lease_dir, cfg.name, {"run": run_id, "out": str(out)}):
            store = RunStore(root)
            store.start({"kind": "lab-board", "board": dataclasses.asdict(cfg),
                         "plan": plan.to_json(), "fingerprint": json.dumps(
                             [[k.name, k.artifact.key] for k in kernels] + [plan.to_json()],
                             sort_keys=True),
                         "kernels": {k.name: k.artifact.metadata for k in kernels},
                         "host": host_info(), "created": time.time()},
                        resume=resume)
            target = SshTarget(cfg)
            for attempt in range(1, retries + 2):
                status["attempts"] = attempt
                atomic_write_json(root / "status.json", status)
                try:
                    target.connect().close()
                except HostKeyRefused as exc:
                    status.update(status="failed", error=str(exc), fault="host-key")
                    break  # a security refusal is never retried
                except BoardUnreachable as exc:
                    status.update(error=str(exc), fault="unreachable")
                    if attempt <= retries:
                        progress.info(f"board {cfg.name}: unreachable, retry {attempt}")
                        target.power_cycle("unreachable before the run")
                        time.sleep(2)
                        continue
                    status["status"] = "failed"
                    break
                run_plan(kernels, plan, store, lambda: SshTarget(cfg))
                faults = _board_faults(store)
                if not faults:
                    status.update(status="ok", error=None, fault=None)
                    break
                status.update(error=faults[0].get("error"), fault=faults[0].get("verdict"))
                if attempt <= retries:
                    progress.info(f"board {cfg.name}: {len(faults)} result(s) failed by the "
                                  f"board, retry {attempt}: {status['error']}")
                    _set_aside(store, faults, attempt)
                    continue
                status["status"] = "failed"
            results = store.load_all()
    except BoardBusy as exc:
        status.update(status="busy", error=str(exc), fault="busy")
        results = []
    except MmlabError as exc:
        status.update(status="failed", error=str(exc), fault="error")
        results = RunStore(root).load_all() if (root / "results").is_dir() else []
    counts: dict[str, int] = {}
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    status.update(verdicts=counts, duration_s=round(time.monotonic() - t0, 1),
                  finished=time.time())
    atomic_write_json(root / "status.json", status)
    progress.info(f"board {cfg.name}: {status['status']} "
                  f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'no results'})")
    return status


def run_lab(inventory: Inventory, boards: list, kernels: list, plan: Any, out: Path,
            retries: int = 1, resume: bool = False) -> dict:
    """The plan on every board in parallel; the summary (also in ``out/summary.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    run_id = out.name
    atomic_write_json(out / "lab.json", {
        "kind": "lab", "inventory": str(inventory.path), "boards": [b.name for b in boards],
        "plan": plan.to_json(), "kernels": {k.name: k.artifact.key for k in kernels},
        "retries": retries, "host": host_info(), "created": time.time()})
    with ThreadPoolExecutor(max_workers=len(boards), thread_name_prefix="board") as pool:
        futures = {b.name: pool.submit(run_board, b, kernels, plan, out, inventory.lease_dir,
                                       retries, resume, run_id) for b in boards}
        statuses = {}
        for name, fut in futures.items():
            try:
                statuses[name] = fut.result()
            except Exception as exc:  # noqa: BLE001 - one board's bug must not sink the lab
                statuses[name] = {"board": name, "status": "failed", "error": repr(exc),
                                  "fault": "internal"}
    summary = {"schema": "mmlab.lab-summary/1", "out": str(out), "boards": statuses,
               "ok": sorted(n for n, s in statuses.items() if s["status"] == "ok"),
               "failed": sorted(n for n, s in statuses.items() if s["status"] == "failed"),
               "busy": sorted(n for n, s in statuses.items() if s["status"] == "busy"),
               "metrics": _metrics(out, boards)}
    atomic_write_json(out / "summary.json", summary)
    return summary


def _metrics(out: Path, boards: list) -> dict:
    """{entry: {board: {kernel: median avg usec}}} from test_vmalloc results, for the
    cross-board table."""
    import statistics

    table: dict[str, dict[str, dict[str, float]]] = {}
    for b in boards:
        root = out / "boards" / b.name
        if not (root / "results").is_dir():
            continue
        vals: dict[tuple[str, str], list[float]] = {}
        for r in RunStore(root).load_all():
            for run in ((r.get("parsed") or {}).get("test_vmalloc") or {}).get("runs", []):
                for t in run.get("tests", {}).values():
                    if t.get("avg_usec_mean") is not None:
                        vals.setdefault((r["entry"], r["kernel"]), []).append(
                            float(t["avg_usec_mean"]))
        for (entry, kernel), v in vals.items():
            table.setdefault(entry, {}).setdefault(b.name, {})[kernel] = statistics.median(v)
    return table


def render_board_reports(spec: Any, arts: dict, plan: Any, out: Path, summary: dict,
                         command: str) -> tuple[dict[str, str], dict[str, dict]]:
    """The comparison report of ``spec`` for each board with results, from that board's
    runs (what ``mmlab compare`` renders for QEMU runs): ``boards/<b>/results.json``,
    ``report.html`` and ``junit.xml``. No barrier counts (those need the QEMU plugin); the
    cost-model predictions are the emulator's, so the timing theory is only indicative.
    Returns ({board: report.html}, {board: verdict as in results.json})."""
    from orchestrator.pipeline.compare import (
        assemble,
        check_schema,
        counted_workloads,
        infer_variants,
        predictions,
        timing_predictions,
    )
    from orchestrator.report.html import write_report
    from orchestrator.report.junit import write_junit

    variants = infer_variants(spec, arts)
    preds = predictions(variants, counted_workloads(spec))  # as run_compare does
    tpreds = timing_predictions(variants, spec.baseline, plan)
    reports, verdicts = {}, {}
    for name, status in sorted(summary["boards"].items()):
        root = out / "boards" / name
        if not (root / "results").is_dir():
            continue
        try:
            comp = assemble(spec, arts, plan, RunStore(root), variants, {}, preds, tpreds,
                            command)
            comp.plan.target = f"ssh board {name} ({status.get('address', '')})"
            comp.analyze()
            comp.save(root / "results.json")
            check_schema(comp)
            reports[name] = str(write_report(comp, root / "report.html", results_dir=root))
            write_junit(comp, root / "junit.xml")
            verdicts[name] = dataclasses.asdict(comp.analysis.verdict)
        except Exception as exc:  # noqa: BLE001 - the runs are on disk; a report bug
            # must not end the lab (re-render later from results/)
            progress.info(f"board {name}: no comparison report: {exc!r}")
    return reports, verdicts


def compare_on_lab(spec: Any, inventory: Inventory, boards: list, plan: Any, out: Path,
                   command: str, retries: int = 1, resume: bool = False) -> dict:
    """A comparison on SSH boards: build ``spec``'s kernels (with ``spec.config``), run
    ``plan`` on each board and render the comparison report per board. The lab summary,
    with ``reports`` ({board: report.html}) and ``verdicts`` ({board: verdict})."""
    from orchestrator.pipeline.compare import build_all
    from orchestrator.run.runner import KernelUnderTest

    arts = build_all(spec)
    kernels = [KernelUnderTest(k.name, arts[k.name]) for k in spec.kernels]
    summary = run_lab(inventory, boards, kernels, plan, out, retries=retries, resume=resume)
    summary["reports"], summary["verdicts"] = render_board_reports(spec, arts, plan, out,
                                                                   summary, command)
    atomic_write_json(out / "summary.json", summary)
    return summary


def summary_lines(summary: dict) -> list[str]:
    lines = []
    for name, s in sorted(summary["boards"].items()):
        counts = ", ".join(f"{k} {v}" for k, v in sorted((s.get("verdicts") or {}).items()))
        line = f"{name:<14} {s['status'].upper():<7} attempts {s.get('attempts', 0)}  {counts}"
        if s.get("error") and s["status"] != "ok":
            line += f"  {s['error'][:140]}"
        lines.append(line)
    for entry, per_board in sorted(summary.get("metrics", {}).items()):
        cells = "  ".join(f"{b}: " + "/".join(f"{k} {v:.0f}" for k, v in sorted(ks.items()))
                          for b, ks in sorted(per_board.items()))
        lines.append(f"  {entry:<16} usec  {cells}")
    return lines


# ---------------------------------------------------------------------------- CLI


@click.group("lab")
def lab_command():
    """Run plans on the SSH boards of an inventory (a board lab)."""


@lab_command.command("check")
@click.option("--inventory", required=True, type=click.Path(path_type=Path))
def check_command(inventory):
    """Validate an inventory and try each board: SSH, host key, running kernel."""
    from orchestrator.targets.ssh import SshTarget

    inv = load_inventory(inventory)
    bad = 0
    for b in inv.boards:
        try:
            t = SshTarget(b)
            conn = t.connect()
            k = t.running_kernel(conn)
            conn.close()
            click.echo(f"{b.name:<14} OK    {k['release']} build-id {k['build_id']}")
        except MmlabError as exc:
            bad += 1
            click.echo(f"{b.name:<14} FAIL  {exc}")
    if bad:
        raise SystemExit(1)


@lab_command.command("run")
@click.option("--inventory", required=True, type=click.Path(path_type=Path),
              help="Inventory TOML of the boards.")
@click.option("--plan", "plan_name", default="default", show_default=True)
@click.option("--entries", default=None, help="Only these plan entries (comma-separated).")
@click.option("--repeats", type=int, default=None, help="Runs per kernel (default: the plan's).")
@click.option("--kernel", "kernel_specs", multiple=True,
              help="A built artifact (directory or key prefix); repeatable. Default: build "
                   "(or reuse) the `board` config set.")
@click.option("--config", "fragments", default="board", show_default=True,
              help="Config set to build when no --kernel is given.")
@click.option("--boards", default=None, help="Only these boards (comma-separated).")
@click.option("--tag", "tags", multiple=True, help="Only boards with this tag (key=value).")
@click.option("--retries", type=int, default=1, show_default=True,
              help="Retries of a board that fails before it is marked failed.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Results directory (default ./mmlab-results/lab-<time>).")
@click.option("--resume", is_flag=True, help="Continue an interrupted lab run in --out.")
@click.option("--comparison", default=None, help="Run the kernels of this comparison "
              "(comparisons/NAME.toml or a path; built with --config) and render its report "
              "per board.")
def run_command(inventory, plan_name, entries, repeats, kernel_specs, fragments, boards,
                tags, retries, out, resume, comparison):
    """Run a plan on every board of an inventory in parallel; per-board results and a
    summary across boards."""
    from orchestrator.kernel.artifacts import find
    from orchestrator.kernel.build import BuildRequest, build_kernel
    from orchestrator.run.plans import load_plan_with
    from orchestrator.run.runner import KernelUnderTest

    inv = load_inventory(inventory)
    tag_map = {}
    for t in tags:
        if "=" not in t:
            raise InputError(f"--tag {t!r} is not key=value", hint="e.g. --tag soc=rk3588")
        k, v = t.split("=", 1)
        tag_map[k] = v
    selected = inv.select([b for b in boards.split(",") if b] if boards else None, tag_map)
    plan = load_plan_with(plan_name, entries=entries, repeats=repeats)
    if out is None:
        if resume:
            raise click.UsageError("--resume needs --out")
        out = Path("mmlab-results") / new_run_id("lab")
    elif not resume and (out / "lab.json").exists():
        raise InputError(f"{out} already holds a lab run",
                         hint="pass --resume to continue it (same kernels and plan), or choose "
                              "another --out")
    if comparison:
        import sys

        from orchestrator.pipeline.compare import load_comparison

        spec = load_comparison(comparison)
        spec.config = fragments
        spec.plan = plan_name
        summary = compare_on_lab(spec, inv, selected, plan, out, " ".join(sys.argv),
                                 retries=retries, resume=resume)
        for name, path in summary["reports"].items():
            click.echo(f"report {name}: {path}")
    else:
        arts = [find(k) for k in kernel_specs] or [
            build_kernel(BuildRequest.default(fragments))]
        names = [a.name for a in arts]
        kernels = [KernelUnderTest(a.name if names.count(a.name) == 1 else f"{a.name}-{i}",
                                   a) for i, a in enumerate(arts)]
        summary = run_lab(inv, selected, kernels, plan, out, retries=retries, resume=resume)
    for line in summary_lines(summary):
        click.echo(line)
    click.echo(f"results: {out}  summary: {out / 'summary.json'}")
    if summary["failed"] or summary["busy"]:
        raise SystemExit(1)
