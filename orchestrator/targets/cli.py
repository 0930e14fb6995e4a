"""``mmlab boot``: boot a kernel artifact in QEMU and run commands in it (by hand).

For looking at a kernel without a plan: ``mmlab boot 9acf15 -- vmalloc.sh smoke
test_loop_count=100`` boots the artifact with the default profile, runs the command, prints
its output and exits with its status. Several commands: repeat ``-c 'CMD'``. The boot
stages, the console log and the QEMU command line go to stderr.
"""

from __future__ import annotations

import shlex
import sys

import click

from orchestrator import progress


@click.command("boot")
@click.argument("artifact")
@click.argument("command", nargs=-1)
@click.option("-p", "--profile", default="default", show_default=True,
              help="QEMU profile (qemu_profiles/NAME.toml) or a path to one.")
@click.option("-c", "--cmd", "commands", multiple=True,
              help="A guest shell command to run (repeatable); runs before COMMAND.")
@click.option("--cmdline", "cmdline", multiple=True,
              help="Extra kernel command-line word (repeatable).")
@click.option("-t", "--timeout", default=600.0, show_default=True,
              help="Seconds per command before emulation scaling.")
@click.option("--console-log", type=click.Path(dir_okay=False), default=None,
              help="Where to keep the console log (default: under the cache).")
def boot_command(artifact: str, command: tuple[str, ...], profile: str,
                 commands: tuple[str, ...], cmdline: tuple[str, ...], timeout: float,
                 console_log: str | None) -> None:
    """Boot ARTIFACT (a directory or key prefix) and run COMMAND in the guest."""
    from pathlib import Path

    from orchestrator.kernel.artifacts import find
    from orchestrator.targets.qemu import QemuTarget

    art = find(artifact)
    target = QemuTarget(profile)
    todo = list(commands) + ([shlex.join(command)] if command else [])
    status = 0
    with progress.phase("boot", f"{art.name} on {target.name}"):
        session = target.boot(art, console_log=Path(console_log) if console_log else None,
                              cmdline=list(cmdline))
    with session:
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in session.boot_stages.items())
        progress.info(f"ready: {stages}")
        progress.info(f"console log: {session.console_log_path}")
        for text in todo:
            res = session.run(text, timeout=timeout)
            sys.stdout.write(res.output)
            sys.stdout.flush()
            progress.info(f"`{text}`: exit status {res.exit_status} ({res.verdict}), "
                          f"{res.duration:.2f}s")
            status = res.exit_status
    sys.exit(status)
