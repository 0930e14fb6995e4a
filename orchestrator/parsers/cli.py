"""``mmlab parse``: run one of the parsers on a saved log and print its JSON.

Why: a console log kept by a run, a dmesg pasted from a mailing-list thread or a dump from
a board can be checked by hand with exactly the code the runner uses.
"""

from __future__ import annotations

import json
import sys

import click

from orchestrator.errors import InputError

MAX_MB = 256  # a day of a busy board's console is ~50 MB; beyond this, say so


def _looks_binary(head: bytes) -> bool:
    """NUL bytes, or mostly bytes no log has (a core dump, an image, random data)."""
    if not head:
        return False
    if b"\0" in head:
        return True
    text = sum(1 for b in head if b in (9, 10, 13) or 32 <= b < 127 or b >= 128)
    return text < 0.9 * len(head)


def _read(path: str, max_mb: int = MAX_MB) -> str:
    limit = max_mb * 1024 * 1024
    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(limit + 1)
    except OSError as exc:
        raise InputError(
            f"cannot read {path}: {exc.strerror}", hint="give a readable log file, or - for stdin"
        ) from exc
    if len(data) > limit:
        raise InputError(f"{path} is larger than {max_mb} MB",
                         hint="cut out the part to parse, or raise the limit with --max-mb")
    if _looks_binary(data[:65536]):
        raise InputError(f"{path} is not text (binary data: NUL bytes or mostly non-text bytes)",
                         hint="give a kernel log, console log, KTAP output or ptdump as text")
    return data.decode("utf-8", errors="replace")


@click.command("parse")
@click.argument("kind", type=click.Choice(["dmesg", "test_vmalloc", "ptdump", "ktap"]))
@click.argument("path")
@click.option("--max-mb", type=click.IntRange(1, 4096), default=MAX_MB, show_default=True,
              help="Refuse inputs larger than this (MB).")
@click.option("--nr-threads", type=int, help="test_vmalloc: nr_threads the module ran with")
@click.option("--run-test-mask", type=int, help="test_vmalloc: run_test_mask it ran with")
@click.option("--entries", is_flag=True, help="ptdump: include every entry in the JSON")
def parse_command(
    kind: str, path: str, max_mb: int, nr_threads: int | None, run_test_mask: int | None,
    entries: bool
) -> None:
    """Parse PATH (a kernel log, console log, KTAP output or ptdump; - for stdin) and print
    JSON. Binary input and input over --max-mb are refused before parsing."""
    text = _read(path, max_mb)
    if kind == "dmesg":
        from orchestrator.parsers.dmesg import parse_dmesg

        out = parse_dmesg(text).to_json()
    elif kind == "ktap":
        from orchestrator.parsers.ktap import parse as parse_ktap

        out = parse_ktap(text).to_json()
    elif kind == "test_vmalloc":
        from orchestrator.parsers.test_vmalloc import parse_test_vmalloc

        out = parse_test_vmalloc(text, nr_threads=nr_threads, run_test_mask=run_test_mask).to_json()
    else:
        from orchestrator.parsers.ptdump import parse

        out = parse(text, source=path).to_json(entries=entries)
    click.echo(json.dumps(out, indent=2, sort_keys=True))
