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


def _sets(path: Path | None = None) -> dict:
    """sets.toml, checked completely: known keys only, every set member an existing
    fragment, every gate naming a fragment with a valid ``versions`` and a ``why``."""
    path = path or KERNEL_CONFIGS / "sets.toml"
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where} is not valid TOML: {exc}", hint="fix the file") from None
    hint = "see the comments in kernel_configs/sets.toml"
    unknown = set(data) - {"base_target", "sets", "gates"}
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: "
                         "base_target, sets, gates)", hint=hint)
    if not isinstance(data.get("base_target"), str) or not isinstance(data.get("sets"), dict):
        raise InputError(f"{where}: needs base_target = \"...\" and a [sets] table", hint=hint)
    known = {p.stem for p in path.parent.glob("*.config")}
    for name, members in data["sets"].items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise InputError(f"{where}: set {name!r} must be a list of fragment names", hint=hint)
        missing = [m for m in members if m not in known]
        if missing:
            raise InputError(f"{where}: set {name!r} names unknown fragment(s) "
                             f"{', '.join(missing)}", hint=f"fragments: {', '.join(sorted(known))}")
    for name, gate in data.get("gates", {}).items():
        if name not in known:
            raise InputError(f"{where}: gate for unknown fragment {name!r}", hint=hint)
        if not isinstance(gate, dict) or set(gate) - {"versions", "why"} or \
                not isinstance(gate.get("versions"), str) or not gate.get("why"):
            raise InputError(f"{where}: gate {name!r} needs exactly versions = \"...\" and "
                             "why = \"...\"", hint=hint)
        version_matches(gate["versions"], "6.12")  # the comparison syntax, checked now
    return data


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


def parse_version(text: str) -> tuple[int, int]:
    m = re.match(r"^\s*(\d+)\.(\d+)", text)
    if not m:
        raise InputError(f"not a kernel version: {text!r}", hint="write it as X.Y, e.g. 7.3")
    return int(m.group(1)), int(m.group(2))


_CMP = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b, "==": lambda a, b: a == b}


def version_matches(spec: str, version: str) -> bool:
    """``spec`` is comparisons joined by commas (">= 6.18, < 7.1") on VERSION.PATCHLEVEL."""
    have = parse_version(version)
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(<=|>=|<|>|==)\s*(\d+\.\d+)\s*", part)
        if not m:
            raise InputError(f"bad version gate {spec!r} in {KERNEL_CONFIGS / 'sets.toml'}",
                             hint="write comparisons like '>= 6.18, < 7.1'")
        if not _CMP[m.group(1)](have, parse_version(m.group(2))):
            return False
    return True


def gates() -> dict[str, dict]:
    return _sets().get("gates", {})


def gate_skips(names: list[str], version: str | None) -> dict[str, str]:
    """{fragment: why it is skipped} for the gated fragments ``version`` is outside of."""
    if version is None:
        return {}
    out = {}
    for name in names:
        gate = gates().get(name)
        if gate and not version_matches(gate["versions"], version):
            out[name] = f"needs {gate['versions']} ({gate.get('why', 'no reason given')})"
    return out


def resolve_fragments(spec: str | list[str] | None, version: str | None = None
                      ) -> list[Fragment]:
    """A set name ('default'), a comma-separated list, or a list of names/paths.

    With the tree's ``version`` (X.Y), gated fragments outside their range are left out
    (see sets.toml [gates]); without it, every fragment is kept.
    """
    names = fragment_names(spec)
    skip = gate_skips(names, version)
    return [load_fragment(n) for n in names if n not in skip]


def fragment_names(spec: str | list[str] | None) -> list[str]:
    """The fragment names (or paths) a set name, a comma-separated list or a list stands for."""
    if spec is None:
        spec = "default"
    if isinstance(spec, str):
        sets = _sets()["sets"]
        names = sets[spec] if spec in sets else [s for s in spec.split(",") if s]
    else:
        names = list(spec)
    if not names:
        raise InputError("no config fragments given", hint=f"use a set: {', '.join(set_names())}")
    return names


def requested(fragments: list[Fragment]) -> dict[str, tuple[str, str]]:
    """{CONFIG_X: (value, fragment name)}, later fragments winning."""
    out: dict[str, tuple[str, str]] = {}
    for frag in fragments:
        for k, v in frag.options().items():
            out[k] = (v, frag.name)
    return out


