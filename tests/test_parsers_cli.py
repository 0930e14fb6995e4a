"""`mmlab parse`: the parsers on saved files, JSON on stdout, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data" / "parsers"


def mmlab(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


def test_parse_dmesg_real_log():
    p = mmlab("parse", "dmesg", str(DATA / "real_boot_612.log"))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["crashed"] and out["by_kind"] == {"alloc_failure": 1, "panic": 1}
    assert out["wx"]["passed"] is True


def test_parse_test_vmalloc_from_stdin():
    text = (DATA / "vmalloc_cut_short.log").read_text()
    p = mmlab("parse", "test_vmalloc", "-", "--nr-threads", "2", stdin=text)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["complete"] is False and out["runs"][0]["problems"]


def test_parse_ptdump_rejects_x86_with_one_line_error():
    p = mmlab("parse", "ptdump", str(DATA / "ptdump_x86.txt"))
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("mmlab: error: ") and "Traceback" not in p.stderr
    assert "not an arm64 kernel page-table dump" in p.stderr and "mmlab: hint:" in p.stderr


def test_parse_ptdump_entries():
    p = mmlab("parse", "ptdump", str(DATA / "real_ptdump_boot_612.txt"), "--entries")
    out = json.loads(p.stdout)
    assert out["dumps"] == 1 and out["per_dump"][0]["sections"][0]["entries"]
