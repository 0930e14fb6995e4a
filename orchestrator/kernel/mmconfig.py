"""The mm-relevant configuration of built kernels, side by side (``mm_config.toml``).

A comparison across releases (6.12 -> 7.3) or configs differs in more than code: LL/SC vs
LSE atomics, a block- vs page-mapped linear map, vmalloc-huge on or off. ``table()`` reads
each kernel's resolved .config into one label per property; ``differences()`` names the
properties whose labels differ and says what that does to the measurements, for the report's
warnings.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from orchestrator.kernel.kconfig import parse_config_text

DATA = Path(__file__).with_name("mm_config.toml")


@dataclass(frozen=True)
class Property:
    name: str
    options: tuple[str, ...]
    values: dict[str, str]
    affects: str

    def label(self, config: dict[str, str]) -> tuple[str, str | None]:
        """(label, the option that decided it)."""
        for opt in self.options:
            val = config.get(opt, "absent")
            for key in (f"{opt}={val}", val, "*"):
                if key in self.values:
                    text = self.values[key].replace("$value", val.strip('"'))
                    if text:
                        return text, opt
                    break
        return "?", None


def properties() -> list[Property]:
    data = tomllib.loads(DATA.read_text())
    return [Property(p["name"], tuple(p["options"]), dict(p["values"]), p.get("affects", ""))
            for p in data["property"]]


def read_config(text: str) -> dict[str, str]:
    return parse_config_text(text, keep_unset=True)


def table(configs: dict[str, str]) -> list[dict]:
    """Rows {property, affects, values: {kernel: label}, options: {kernel: option}} for the
    kernels' .config texts ({kernel: text})."""
    parsed = {k: read_config(t) for k, t in configs.items()}
    rows = []
    for prop in properties():
        labels = {k: prop.label(c) for k, c in parsed.items()}
        rows.append({"property": prop.name, "affects": prop.affects,
                     "values": {k: v[0] for k, v in labels.items()},
                     "options": {k: v[1] for k, v in labels.items()},
                     "differs": len({v[0] for v in labels.values()}) > 1})
    return rows


def differences(rows: list[dict], kernels: list[str] | None = None) -> list[str]:
    """One warning per property that matters and differs between the kernels."""
    out = []
    for row in rows:
        vals = {k: v for k, v in row["values"].items() if kernels is None or k in kernels}
        if row["affects"] and len(set(vals.values())) > 1:
            which = ", ".join(f"{k}: {v}" for k, v in vals.items())
            out.append(f"the kernels differ in {row['property']} ({which}): {row['affects']}; "
                       "differences between them are not only the code's")
    return out
