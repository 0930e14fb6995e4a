"""``mmlab parse``: run one of the parsers on a saved log and print its JSON.

Why: a console log kept by a run, a dmesg pasted from a mailing-list thread or a dump from
a board can be checked by hand with exactly the code the runner uses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from orchestrator.errors import InputError


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(errors="replace")
    except OSError as exc:
        raise InputError(
            f"cannot read {path}: {exc.strerror}", hint="give a readable log file, or - for stdin"
        ) from exc


@click.command("parse")
@click.argument("kind", type=click.Choice(["dmesg", "test_vmalloc", "ptdump"]))
@click.argument("path")
@click.option("--nr-threads", type=int, help="test_vmalloc: nr_threads the module ran with")
@click.option("--run-test-mask", type=int, help="test_vmalloc: run_test_mask it ran with")
@click.option("--entries", is_flag=True, help="ptdump: include every entry in the JSON")
def parse_command(
    kind: str, path: str, nr_threads: int | None, run_test_mask: int | None, entries: bool
) -> None:
    """Parse PATH (a kernel log, console log or ptdump; - for stdin) and print JSON."""
    text = _read(path)
    if kind == "dmesg":
        from orchestrator.parsers.dmesg import parse_dmesg

        out = parse_dmesg(text).to_json()
    elif kind == "test_vmalloc":
        from orchestrator.parsers.test_vmalloc import parse_test_vmalloc

        out = parse_test_vmalloc(text, nr_threads=nr_threads, run_test_mask=run_test_mask).to_json()
    else:
        from orchestrator.parsers.ptdump import parse

        out = parse(text, source=path).to_json(entries=entries)
    click.echo(json.dumps(out, indent=2, sort_keys=True))
