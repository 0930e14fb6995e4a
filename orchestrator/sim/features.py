"""Kernel features and variants, loaded from the TOML data files beside this module.

A *feature* is one real kernel change (or a deliberately injected fault); a *variant* is a
named set of features. Variant specs compose: ``"v6.12+vmap_contpte-linear_map_single_fixmap"``
is v6.12 with one feature added and one removed, so the comparison stage can model a
baseline plus whatever series it applied without a new data file.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from orchestrator.errors import InputError

DATA_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Feature:
    id: str
    title: str
    commit: str = ""
    release: str = "-"
    seed: str = ""
    subjects: tuple[str, ...] = ()
    removed_by: tuple[str, ...] = ()  # subjects of patches that take the feature out
    files: tuple[str, ...] = ()
    effect: str = ""
    note: str = ""
    fault: bool = False


@dataclass(frozen=True)
class Variant:
    name: str
    features: frozenset[str]
    description: str = ""
    shipped: bool = False
    expect_unsafe: str = ""
    spec: str = ""

    def has(self, feature: str) -> bool:
        return feature in self.features

    @property
    def nesting(self) -> str:
        """How the arm64 hooks treat a nested lazy section: none/flag/full/generic."""
        if "arm64_lazy_mmu_batching" not in self.features:
            return "none"
        if "lazy_mmu_generic_nesting" in self.features:
            return "generic"
        if "lazy_mmu_full_nesting_arm64" in self.features:
            return "full"
        return "flag"

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "spec": self.spec or self.name,
            "features": sorted(self.features),
            "description": self.description,
        }


@lru_cache(maxsize=1)
def features() -> dict[str, Feature]:
    raw = tomllib.loads((DATA_DIR / "features.toml").read_text())
    out = {}
    for fid, d in raw.items():
        out[fid] = Feature(
            id=fid,
            title=d["title"],
            commit=d.get("commit", ""),
            release=d.get("release", "-"),
            seed=d.get("seed", ""),
            subjects=tuple(d.get("subjects", ())),
            removed_by=tuple(d.get("removed_by", ())),
            files=tuple(d.get("files", ())),
            effect=d.get("effect", ""),
            note=d.get("note", ""),
            fault=bool(d.get("fault", False)),
        )
    return out


@lru_cache(maxsize=1)
def _variant_table() -> dict[str, dict]:
    return tomllib.loads((DATA_DIR / "variants.toml").read_text())


def variant_names(shipped_only: bool = False) -> list[str]:
    t = _variant_table()
    return [n for n, d in t.items() if d.get("shipped") or not shipped_only]


def _feature_set(name: str, seen: tuple[str, ...] = ()) -> frozenset[str]:
    table = _variant_table()
    if name not in table:
        raise InputError(
            f"unknown kernel variant {name!r}",
            hint=f"known variants: {', '.join(table)}; or compose one, e.g. 'v6.12+vmap_contpte'",
        )
    if name in seen:
        raise InputError(f"variant {name!r} inherits from itself", hint="fix variants.toml")
    d = table[name]
    feats = set(_feature_set(d["base"], seen + (name,))) if "base" in d else set()
    feats |= set(d.get("features", ()))
    feats |= set(d.get("add", ()))
    feats -= set(d.get("remove", ()))
    unknown = feats - set(features())
    if unknown:
        raise InputError(
            f"variant {name!r} names unknown features {sorted(unknown)}",
            hint="fix orchestrator/sim/variants.toml",
        )
    return frozenset(feats)


_SPEC_RE = re.compile(r"([+-])([A-Za-z0-9_]+)")


def resolve_variant(spec: str | Variant | dict) -> Variant:
    """A Variant from a name, a ``name+feat-feat`` spec, or {"base":..,"add":[..],"remove":[..]}."""
    if isinstance(spec, Variant):
        return spec
    table = _variant_table()
    if isinstance(spec, dict):
        base = spec.get("base")
        feats = set(_feature_set(base)) if base else set()
        feats |= set(spec.get("features", ())) | set(spec.get("add", ()))
        feats -= set(spec.get("remove", ()))
        unknown = feats - set(features())
        if unknown:
            raise InputError(
                f"unknown features {sorted(unknown)}",
                hint=f"known features: {', '.join(features())}",
            )
        name = spec.get("name") or _describe(base, spec)
        return Variant(name=name, features=frozenset(feats), spec=name)
    spec = spec.strip()
    if spec in table:
        d = table[spec]
        return Variant(
            spec,
            _feature_set(spec),
            d.get("description", ""),
            bool(d.get("shipped")),
            d.get("expect_unsafe", ""),
            spec,
        )
    # longest known variant name that prefixes the spec, then +feat/-feat edits
    base = max((n for n in table if spec.startswith(n)), key=len, default=None)
    if base is None:
        raise InputError(
            f"unknown kernel variant {spec!r}", hint=f"known variants: {', '.join(table)}"
        )
    rest = spec[len(base) :]
    edits = _SPEC_RE.findall(rest)
    if "".join(s + f for s, f in edits) != rest:
        raise InputError(
            f"cannot parse variant spec {spec!r}",
            hint="use NAME, or NAME+feature-feature (features from features.toml)",
        )
    feats = set(_feature_set(base))
    for sign, f in edits:
        if f not in features():
            raise InputError(
                f"unknown feature {f!r} in variant spec {spec!r}",
                hint=f"known features: {', '.join(features())}",
            )
        (feats.add if sign == "+" else feats.discard)(f)
    return Variant(spec, frozenset(feats), f"{base} with {rest}", False, "", spec)


def _describe(base: str | None, spec: dict) -> str:
    s = base or "custom"
    for f in spec.get("add", ()) or spec.get("features", ()):
        s += f"+{f}"
    for f in spec.get("remove", ()):
        s += f"-{f}"
    return s
