"""The ``mmlab`` command line.

Sub-commands live in their own modules and are imported only when used, so ``mmlab
doctor`` works even when a heavy dependency of ``mmlab compare`` is broken. To add a
command, add one line to ``COMMANDS``: name -> "module:attribute" of a click command.
"""

from __future__ import annotations

import importlib
import sys

import click

from orchestrator import __version__
from orchestrator.errors import MmlabError

COMMANDS: dict[str, str] = {
    "doctor": "orchestrator.hosttools:doctor_command",
    "test": "orchestrator.cli.selftest:test_command",
    "build": "orchestrator.kernel.build:build_command",
    "trees": "orchestrator.cli.trees:trees_command",
    "series": "orchestrator.kernel.series:series_command",
    "run": "orchestrator.run.runner:run_command",
    "compare": "orchestrator.pipeline.compare:compare_command",
    "inspect": "orchestrator.kernel.elfinspect:inspect_command",
    "simulate": "orchestrator.sim.cli:simulate_command",
    "barriers": "orchestrator.barriers.counts:barriers_command",
    "report": "orchestrator.report.html:report_command",
    "parse": "orchestrator.parsers.cli:parse_command",
    "boot": "orchestrator.targets.cli:boot_command",
    "lab": "orchestrator.lab.runtime:lab_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            # Keep `mmlab --help` and the other commands usable; say why when invoked.
            reason = f"{type(exc).__name__}: {exc}"

            @click.command(name, help=f"(unavailable: {reason})")
            def broken() -> None:
                raise MmlabError(f"`mmlab {name}` cannot load: {reason}",
                                 hint="reinstall with `./mmlab` from the checkout "
                                      "(it refreshes .venv), or report a bug")

            return broken


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mmlab")
def cli() -> None:
    """mmlab: build, boot, test and judge arm64 Linux memory-management patch series."""


def check_environment() -> None:
    """Settings from the environment, checked before any command starts work."""
    import os

    if os.environ.get("MMLAB_TIMEOUT_SCALE"):
        from orchestrator.targets.qemu import env_timeout_scale

        env_timeout_scale()


def main(argv: list[str] | None = None) -> None:
    try:
        check_environment()
        rv = cli.main(args=argv, prog_name="mmlab", standalone_mode=False)
        if isinstance(rv, int) and rv:  # ctx.exit(N) in non-standalone mode returns N
            sys.exit(rv)
    except MmlabError as exc:
        print(exc.render(), file=sys.stderr)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("mmlab: interrupted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("mmlab: interrupted (finished results are kept; use --resume)", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:
        # A disk that fills up, a directory that cannot be written: one line, not a
        # traceback. Results are written atomically, so what was finished is whole.
        import errno

        where = f" ({exc.filename})" if exc.filename else ""
        print(f"mmlab: error: {exc.strerror or exc}{where}", file=sys.stderr)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            print("mmlab: hint: free some space (or choose another --out / -o); finished "
                  "results are kept whole, and --resume continues a run", file=sys.stderr)
        else:
            print("mmlab: hint: check the path and its permissions", file=sys.stderr)
        sys.exit(2)
