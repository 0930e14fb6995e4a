"""guest_tests/ scripts, run for real in a booted guest (one boot for the whole module).

Loop counts are cut down (test_loop_count=...) so each run takes seconds under TCG; the
modes, parameter handling and loading path are the real ones.
"""

from __future__ import annotations

import re

import pytest

from orchestrator.parsers.ptdump import parse_ptdump
from orchestrator.parsers.test_vmalloc import parse_test_vmalloc
from orchestrator.targets.qemu import QemuTarget

pytestmark = [pytest.mark.boot, pytest.mark.kernel]


@pytest.fixture(scope="module")
def session(kernel_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("guest-tests") / "console.log"
    s = QemuTarget("default").boot(kernel_artifact, console_log=log)
    yield s
    s.shutdown()


def _status_line(output: str, prefix: str) -> dict[str, str]:
    """The key=value pairs of the last line starting with ``prefix``."""
    line = [ln for ln in output.splitlines() if ln.startswith(prefix)][-1]
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def test_one_loader_run_gives_one_set_of_summaries_busybox_insmod_two(session):
    params = "run_test_mask=1 nr_pages=4 test_loop_count=50"
    res = session.run(f"vmalloc.sh --direct {params}", timeout=120)
    assert res.ok, res.output
    assert "finit_module = -11 (EAGAIN)" in res.output
    parsed = parse_test_vmalloc(res.output)
    assert len(parsed.runs) == 1
    assert [t.name for w in parsed.runs[0].workers for t in w.tests] == ["fix_size_alloc_test"]
    assert res.output.count("All test took") == 1

    # The trap the loader avoids: busybox insmod retries with init_module() after -EAGAIN.
    res = session.run(
        "echo mmlab-insmod-mark > /dev/kmsg; "
        f"insmod /lib/modules/$(uname -r)/kernel/lib/test_vmalloc.ko {params}; "
        "dmesg | sed -n '/mmlab-insmod-mark/,$p'", timeout=120)
    assert "Resource temporarily unavailable" in res.output
    assert len(parse_test_vmalloc(res.output).runs) == 2
    assert res.output.count("All test took") == 2


def test_smoke_mode_runs_every_test_once_per_repeat(session):
    res = session.run("vmalloc.sh smoke test_loop_count=100 test_repeat_count=1", timeout=300)
    assert res.ok, res.output
    assert "mode=smoke" in res.output
    assert "params=test_loop_count=100 test_repeat_count=1" in res.output
    parsed = parse_test_vmalloc(res.output)
    assert len(parsed.runs) == 1 and parsed.complete
    names = {t.name for w in parsed.runs[0].workers for t in w.tests}
    assert {"fix_size_alloc_test", "align_shift_alloc_test", "vm_map_ram_test"} <= names
    status = _status_line(res.output, "mmlab-vmalloc: load_status=")
    assert res.output.count("mmlab-vmalloc: load_status=11 ") == 1
    assert status["failed_tests"] == "0"


def test_performance_mode_keeps_its_parameters_and_takes_overrides(session):
    res = session.run("vmalloc.sh performance run_test_mask=1 test_loop_count=20", timeout=120)
    assert res.ok, res.output
    assert ("params=sequential_test_order=1 test_repeat_count=3 run_test_mask=1 "
            "test_loop_count=20") in res.output
    assert "repeat: 3 loops: 20" in res.output


def test_direct_run_passes_explicit_parameters_verbatim(session):
    res = session.run("vmalloc.sh --direct run_test_mask=1 nr_pages=256 use_huge=0 "
                      "test_loop_count=30 test_repeat_count=2", timeout=120)
    assert res.ok, res.output
    assert "params=run_test_mask=1 nr_pages=256 use_huge=0 test_loop_count=30" in res.output
    summary = re.search(r"Summary: fix_size_alloc_test passed: (\d+) failed: 0 repeat: 2 "
                        r"loops: 30 avg: \d+ usec", res.output)
    assert summary and summary.group(1) == "2"


def test_manual_mode_follows_test_vmalloc_sh_rules_and_defuses_use_huge_0(session):
    res = session.run("vmalloc.sh run_test_mask=1 use_huge=0 test_loop_count=20", timeout=120)
    assert res.ok, res.output
    assert "use_huge=0 is the module default; omitted" in res.output
    assert "params=run_test_mask=1 test_loop_count=20" in res.output
    bad = session.run("vmalloc.sh nr_pages=0")
    assert bad.exit_status == 1 and "needs > 0" in bad.output
    bad = session.run("vmalloc.sh no_such_param=1")
    assert bad.exit_status == 1 and "key or value is not correct" in bad.output


def test_ptdump_loop_reads_n_times_and_checks_wx(session):
    res = session.run("ptdump.sh -n 3 -p", timeout=120)
    assert res.ok, res.output
    status = _status_line(res.output, "mmlab-ptdump: ")
    assert status["reads"] == "3" and int(status["lines"]) > 10
    assert status["wx"] in ("passed", "absent")
    dump = res.output.split("mmlab-ptdump: dump begin\n", 1)[1].split("mmlab-ptdump: dump end")[0]
    parsed = parse_ptdump(dump)
    assert any("vmalloc" in s.name for s in parsed.sections)


def test_ptdump_loop_concurrent_with_vmalloc_stress_completes(session):
    """The seed-003 validation: test_vmalloc stress while ptdump and the W+X check loop."""
    res = session.run("ptdump_vmalloc_stress.sh stress test_loop_count=20 test_repeat_count=1",
                      timeout=600)
    assert res.ok, res.output
    status = _status_line(res.output, "mmlab-ptdump-stress: ")
    assert int(status["ptdump_reads"]) >= 1
    assert status["read_errors"] == "0" and status["kernel_warnings"] == "0"
    assert status["vmalloc_status"] == "0" and status["wx"] in ("passed", "absent")
    parsed = parse_test_vmalloc(res.output)
    cpus = int(session.run("grep -c ^processor /proc/cpuinfo").output)
    assert len(parsed.runs) == 1 and len(parsed.runs[0].workers) == cpus  # nr_threads=NUM_CPUS


def test_many_quick_runs_in_a_row_each_find_their_own_kernel_lines(session):
    """Markers go through /dev/kmsg, which the kernel rate-limits unless told not to."""
    res = session.run("for i in $(seq 1 12); do "
                      "vmalloc.sh --direct run_test_mask=1 test_loop_count=5 || exit 1; done",
                      timeout=300)
    assert res.ok, res.output
    assert res.output.count("summaries=1 failed_tests=0") == 12


@pytest.mark.parametrize("uptime, ms", [("0.95 1.00", 950), ("0.08 0.01", 80),
                                        ("1.20 3.00", 1200), ("12.08 1.00", 12080),
                                        ("0.00 0.00", 0)])
def test_uptime_ms_is_decimal_even_before_one_second(tmp_path, uptime, ms):
    """Regression: "0.95" once gave "0950", which shell arithmetic rejects as octal; the
    guest script then failed with "arithmetic syntax error" in runs started right after boot."""
    import subprocess

    from orchestrator.paths import GUEST_TESTS

    up = tmp_path / "uptime"
    up.write_text(uptime + "\n")
    script = f'. {GUEST_TESTS / "lib.sh"}; t=$(uptime_ms); echo $((t + 0))'
    out = subprocess.run(["sh", "-c", script], env={"MMLAB_UPTIME_FILE": str(up),
                                                    "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) == ms
