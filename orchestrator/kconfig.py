"""Kernel config fragments: naming, merging and verifying.

Fragments are data files in ``kernel_configs/`` (``NAME.config``); named sets of them are
in ``kernel_configs/sets.toml``. A user can also name a fragment file by path.

After ``make <base_target>`` + ``merge_config.sh -m`` + ``make olddefconfig``, every option
a fragment asked for must be in the final ``.config``. An option that did not stick is a
:class:`ConfigError` that says why when the Kconfig files tell: the option does not exist,
or which of its ``depends on`` symbols (including enclosing ``if`` blocks and menus) is not
set.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ConfigError, InputError
from orchestrator.paths import KERNEL_CONFIGS

_OPT = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class Fragment:
    name: str
    path: Path
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def options(self) -> dict[str, str]:
        """{CONFIG_X: value}; '# CONFIG_X is not set' becomes 'n'."""
        return parse_config_text(self.text, keep_unset=True)


def parse_config_text(text: str, keep_unset: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for _lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        m = _OPT.match(line)
        if m:
            out[m.group(1)] = m.group(2)
            continue
        m = _UNSET.match(line)
        if m:
            if keep_unset:
                out[m.group(1)] = "n"
            continue
    return out


def _sets() -> dict:
    return tomllib.loads((KERNEL_CONFIGS / "sets.toml").read_text())


def base_target() -> str:
    return _sets()["base_target"]


def available() -> list[str]:
    return sorted(p.stem for p in KERNEL_CONFIGS.glob("*.config"))


def set_names() -> list[str]:
    return sorted(_sets()["sets"])


def load_fragment(name_or_path: str) -> Fragment:
    p = Path(name_or_path)
    if p.suffix == ".config" and p.is_file():
        path = p.resolve()
    else:
        path = KERNEL_CONFIGS / f"{name_or_path}.config"
    if not path.is_file():
        raise InputError(
            f"unknown config fragment {name_or_path!r}",
            hint=f"use one of {', '.join(available())}, or a path to a .config fragment",
        )
    text = path.read_text()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#") and not _OPT.match(line):
            raise InputError(f"{path}:{lineno}: not a config line: {line!r}",
                             hint="fragment lines are CONFIG_X=value or '# CONFIG_X is not set'")
    return Fragment(name=path.stem, path=path, text=text)


def resolve_fragments(spec: str | list[str] | None) -> list[Fragment]:
    """A set name ('default'), a comma-separated list, or a list of names/paths."""
    if spec is None:
        spec = "default"
    if isinstance(spec, str):
        sets = _sets()["sets"]
        names = sets[spec] if spec in sets else [s for s in spec.split(",") if s]
    else:
        names = list(spec)
    if not names:
        raise InputError("no config fragments given", hint=f"use a set: {', '.join(set_names())}")
    return [load_fragment(n) for n in names]


def requested(fragments: list[Fragment]) -> dict[str, tuple[str, str]]:
    """{CONFIG_X: (value, fragment name)}, later fragments winning."""
    out: dict[str, tuple[str, str]] = {}
    for frag in fragments:
        for k, v in frag.options().items():
            out[k] = (v, frag.name)
    return out


# --- Kconfig dependency scan (only what is needed to explain a missing option) ---------

_KCONFIG_ENTRY = re.compile(r"^\s*(menu)?config\s+([A-Za-z0-9_]+)\s*$")
_DEPENDS = re.compile(r"^\s*depends\s+on\s+(.+?)\s*(#.*)?$")
_IF = re.compile(r"^\s*if\s+(.+?)\s*(#.*)?$")
_ENDIF = re.compile(r"^\s*endif\b")
_MENU = re.compile(r"^\s*menu\s+\"")
_ENDMENU = re.compile(r"^\s*endmenu\b")
_SYMBOL = re.compile(r"\b([A-Z][A-Z0-9_]+)\b")
_SOURCE = re.compile(r'^\s*(?:o|r|or)?source\s+"([^"]+)"')


def kconfig_dependencies(src: Path, symbol: str) -> list[tuple[str, list[str]]] | None:
    """For every definition of ``symbol``: (file:line, [dependency expressions]).

    Follows ``source`` statements from the top-level Kconfig with SRCARCH=arm64, tracking
    enclosing ``if`` blocks and ``menu ... depends on``. Returns None if the symbol is not
    defined anywhere (an unknown option).
    """
    results: list[tuple[str, list[str]]] = []
    seen: set[Path] = set()

    def walk(path: Path, inherited: list[str]) -> None:
        if path in seen or not path.is_file():
            return
        seen.add(path)
        stack: list[tuple[str, str | None]] = []  # ("if"|"menu", expr)
        current: tuple[str, list[str]] | None = None
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            m = _SOURCE.match(line)
            if m:
                rel = m.group(1).replace("$(SRCARCH)", "arm64")
                conds = inherited + [e for _, e in stack if e]
                for sub in sorted(src.glob(rel)) if "*" in rel else [src / rel]:
                    walk(sub, conds)
                continue
            if _ENDIF.match(line) or _ENDMENU.match(line):
                if stack:
                    stack.pop()
                current = None
                continue
            m = _IF.match(line)
            if m and not line.startswith("\t") and not line.startswith(" "):
                stack.append(("if", m.group(1)))
                current = None
                continue
            if _MENU.match(line):
                stack.append(("menu", None))
                current = ("menu", [])
                continue
            m = _KCONFIG_ENTRY.match(line)
            if m:
                if m.group(2) == symbol:
                    conds = inherited + [e for _, e in stack if e]
                    rel = path.relative_to(src)
                    results.append((f"{rel}:{lineno}", list(conds)))
                    current = ("sym", results[-1][1])
                else:
                    current = None
                continue
            m = _DEPENDS.match(line)
            if m and current is not None:
                if current[0] == "menu" and stack:
                    stack[-1] = ("menu", m.group(1))
                elif current[0] == "sym":
                    current[1].append(m.group(1))

    walk(src / "Kconfig", [])
    return results or None


def explain_missing(src: Path, option: str, final: dict[str, str]) -> str:
    symbol = option.removeprefix("CONFIG_")
    deps = kconfig_dependencies(src, symbol)
    if deps is None:
        return f"{option} does not exist in this tree's Kconfig (misspelt, or removed)"
    unmet: list[str] = []
    for _where, exprs in deps:
        for expr in exprs:
            for sym in _SYMBOL.findall(expr):
                if sym in ("y", "m", "n") or sym == symbol:
                    continue
                val = final.get(f"CONFIG_{sym}", "n")
                if val == "n" and f"!{sym}" not in expr.replace(" ", ""):
                    unmet.append(f"CONFIG_{sym}")
    unmet = sorted(set(unmet))
    where = deps[0][0]
    if unmet:
        return (f"{option} ({where}) depends on {', '.join(unmet)}, which "
                f"{'is' if len(unmet) == 1 else 'are'} not set")
    exprs = "; ".join(e for _, es in deps for e in es) or "no dependencies"
    return f"{option} ({where}) did not stick (its dependencies: {exprs})"


def verify(src: Path, config_path: Path, fragments: list[Fragment]) -> dict[str, str]:
    """Check every requested option in the final .config; raise one ConfigError if not."""
    final = parse_config_text(config_path.read_text())
    problems = []
    for option, (want, frag) in requested(fragments).items():
        have = final.get(option, "n")
        if want.strip('"') == have.strip('"'):
            continue
        why = explain_missing(src, option, final)
        problems.append(f"{option}={want} (fragment {frag}) became {have}: {why}")
    if problems:
        raise ConfigError(
            problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            hint="add the missing dependency to a fragment in kernel_configs/ "
                 "(every problem: see the build log)",
        )
    return final