# --- Kconfig scan (only what is needed to explain a missing option) -----------------------

_KCONFIG_ENTRY = re.compile(r"^\s*(menu)?config\s+([A-Za-z0-9_]+)\s*$")
_DEPENDS = re.compile(r"^\s*depends\s+on\s+(.+?)\s*(#.*)?$")
_IF = re.compile(r"^\s*if\s+(.+?)\s*(#.*)?$")
_ENDIF = re.compile(r"^\s*endif\b")
_MENU = re.compile(r"^\s*menu\s+\"")
_ENDMENU = re.compile(r"^\s*endmenu\b")
_SYMBOL = re.compile(r"\b([A-Z][A-Z0-9_]+)\b")
_SOURCE = re.compile(r'^\s*(?:o|r|or)?source\s+"([^"]+)"')
_PROMPT = re.compile(r'^\s+(?:bool|tristate|string|int|hex|prompt|def_bool|def_tristate)\s+"([^"]+)"')


@dataclass
class KconfigEntry:
    where: str               # file:line of the `config` line
    depends: list[str]       # dependency expressions, enclosing if/menu blocks included
    prompt: str | None = None


_SCAN_CACHE: dict[Path, dict[str, list[KconfigEntry]]] = {}


def scan_kconfig(src: Path) -> dict[str, list[KconfigEntry]]:
    """Every symbol definition of the tree (SRCARCH=arm64): where, dependencies, prompt.

    Follows ``source`` statements from the top-level Kconfig, tracking enclosing ``if``
    blocks and ``menu ... depends on``. About a second for a whole tree; remembered.
    """
    src = src.resolve()
    if src in _SCAN_CACHE:
        return _SCAN_CACHE[src]
    table: dict[str, list[KconfigEntry]] = {}
    seen: set[Path] = set()

    def walk(path: Path, inherited: list[str]) -> None:
        if path in seen or not path.is_file():
            return
        seen.add(path)
        stack: list[tuple[str, str | None]] = []  # ("if"|"menu", expr)
        current: tuple[str, object] | None = None
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
                current = ("menu", None)
                continue
            m = _KCONFIG_ENTRY.match(line)
            if m:
                conds = inherited + [e for _, e in stack if e]
                entry = KconfigEntry(f"{path.relative_to(src)}:{lineno}", list(conds))
                table.setdefault(m.group(2), []).append(entry)
                current = ("sym", entry)
                continue
            if current is not None and current[0] == "sym":
                pm = _PROMPT.match(line)
                if pm and current[1].prompt is None:
                    current[1].prompt = pm.group(1)
                    continue
            m = _DEPENDS.match(line)
            if m and current is not None:
                if current[0] == "menu" and stack:
                    stack[-1] = ("menu", m.group(1))
                elif current[0] == "sym":
                    current[1].depends.append(m.group(1))

    walk(src / "Kconfig", [])
    _SCAN_CACHE[src] = table
    return table


def kconfig_dependencies(src: Path, symbol: str) -> list[tuple[str, list[str]]] | None:
    """For every definition of ``symbol``: (file:line, [dependency expressions]); None if
    the symbol is not defined anywhere (an unknown option)."""
    entries = scan_kconfig(src).get(symbol)
    return [(e.where, list(e.depends)) for e in entries] if entries else None


# Prompts of the options mmlab's fragments name, as the default tree (6.12) words them: a
# tree that no longer has an option is searched for another symbol with the same prompt
# (a rename, e.g. PROC_SYSCTL -> SYSCTL in 7.x). Regenerate with
# `python -m orchestrator.kernel.kconfig prompts /path/to/linux-6.12`.
PROMPTS_FILE = KERNEL_CONFIGS / "prompts.toml"


def known_prompt(symbol: str, src: Path | None = None) -> str | None:
    """The prompt ``symbol`` had where mmlab last knew it: prompts.toml, else any other
    pristine tree in the cache that defines it."""
    try:
        known = tomllib.loads(PROMPTS_FILE.read_text()).get("prompts", {})
    except FileNotFoundError:
        known = {}
    if symbol in known:
        return known[symbol]
    from orchestrator.paths import cache_dir

    for other in sorted(cache_dir("trees").glob("*/src")):
        if src is not None and other.resolve() == src.resolve():
            continue
        for e in scan_kconfig(other).get(symbol, []):
            if e.prompt:
                return e.prompt
    return None


