"""`mmlab parse`: the parsers on saved files, JSON on stdout, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.fault('huge and binary inputs to mmlab parse', 'refused before parsing', '2')
def test_parse_refuses_binary_and_oversized_input_before_parsing(tmp_path):
    """200 MB of random bytes took 58 s and 3.5 GB and exited 0: now refused up front."""
    import os

    blob = tmp_path / "random.bin"
    blob.write_bytes(os.urandom(2_000_000))
    r = mmlab("parse", "dmesg", str(blob))
    assert r.returncode == 2 and "is not text" in r.stderr and "Traceback" not in r.stderr
    big = tmp_path / "big.log"
    big.write_text("[    1.000000] hello\n" * 60_000)          # ~1.3 MB of text
    r = mmlab("parse", "dmesg", str(big), "--max-mb", "1")
    assert r.returncode == 2 and "larger than 1 MB" in r.stderr


def test_parse_ktap():
    r = mmlab("parse", "ktap", str(Path(__file__).parent / "data" / "ktap" /
                                   "test_kernel_panic_interrupt.log"))
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["status"] == "incomplete" and out["counts"]["pass"] == 8
