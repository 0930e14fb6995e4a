"""Shared pytest fixtures.

Tests marked ``kernel`` or ``boot`` use a real arm64 kernel: the ``kernel_artifact``
fixture builds the default configuration through the real build pipeline (cached in
~/.cache/mmlab, so only the first run on a machine pays the ~8.5 min cold build).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest


def _require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"host tools missing: {', '.join(missing)}; run `mmlab doctor --install`")


@pytest.fixture(scope="session")
def kernel_artifact():
    """The default kernel (linux-source-6.12 + qemu-virt, test_vmalloc, ptdump), built for real."""
    _require_tools("aarch64-linux-gnu-gcc", "make", "ccache")
    from orchestrator.kernel.build import BuildRequest, build_kernel

    return build_kernel(BuildRequest.default())


# The newest upstream release CI builds and boots (fetched from Debian's archive, see
# orchestrator/kernel/debian_archive.py): the one judge of mmlab that nobody here wrote.
UPSTREAM_TREE = "debian:7.3"


@pytest.fixture(scope="session")
def upstream_artifact():
    """Linux 7.3 (Debian's linux-source-7.3) with the default fragment set, built for real."""
    _require_tools("aarch64-linux-gnu-gcc", "make", "ccache")
    from orchestrator.kernel.build import BuildRequest, build_kernel
    from orchestrator.kernel.sources import resolve_tree

    return build_kernel(BuildRequest.for_tree(resolve_tree(UPSTREAM_TREE), "default",
                                              name="v7.3"))


# ---- the fault matrix (docs/reliability.md) ------------------------------------------------
# A test marked @pytest.mark.fault(name, did, exit, lost=0) is a row: the fault it produces
# for real (or, where it cannot be produced here, with a fake named as such in `did`), what
# mmlab did, the exit status and the results lost, all asserted by the test itself. Passing
# rows are collected; MMLAB_FAULT_TABLE=PATH writes them as a Markdown table (nox -s faults).

_FAULT_ROWS: list[dict] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call":
        return
    for mark in item.iter_markers("fault"):
        name, did, exit_status = mark.args[:3]
        _FAULT_ROWS.append({"fault": name, "did": did, "exit": exit_status,
                            "lost": mark.kwargs.get("lost", 0),
                            "test": item.nodeid, "outcome": rep.outcome})


def fault_table(rows: list[dict]) -> str:
    """The Markdown table: one row per fault (parametrized cases of one fault counted)."""
    grouped: dict[str, dict] = {}
    for r in rows:
        g = grouped.setdefault(r["fault"], dict(r, cases=0, passed=0, tests=set()))
        g["cases"] += 1
        g["passed"] += r["outcome"] == "passed"
        test = r["test"].split("::", 1)
        g["tests"].add(f"`{Path(test[0]).name}::{test[1].split('[', 1)[0]}`")
    lines = ["| fault | what mmlab did | exit | results lost | result | test |",
             "|---|---|---|---|---|---|"]
    for name in sorted(grouped):
        g = grouped[name]
        result = ("PASS" if g["passed"] == g["cases"] else f"FAIL ({g['cases'] - g['passed']})")
        if g["cases"] > 1:
            result += f", {g['cases']} cases"
        lines.append(f"| {name} | {g['did']} | {g['exit']} | {g['lost']} | {result} | "
                     f"{', '.join(sorted(g['tests']))} |")
    return "\n".join(lines) + "\n"


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("MMLAB_FAULT_TABLE")
    if not path or not _FAULT_ROWS:
        return
    Path(path).write_text(fault_table(_FAULT_ROWS))
    Path(path).with_suffix(".json").write_text(json.dumps(_FAULT_ROWS, indent=2) + "\n")