def renamed_to(src: Path, symbol: str) -> tuple[str, str] | None:
    """(new symbol, prompt) when this tree lacks ``symbol`` but defines one with its prompt."""
    prompt = known_prompt(symbol, src)
    if not prompt:
        return None
    norm = " ".join(prompt.lower().split())
    for sym, entries in scan_kconfig(src).items():
        if sym != symbol and any(e.prompt and " ".join(e.prompt.lower().split()) == norm
                                 for e in entries):
            return sym, prompt
    return None


def explain_missing(src: Path, option: str, final: dict[str, str]) -> str:
    symbol = option.removeprefix("CONFIG_")
    deps = kconfig_dependencies(src, symbol)
    if deps is None:
        renamed = renamed_to(src, symbol)
        if renamed:
            return (f"{option} does not exist in this tree: renamed, CONFIG_{renamed[0]} has its "
                    f"prompt \"{renamed[1]}\"")
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


def verify(src: Path, config_path: Path, fragments: list[Fragment],
           log_path: Path | None = None) -> dict[str, str]:
    """Check every requested option in the final .config; raise one ConfigError if not.

    Every problem is written to ``log_path`` (the build log), not only the first; the hint
    depends on what went wrong: a missing dependency, or an option this tree does not have
    (renamed or removed: gate the fragment by kernel version in sets.toml).
    """
    final = parse_config_text(config_path.read_text())
    problems: list[str] = []
    absent = False
    for option, (want, frag) in requested(fragments).items():
        have = final.get(option, "n")
        if want.strip('"') == have.strip('"'):
            continue
        why = explain_missing(src, option, final)
        absent = absent or "does not exist in this tree" in why
        problems.append(f"{option}={want} (fragment {frag}) became {have}: {why}")
    if problems:
        if log_path is not None:
            with open(log_path, "a") as fh:
                fh.write(f"\n=== mmlab: {len(problems)} config problem(s) ===\n")
                fh.writelines(p + "\n" for p in problems)
        if absent:
            hint = ("this tree lacks an option a fragment names: put it in a fragment with a "
                    "version gate (kernel_configs/sets.toml [gates]) and the new name in another")
        else:
            hint = "add the missing dependency to a fragment in kernel_configs/"
        raise ConfigError(
            problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            hint=hint + ("; every problem is listed at the end of the log" if log_path else ""),
            log=str(log_path) if log_path else None,
        )
    return final


def prompts_for_fragments(src: Path) -> dict[str, str]:
    """{SYMBOL: prompt} in ``src`` for every option any fragment in kernel_configs/ names."""
    table = scan_kconfig(src)
    out: dict[str, str] = {}
    for name in available():
        for opt in load_fragment(name).options():
            sym = opt.removeprefix("CONFIG_")
            prompt = next((e.prompt for e in table.get(sym, []) if e.prompt), None)
            if prompt:
                out[sym] = prompt
    return dict(sorted(out.items()))


def _main(argv: list[str]) -> int:
    """``python -m orchestrator.kernel.kconfig prompts TREE``: regenerate prompts.toml."""
    import json
    import sys

    if len(argv) != 2 or argv[0] != "prompts":
        print("usage: python -m orchestrator.kernel.kconfig prompts /path/to/linux-tree", file=sys.stderr)
        return 2
    src = Path(argv[1])
    from orchestrator.kernel.sources import makefile_version

    version = makefile_version((src / "Makefile").read_text())
    lines = [
        "# Kconfig prompts of the options mmlab's fragments name, as Linux "
        f"{version} words them.",
        "# When a tree lacks an option (renamed or removed), mmlab looks for a symbol with the",
        "# same prompt there and names it in the error (orchestrator/kernel/kconfig.py, renamed_to).",
        "# Generated: python -m orchestrator.kernel.kconfig prompts /path/to/linux-" + version,
        "", "[prompts]",
    ]
    lines += [f"{sym} = {json.dumps(p)}" for sym, p in prompts_for_fragments(src).items()]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
