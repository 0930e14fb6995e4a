"""The kernel build pipeline: inputs -> content key -> cached artifact.

``build_kernel(BuildRequest)``:

1. computes the artifact key from the inputs (tree content id, series content, config
   fragments and base target, toolchain versions, recipe version); if the artifact exists,
   returns it without running make at all;
2. materializes the pristine tree (once), makes a hard-link work tree, applies the series;
3. configures (``make tinyconfig``, ``merge_config.sh -m``, ``make olddefconfig``) and
   verifies every requested option;
4. builds ``Image`` and ``modules`` with ccache and -j<cores>, installs the modules into
   the staging directory (with modules.dep), collects vmlinux/System.map/config;
5. writes metadata.json (inputs and hashes, toolchain, per-phase durations, ccache stats,
   the exact commands and a reproduce.sh) and publishes the artifact with one rename.

A failed or interrupted build leaves nothing in the artifact cache; its log is kept under
``<cache>/logs/``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import click

from orchestrator import __version__, progress
from orchestrator.atomic import (
    atomic_write_json,
    atomic_write_text,
    discard_dir,
    publish_dir,
    sweep_stale_staging,
    sweep_trash,
)
from orchestrator.errors import BuildError, MmlabError
from orchestrator.hosttools import require_stage
from orchestrator.kernel import kconfig
from orchestrator.kernel.artifacts import METADATA, Artifact, artifact_dir
from orchestrator.kernel.kbuild import BUILD_SUBDIR, Kbuild, jobs, toolchain_versions
from orchestrator.kernel.sources import TreeSource, make_work_tree, resolve_tree, sha256_file
from orchestrator.paths import REPO_ROOT, cache_dir

# Bump when the recipe changes in a way that changes the artifacts for the same inputs.
RECIPE_VERSION = 1
TARGETS = ("Image", "modules")


@dataclass
class BuildRequest:
    tree: TreeSource
    fragments: list[kconfig.Fragment]
    series: list = field(default_factory=list)  # orchestrator.kernel.series.Series objects
    name: str | None = None
    base_target: str = field(default_factory=kconfig.base_target)
    jobs: int = field(default_factory=jobs)
    skipped_fragments: dict[str, str] = field(default_factory=dict)  # name -> why (gates)

    @classmethod
    def default(cls, fragments: str | list[str] | None = None) -> BuildRequest:
        tree = resolve_tree(None)
        return cls.for_tree(tree, fragments, name="baseline")

    @classmethod
    def for_tree(cls, tree: TreeSource, config: str | list[str] | None, **kw) -> BuildRequest:
        """A request whose fragments are resolved for the tree's kernel version (gates)."""
        frags, skipped = fragments_for(tree, config)
        return cls(tree=tree, fragments=frags, skipped_fragments=skipped, **kw)

    def inputs(self) -> dict:
        """Everything that determines the artifact's content (the key is its hash)."""
        return {
            "recipe": RECIPE_VERSION,
            "tree": {"kind": self.tree.kind, "key": self.tree.key()},
            "series": [series_identity(s) for s in self.series],
            "base_target": self.base_target,
            "fragments": [{"name": f.name, "sha256": f.sha256} for f in self.fragments],
            "toolchain": toolchain_versions(),
            "targets": list(TARGETS),
        }

    def key(self) -> str:
        blob = json.dumps(self.inputs(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def fragments_for(tree: TreeSource, config: str | list[str] | None
                  ) -> tuple[list[kconfig.Fragment], dict[str, str]]:
    """The config fragments for ``tree``: gated fragments outside the tree's version left out
    (returned as {name: why})."""
    version = tree.kernel_version()
    return (kconfig.resolve_fragments(config, version=version),
            kconfig.gate_skips(kconfig.fragment_names(config), version))


def series_identity(series) -> dict:
    return {
        "name": getattr(series, "name", None),
        "sha256": series.content_hash,
        "patches": [{"subject": p.subject, "sha256": p.content_hash} for p in series.patches],
    }


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.info(f"waiting for another build holding {path}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ccache_stats(stats_log: Path) -> dict[str, int]:
    """Per-build ccache counters from this build's own stats log (exact, not global).

    ccache writes one line per compilation (``# <source>`` then counter ids such as
    ``direct_cache_hit`` or ``cache_miss``); we add them up, plus hits/misses/hit_rate.
    """
    out: dict[str, int] = {}
    if not stats_log.is_file():
        return out
    for line in stats_log.read_text(errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out[line] = out.get(line, 0) + 1
    hits = out.get("direct_cache_hit", 0) + out.get("preprocessed_cache_hit", 0)
    misses = out.get("cache_miss", 0)
    out["hits"] = hits
    out["misses"] = misses
    return out


def _mmlab_revision() -> str | None:
    proc = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _build_id(vmlinux: Path) -> str | None:
    from orchestrator.kernel.elfinspect import read_info

    return read_info(vmlinux).build_id


def _comment(text: str) -> str:
    """Text safe inside a shell comment: no line breaks or other control characters (a
    tree path or series name with a newline would otherwise start a command)."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


def _reproducer(req: BuildRequest, commands: list[dict]) -> str:
    lines = ["#!/bin/sh", "# Rebuild this artifact from scratch (generated by mmlab).",
             "set -e", f"# tree: {_comment(req.tree.location)} ({req.tree.key()})"]
    for s in req.series:
        lines.append(f"# series: {_comment(getattr(s, 'name', '?'))} sha256 {s.content_hash}")
    lines.append("# Prepare the tree (extract it, apply the series) as `src`, then:")
    lines.append("cd src")
    envs = commands[0]["env"] if commands else {}
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(envs.items())]
    lines += [c["shell"] for c in commands]
    return "\n".join(lines) + "\n"


def _configure(kb: Kbuild, req: BuildRequest) -> dict[str, str]:
    kb.run(kb.make_argv(req.base_target), f"make {req.base_target}", stage="config")
    kb.run(["scripts/kconfig/merge_config.sh", "-m", "-O", BUILD_SUBDIR,
            f"{BUILD_SUBDIR}/.config", *[str(f.path) for f in req.fragments]],
           "merge fragments " + "+".join(f.name for f in req.fragments), stage="config")
    kb.run(kb.make_argv("olddefconfig"), "make olddefconfig", stage="config")
    return kconfig.verify(kb.src, kb.objtree / ".config", req.fragments, log_path=kb.log_path)


def check_config(req: BuildRequest) -> dict[str, str]:
    """Configure only (no compile) and verify the fragments; returns the final config.

    Takes ~15 s on a warm machine: a quick way to check a new fragment before a build.
    """
    require_stage("build")
    work = cache_dir("work") / f"config-{req.key()[:16]}-{os.getpid()}"
    log_path = cache_dir("logs") / f"config-{req.key()[:16]}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        src = make_work_tree(req.tree.pristine(), work)
        if req.series:
            from orchestrator.kernel.series import apply_series

            for s in req.series:
                apply_series(s, src)
        return _configure(Kbuild(src=src, log_path=log_path), req)
    finally:
        discard_dir(work)


def build_kernel(req: BuildRequest, *, rebuild: bool = False, keep_work: bool = False) -> Artifact:
    require_stage("build")
    key = req.key()
    final = artifact_dir(key)
    if (final / METADATA).is_file() and not rebuild:
        hit = _cached(final)
        if hit is not None:
            progress.info(f"build: cache hit {key[:12]} ({req.name or 'kernel'})")
            return hit

    with _lock(cache_dir("work") / f"{key}.lock"):
        sweep_trash(cache_dir("work"))
        if (final / METADATA).is_file() and not rebuild:
            hit = _cached(final)
            if hit is not None:
                return hit
        return _build_locked(req, key, final, keep_work)


def _cached(final: Path) -> Artifact | None:
    """The cached artifact, verified (sizes; sha256 in CI or with MMLAB_VERIFY=1); a corrupt
    one is removed (with a warning naming what is wrong) and built again."""
    from orchestrator.kernel.artifacts import CorruptArtifact

    try:
        art = Artifact.load(final)
        art.verify()
        return art
    except CorruptArtifact as exc:
        progress.info(f"warning: {exc}; building it again")
        discard_dir(final)
        return None


def _build_locked(req: BuildRequest, key: str, final: Path, keep_work: bool) -> Artifact:
    t_start = time.time()
    phases: dict[str, float] = {}
    for d in sweep_stale_staging(cache_dir("artifacts")):
        progress.info(f"build: removed {d.name}, left by a build that was killed")
    work = cache_dir("work") / key
    staging = cache_dir("artifacts") / f".staging-{key}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log_path = cache_dir("logs") / f"build-{key[:16]}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    stats_log = work / "ccache-stats.log"
    ok = False
    try:
        t = time.monotonic()
        pristine = req.tree.pristine()
        with progress.phase("build", "prepare work tree"):
            src = make_work_tree(pristine, work)
        phases["prepare"] = time.monotonic() - t

        t = time.monotonic()
        if req.series:
            from orchestrator.kernel.series import apply_series

            for s in req.series:
                with progress.phase("build", f"apply series {getattr(s, 'name', '')}"):
                    apply_series(s, src)
        phases["apply"] = time.monotonic() - t

        stats_log.unlink(missing_ok=True)
        kb = Kbuild(src=src, log_path=log_path, stats_log=stats_log)
        t = time.monotonic()
        _configure(kb, req)
        phases["config"] = time.monotonic() - t

        t = time.monotonic()
        kb.run(kb.make_argv(*TARGETS, jobs_=req.jobs), f"make -j{req.jobs} {' '.join(TARGETS)}")
        phases["make"] = time.monotonic() - t

        t = time.monotonic()
        obj = kb.objtree
        final_config = kconfig.parse_config_text((obj / ".config").read_text())
        if final_config.get("CONFIG_MODULES") == "y":
            kb.run(kb.make_argv("modules_install", INSTALL_MOD_PATH=str(staging / "modules"),
                                INSTALL_MOD_STRIP="1"), "make modules_install")
        else:
            (staging / "modules").mkdir()
        for name, rel in (("Image", "arch/arm64/boot/Image"), ("vmlinux", "vmlinux"),
                          ("System.map", "System.map"), ("config", ".config")):
            shutil.copy2(obj / rel, staging / name)
        release = (obj / "include" / "config" / "kernel.release").read_text().strip()
        for link in ("build", "source"):  # modules_install links back into the work tree
            (staging / "modules" / "lib" / "modules" / release / link).unlink(missing_ok=True)
        phases["collect"] = time.monotonic() - t

        files = {p.relative_to(staging).as_posix(): sha256_file(p)
                 for p in sorted(staging.rglob("*")) if p.is_file()}
        sizes = {rel: (staging / rel).stat().st_size for rel in files}
        metadata = {
            "schema": "mmlab.artifact/1",
            "key": key,
            "name": req.name,
            "release": release,
            "build_id": _build_id(staging / "vmlinux"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "inputs": req.inputs(),
            "tree": req.tree.describe(),
            "series": [series_identity(s) for s in req.series],
            "fragments": [{"name": f.name, "path": str(f.path), "sha256": f.sha256}
                          for f in req.fragments],
            "skipped_fragments": req.skipped_fragments,
            "kernel_version": req.tree.kernel_version(),
            "config_sha256": files["config"],
            "jobs": req.jobs,
            "durations_s": {k: round(v, 3) for k, v in phases.items()}
            | {"total": round(time.time() - t_start, 3)},
            "ccache": _ccache_stats(stats_log),
            "commands": kb.commands,
            "host": {"platform": platform.platform(), "python": sys.version.split()[0],
                     "mmlab": __version__, "mmlab_revision": _mmlab_revision()},
            "files": files,
            "sizes": sizes,
        }
        shutil.copy2(log_path, staging / "build.log")
        atomic_write_text(staging / "reproduce.sh", _reproducer(req, kb.commands))
        atomic_write_json(staging / METADATA, metadata)
        if final.exists():  # --rebuild: replace the old artifact
            shutil.rmtree(final)
        publish_dir(staging, final)
        ok = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if ok and not keep_work:
            discard_dir(work)
    art = Artifact.load(final)
    progress.info(f"build: {art.name} {art.release} -> {final} "
                  f"({metadata['durations_s']['total']:.0f}s)")
    return art


@click.command("build")
@click.option("--tree", default=None, help="Kernel tree: debian:6.12 (default), a directory, "
              "a tarball, or a git repository (with --ref).")
@click.option("--ref", default=None, help="Git ref to build when --tree is a git repository.")
@click.option("--series", "series_specs", multiple=True, help="Patch series to apply: a "
              "directory of *.patch, an mbox, a patch file, a saved mailing-list post, or a "
              "git range base..tip (in --tree). Repeatable: applied in order.")
@click.option("--config", "fragments", default="default", show_default=True,
              help="A fragment set from kernel_configs/sets.toml, or fragment names/paths "
              "separated by commas.")
@click.option("--name", default=None, help="A label for this kernel (e.g. baseline).")
@click.option("-j", "--jobs", "jobs_", type=int, default=None, help="make -j (default: cores)")
@click.option("--rebuild", is_flag=True, help="Build even when the artifact is cached.")
@click.option("--keep-work", is_flag=True, help="Keep the work tree (for debugging).")
@click.option("--check-config", "check_config_only", is_flag=True, help="Only configure and verify the fragments "
              "(no compile).")
@click.option("--json", "as_json", is_flag=True, help="Print the artifact metadata as JSON.")
def build_command(tree, ref, series_specs, fragments, name, jobs_, rebuild, keep_work,
                  check_config_only, as_json):
    """Build an arm64 kernel (Image, vmlinux, modules) into the artifact cache."""
    from orchestrator.kernel.releases import report, tree_for_series

    if len(series_specs) == 1 and ref is None:
        tree, notes = tree_for_series(series_specs[0], tree)
        report(notes)
    source = resolve_tree(tree, ref)
    series = [load_series_spec(s, source) for s in series_specs]
    req = BuildRequest.for_tree(source, fragments, series=series,
                                name=name or ("patched" if series else "baseline"))
    if jobs_:
        req.jobs = jobs_
    if check_config_only:
        final = check_config(req)
        click.echo(f"config ok: {len(kconfig.requested(req.fragments))} requested options all "
                   f"set ({len(final)} options in the final .config)")
        return
    art = build_kernel(req, rebuild=rebuild, keep_work=keep_work)
    if as_json:
        click.echo(json.dumps(art.metadata, indent=2, sort_keys=True))
    else:
        m = art.metadata
        click.echo(f"artifact  {art.path}")
        click.echo(f"key       {art.key}")
        click.echo(f"release   {art.release}")
        click.echo(f"build-id  {art.build_id}")
        click.echo(f"Image     {art.image}")
        tvm = art.module("test_vmalloc")
        click.echo(f"modules   {art.modules_dir}" + (f" (test_vmalloc: {tvm.name})" if tvm else ""))
        click.echo(f"took      {m['durations_s']['total']:.1f}s when built "
                   f"(make {m['durations_s'].get('make', 0):.1f}s)")


def load_series_spec(spec: str, tree: TreeSource | None = None):
    """A --series argument as a Series (see orchestrator.kernel.series)."""
    from orchestrator.kernel import series as series_mod

    repo = getattr(tree, "repo", None) or getattr(tree, "path", None)
    try:
        return series_mod.load_series(spec, repo=repo)
    except MmlabError:
        raise
    except OSError as exc:
        raise BuildError(f"cannot read series {spec}: {exc}") from exc
