"""Running Kbuild: one place that knows the make command line and its environment.

Every make invocation of a build goes through :class:`Kbuild`, which

- builds out of tree in ``<src>/_build`` (a direct child of the source tree, so Kbuild uses
  *relative* paths: ccache then hits across work trees at different locations),
- compiles through ccache with a persistent cache dir shared by all variants,
- fixes KBUILD_BUILD_TIMESTAMP/USER/HOST/VERSION so identical inputs give identical images,
- appends all output to the build log, shows progress (phase, elapsed, objects built, last
  file), and records each command with its environment (the reproducer in metadata.json),
- turns a failure into a BuildError carrying the first compiler error and the log path.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import progress
from orchestrator.errors import BuildError
from orchestrator.paths import cache_dir

CROSS_COMPILE = "aarch64-linux-gnu-"
BUILD_SUBDIR = "_build"
FIXED_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "1970-01-01 00:00:00 UTC",
    "KBUILD_BUILD_USER": "mmlab",
    "KBUILD_BUILD_HOST": "mmlab",
    "KBUILD_BUILD_VERSION": "1",
    "LC_ALL": "C",
}
_PROGRESS_LINE = re.compile(r"^\s{2}([A-Z][A-Z0-9_]{1,9})\s+(\S+)")
_ERROR_LINE = re.compile(r"(\berror:|\bError \d|Error:|undefined reference|No rule to make)")


def jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def ccache_env(work_root: Path) -> dict[str, str]:
    return {
        "CCACHE_DIR": str(cache_dir("ccache")),
        "CCACHE_BASEDIR": str(work_root),
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_MAXSIZE": os.environ.get("MMLAB_CCACHE_MAXSIZE", "8G"),
    }


def first_error(log_text: str) -> str | None:
    for line in log_text.splitlines():
        if _ERROR_LINE.search(line):
            return line.strip()
    return None


@dataclass
class Kbuild:
    src: Path
    log_path: Path
    stats_log: Path | None = None
    commands: list[dict] = field(default_factory=list)

    @property
    def objtree(self) -> Path:
        return self.src / BUILD_SUBDIR

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(FIXED_ENV)
        env.update(ccache_env(cache_dir("work")))
        if self.stats_log is not None:
            env["CCACHE_STATSLOG"] = str(self.stats_log)
        return env

    def make_argv(self, *targets: str, jobs_: int | None = None, **variables: str) -> list[str]:
        argv = ["make", f"O={BUILD_SUBDIR}", "ARCH=arm64", f"CROSS_COMPILE={CROSS_COMPILE}",
                f"CC=ccache {CROSS_COMPILE}gcc", "HOSTCC=ccache gcc"]
        if jobs_:
            argv.append(f"-j{jobs_}")
        argv += [f"{k}={v}" for k, v in variables.items()]
        argv += list(targets)
        return argv

    def run(self, argv: list[str], what: str, *, stage: str = "build") -> float:
        """Run a command in the source tree, logging and showing progress."""
        record_env = {k: v for k, v in self.env().items()
                      if k in FIXED_ENV or k.startswith("CCACHE_")}
        self.commands.append({"cwd": str(self.src), "argv": argv, "env": record_env,
                              "shell": " ".join(shlex.quote(a) for a in argv)})
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        built = 0
        with open(self.log_path, "a") as log, progress.phase(stage, what) as ph:
            log.write(f"\n$ (cd {shlex.quote(str(self.src))} && "
                      f"{' '.join(shlex.quote(a) for a in argv)})\n")
            log.flush()
            proc = subprocess.Popen(argv, cwd=self.src, env=self.env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace")
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    log.write(line)
                    m = _PROGRESS_LINE.match(line)
                    if m:
                        built += 1
                        ph.update(f"{built} steps, {m.group(1)} {m.group(2)}")
                rc = proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        if rc != 0:
            text = self.log_path.read_text(errors="replace")
            err = first_error(text) or f"`{argv[0]} {' '.join(argv[-1:])}` exited with {rc}"
            raise BuildError(f"{what} failed: {err}", log=str(self.log_path),
                             hint="read the log; fix the tree, series or config and run again")
        return time.monotonic() - start

    def capture(self, argv: list[str]) -> str:
        proc = subprocess.run(argv, cwd=self.src, env=self.env(), capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise BuildError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()[-300:]}",
                             log=str(self.log_path))
        return proc.stdout.strip()


def toolchain_versions() -> dict[str, str]:
    """First version lines of the tools whose output lands in the kernel image."""
    out = {}
    for name, argv in {
        "gcc": [f"{CROSS_COMPILE}gcc", "--version"],
        "ld": [f"{CROSS_COMPILE}ld", "--version"],
        "make": ["make", "--version"],
        "ccache": ["ccache", "--version"],
    }.items():
        try:
            proc = subprocess.run(argv, capture_output=True, text=True)
            out[name] = (proc.stdout.splitlines() or ["?"])[0].strip()
        except FileNotFoundError:
            out[name] = "missing"
    return out
