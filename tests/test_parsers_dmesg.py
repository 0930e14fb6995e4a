"""dmesg parser: every message kind, its block, its signature, and real-world log dressing."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import InputError
from orchestrator.parsers.dmesg import compare, load_table, normalize, parse_dmesg
from orchestrator.parsers.kmsg import clean_lines, strip_line

DATA = Path(__file__).parent / "data" / "parsers"


def read(name: str) -> str:
    return (DATA / name).read_text()


_ALL_LINES = sorted({line for p in DATA.glob("*.log") for line in p.read_text().splitlines()})


# file, kind, first line, last line, title start, key frame, ends_run
KINDS = [
    (
        "warning.log",
        "warning",
        1,
        28,
        "WARNING: CPU: 1 PID: 87 at mm/vmalloc.c:3361",
        "remove_vm_area",
        False,
    ),
    (
        "oops.log",
        "oops",
        1,
        36,
        "Unable to handle kernel NULL pointer dereference",
        "vmap_pte_range",
        True,
    ),
    ("bug.log", "bug", 1, 23, "kernel BUG at mm/vmalloc.c:105!", "vm_map_ram", True),
    (
        "sleeping_bug.log",
        "bug",
        1,
        18,
        "BUG: sleeping function called from invalid context",
        "__vmalloc_area_node",
        False,
    ),
    (
        "kasan.log",
        "kasan",
        1,
        35,
        "BUG: KASAN: vmalloc-out-of-bounds in fix_size_alloc_test",
        "fix_size_alloc_test [test_vmalloc]",
        False,
    ),
    (
        "kfence.log",
        "kfence",
        1,
        19,
        "BUG: KFENCE: use-after-free read in kvfree_rcu_2_arg",
        "kvfree_rcu_2_arg_vmalloc_test [test_vmalloc]",
        False,
    ),
    (
        "soft_lockup.log",
        "soft_lockup",
        1,
        18,
        "BUG: soft lockup - CPU#1 stuck for 26s!",
        "_vm_unmap_aliases",
        False,
    ),
    (
        "hard_lockup.log",
        "hard_lockup",
        1,
        19,
        "Watchdog detected hard LOCKUP on cpu 1",
        "free_vmap_area_noflush",
        False,
    ),
    (
        "rcu_stall.log",
        "rcu_stall",
        1,
        23,
        "INFO: rcu_preempt detected stalls on CPUs/tasks:",
        "random_size_alloc_test [test_vmalloc]",
        False,
    ),
    (
        "hung_task.log",
        "hung_task",
        1,
        18,
        "INFO: task kworker/u8:2:61 blocked for more than 122 seconds.",
        "drain_vmap_area_work",
        False,
    ),
    (
        "lockdep.log",
        "lockdep",
        2,
        69,
        "WARNING: possible circular locking dependency detected",
        "ptdump_walk_pgd",
        False,
    ),
    (
        "alloc_failure_align_shift.log",
        "alloc_failure",
        1,
        34,
        "vmalloc error: size 4096, vm_struct allocation failed",
        "align_shift_alloc_test [test_vmalloc]",
        False,
    ),
]


@pytest.mark.parametrize("name,kind,first,last,title,frame,ends_run", KINDS)
def test_each_kind_block_and_signature(name, kind, first, last, title, frame, ends_run):
    report = parse_dmesg(read(name))
    msgs = [m for m in report.messages if m.kind == kind]
    assert len(msgs) == 1, [(m.kind, m.title) for m in report.messages]
    m = msgs[0]
    assert (m.first_line, m.last_line) == (first, last)
    assert m.title.startswith(title)
    assert frame in m.frames
    assert m.ends_run is ends_run
    assert not m.truncated
    assert m.signature.startswith(f"{kind}: ")
    # nothing run-specific survives in a signature
    assert not re.search(r"0x[0-9a-f]+|\+0x|\b\d{2,}\b|\[\s*\d+\.\d+\]", m.signature), m.signature
    # the block is the whole report: its last line is the end marker when the kind has one
    assert len(m.lines) == last - first + 1


def test_trailing_lines_are_not_swallowed():
    """A Summary line right after a report is not part of the report."""
    for name in (
        "warning.log",
        "sleeping_bug.log",
        "soft_lockup.log",
        "rcu_stall.log",
        "hung_task.log",
        "alloc_failure_align_shift.log",
    ):
        report = parse_dmesg(read(name))
        assert all("Summary:" not in line for m in report.messages for line in m.lines), name


def test_oops_then_panic_are_two_blocks_and_end_the_run():
    report = parse_dmesg(read("oops.log"))
    assert [m.kind for m in report.messages] == ["oops", "panic"]
    oops, panic = report.messages
    assert oops.lines[-1].startswith("---[ end trace")
    assert "Internal error: Oops: 0000000096000006 [#1] SMP" in oops.lines
    assert oops.frames[0] == "vmap_pte_range"
    assert panic.title == "Kernel panic - not syncing: Oops: Fatal exception"
    assert panic.ended_by == "marker"
    assert panic.severity == "critical"
    assert report.ends_run and report.worst_severity == "critical"
    assert panic.timestamp == pytest.approx(3.1121)


def test_kernel_bug_absorbs_its_oops():
    m = parse_dmesg(read("bug.log")).messages
    assert len(m) == 1
    assert m[0].absorbed == ["oops"] and m[0].ends_run
    assert m[0].lines[0] == "------------[ cut here ]------------"


def test_kasan_block_is_between_the_banners():
    (m,) = parse_dmesg(read("kasan.log")).messages
    assert m.lines[0].startswith("=====") and m.lines[-1].startswith("=====")
    assert m.ended_by == "marker"
    assert "Memory state around the buggy address:" in m.lines


def test_expected_align_shift_failure_is_not_a_regression():
    report = parse_dmesg(read("alloc_failure_align_shift.log"))
    (m,) = report.messages
    assert m.expected and "align_shift_alloc_test" in m.expected
    assert report.worst_severity is None
    assert report.signatures() == {}
    assert m.lines[-1] == "6701 pages reserved"  # show_mem() output belongs to the report


def test_wx_check_lines():
    report = parse_dmesg(read("lockdep.log"))
    assert [(w.passed, w.wx_pages) for w in report.wx_checks] == [(True, 0)]
    failed = parse_dmesg(
        "[    1.000000] Checked W+X mappings: FAILED, 3 W+X pages found, 5 non-UXN pages found\n"
    )
    (w,) = failed.wx_checks
    assert (w.passed, w.wx_pages, w.uxn_pages, w.line) == (False, 3, 5, 1)


def _perturb(text: str, seed: int) -> str:
    """Same log, other run: shift time stamps, change addresses, PIDs, CPUs, durations."""
    rnd = random.Random(seed)
    shift = rnd.uniform(1, 500)
    text = re.sub(r"\[\s*(\d+\.\d+)\]", lambda m: f"[{float(m[1]) + shift:12.6f}]", text)
    text = re.sub(r"\b(ffff[0-9a-f]{12})\b", lambda m: f"ffff{rnd.getrandbits(48):012x}", text)
    text = re.sub(r"(?<=\+0x)[0-9a-f]+(?=/0x)", lambda m: f"{rnd.randrange(1, 4096):x}", text)
    text = re.sub(
        r"\b(PID: |pid:|pid |cpu |CPU#|CPU: )(\d+)",
        lambda m: f"{m[1]}{rnd.randrange(0, 9999)}",
        text,
    )
    text = re.sub(
        r"(vmalloc_test/\d+|kworker/u8:2):(\d+)", lambda m: f"{m[1]}:{rnd.randrange(2, 9999)}", text
    )
    text = re.sub(r"stuck for \d+s", f"stuck for {rnd.randrange(22, 99)}s", text)
    text = re.sub(r"mm/vmalloc\.c:\d+", f"mm/vmalloc.c:{rnd.randrange(100, 5000)}", text)
    return text


@pytest.mark.parametrize("name", [k[0] for k in KINDS])
def test_signatures_equal_across_runs(name):
    a = parse_dmesg(read(name))
    b = parse_dmesg(_perturb(read(name), seed=hash(name) & 0xFFFF))
    assert read(name) != _perturb(read(name), seed=1)
    assert [m.signature for m in a.messages] == [m.signature for m in b.messages]
    assert [m.signature_id for m in a.messages] == [m.signature_id for m in b.messages]
    assert [(m.first_line, m.last_line) for m in a.messages] == [
        (m.first_line, m.last_line) for m in b.messages
    ]


def test_different_bugs_have_different_signatures():
    sigs = {parse_dmesg(read(k[0])).messages[0].signature for k in KINDS}
    assert len(sigs) == len(KINDS)


def test_compare_baseline_and_patched():
    baseline = parse_dmesg(read("warning.log") + read("kasan.log"))
    patched = parse_dmesg(_perturb(read("kasan.log"), 3) + read("soft_lockup.log"))
    diff = compare(baseline, patched)
    assert [s.split(":")[0] for s in diff.new] == ["soft_lockup"]
    assert [s.split(":")[0] for s in diff.gone] == ["warning"]
    assert [s.split(":")[0] for s in diff.common] == ["kasan"]


def test_no_timestamps_levels_and_caller_ids():
    """The same report without time stamps, with <n> levels, with [T123]/[C5] caller ids."""
    base = parse_dmesg(read("warning.log")).messages[0]
    lines = read("warning.log").splitlines()
    bare = "\n".join(line.split("] ", 1)[1] for line in lines)
    levels = "\n".join("<4>" + line for line in lines)
    callers = "\n".join(
        line.replace("] ", f"][{'T87' if i % 3 else 'C1':>7}] ", 1) for i, line in enumerate(lines)
    )
    dmesg_style = "\n".join(line.replace("] ", "] [    T87] ", 1) for line in lines)
    for variant in (bare, levels, callers, dmesg_style):
        (m,) = parse_dmesg(variant).messages
        assert m.signature == base.signature
        assert (m.first_line, m.last_line) == (base.first_line, base.last_line)


def test_strip_line_decorations():
    ln = strip_line("<4>[    1.234567][    T123] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2", 7)
    assert (ln.level, ln.timestamp, ln.caller, ln.lineno) == (4, 1.234567, "T123", 7)
    assert ln.text.startswith("WARNING: CPU")
    ln = strip_line("> > [   12.000001] [     C5] rcu: INFO: rcu_sched self-detected stall on CPU")
    assert ln.quoted and ln.caller == "C5" and ln.text.startswith("rcu: INFO")
    ln = strip_line("Nov 25 00:00:00 board kernel: [    2.5] Kernel panic - not syncing: x")
    assert ln.timestamp == 2.5 and ln.text == "Kernel panic - not syncing: x"
    ln = strip_line("kern  :warn  : [    3.100000] WARNING: CPU: 0 PID: 1 at x")
    assert (ln.level, ln.timestamp, ln.text) == (4, 3.1, "WARNING: CPU: 0 PID: 1 at x")
    ln = strip_line("[    4.000001] board kernel: Kernel panic - not syncing: y")
    assert ln.text == "Kernel panic - not syncing: y"


def _mail_wrap(text: str, width: int = 72, quote: str = "") -> str:
    """Wrap every long line the way a mail client does (break at the last space)."""
    out = []
    for line in text.splitlines():
        line = quote + line
        while len(line) > width and " " in line[:width].rstrip():
            cut = line[:width].rstrip().rfind(" ")
            if cut <= len(quote) or line[:cut].rstrip().endswith("]"):
                break  # clients do not break inside the leading indentation
            out.append(line[:cut])
            line = quote + line[cut + 1 :] if quote else line[cut + 1 :]
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize(
    "name", ["warning.log", "oops.log", "kasan.log", "lockdep.log", "hung_task.log"]
)
@pytest.mark.parametrize("quote", ["", "> ", ">> "])
def test_mail_quoted_and_wrapped(name, quote):
    original = parse_dmesg(read(name))
    mailed = _mail_wrap(read(name), 72, quote)
    assert mailed.count("\n") > read(name).count("\n")  # really wrapped
    got = parse_dmesg(mailed)
    assert [m.kind for m in got.messages] == [m.kind for m in original.messages]
    assert [m.signature for m in got.messages] == [m.signature for m in original.messages]
    assert [len(m.lines) for m in got.messages] == [len(m.lines) for m in original.messages]


def test_quoted_without_wrapping():
    quoted = "".join("> " + line + "\n" for line in read("soft_lockup.log").splitlines())
    quoted = "On Tue, someone wrote:\n" + quoted + "\nThanks, this looks like a real bug.\n"
    (m,) = parse_dmesg(quoted).messages
    assert m.kind == "soft_lockup"
    assert m.signature == parse_dmesg(read("soft_lockup.log")).messages[0].signature


def test_unwrap_is_off_for_console_logs():
    """A console log mixing kernel lines and shell output keeps its lines apart."""
    text = (
        "[    1.000000] Run /init as init process with a rather long tail to pass sixty chars\n"
        "# cat /proc/version\n"
        "Linux version 6.12.48\n"
    )
    assert [ln.text for ln in clean_lines(text)][1:] == [
        "# cat /proc/version",
        "Linux version 6.12.48",
    ]


def test_log_cut_mid_report_is_truncated():
    lines = read("warning.log").splitlines()[:20]  # stops inside the register dump
    (m,) = parse_dmesg("\n".join(lines)).messages
    assert m.kind == "warning" and m.truncated and m.ended_by == "eof"


def test_back_to_back_reports_split_and_keep_their_banners():
    text = (
        read("warning.log").replace("[   12.360001] Summary", "[   12.360001] XSummary")
        + read("kasan.log")
        + read("warning.log")
    )
    kinds = [(m.kind, m.lines[0][:12]) for m in parse_dmesg(text).messages]
    assert kinds == [
        ("warning", "------------"),
        ("kasan", "============"),
        ("warning", "------------"),
    ]


def test_normalize_rules():
    assert normalize("INFO: task kworker/u4:1:37 blocked for more than 122 seconds.") == (
        "INFO: task ? blocked for more than # seconds."
    )
    assert normalize("BUG: soft lockup - CPU#3 stuck for 23s! [insmod:99]") == (
        "BUG: soft lockup - CPU## stuck for #s! [?]"
    )
    assert (
        normalize("in kvfree_rcu_1_arg_vmalloc_test+0x1c/0x40")
        == "in kvfree_rcu_1_arg_vmalloc_test"
    )


def test_bad_table_is_a_clear_error(tmp_path):
    bad = tmp_path / "t.toml"
    bad.write_text('[[kind]]\nname = "x"\nseverity = "fatal"\nstart = ["a"]\n')
    with pytest.raises(InputError, match="severity"):
        load_table(bad)
    bad.write_text('[[kind]]\nname = "x"\nseverity = "error"\nstart = ["("]\n')
    with pytest.raises(InputError, match="kind 'x'"):
        load_table(bad)


def test_table_covers_required_kinds():
    names = {k.name for k in load_table().kinds}
    assert {
        "oops",
        "bug",
        "warning",
        "kasan",
        "kfence",
        "panic",
        "soft_lockup",
        "hard_lockup",
        "rcu_stall",
        "hung_task",
        "lockdep",
    } <= names


# --- real guest output (tests/data/parsers/README.md says how it was captured) -------------


def test_real_no_init_panic():
    report = parse_dmesg(read("real_panic_noinit_612.log"))
    (m,) = report.messages
    assert m.kind == "panic" and m.ends_run and m.severity == "critical"
    assert m.title.startswith("Kernel panic - not syncing: No working init found.")
    # panic=-1 reboots at once: no "---[ end Kernel panic" line; the block runs to the end
    assert (m.first_line, m.last_line, m.ended_by, m.truncated) == (125, 138, "eof", False)
    assert m.frames == ["kernel_init", "ret_from_fork"]
    assert [w.passed for w in report.wx_checks] == [True]


def test_real_boot_with_test_vmalloc_and_sysrq_crash():
    report = parse_dmesg(read("real_boot_612.log"))
    assert [m.kind for m in report.messages] == ["alloc_failure", "panic"]
    warn, panic = report.messages
    assert warn.expected is not None  # align_shift_alloc_test's warn_alloc
    assert (warn.first_line, warn.last_line) == (197, 228)
    assert warn.lines[-1] == "4187 pages reserved"
    assert panic.title == "Kernel panic - not syncing: sysrq triggered crash"
    assert panic.frames[:3] == [
        "sysrq_reset_seq_param_set",
        "__handle_sysrq",
        "write_sysrq_trigger",
    ]
    assert report.worst_severity == "critical" and report.ends_run
    assert [w.passed for w in report.wx_checks] == [True, True]
    # nothing in the ptdump or Summary lines is mistaken for a report
    assert all(not line.startswith(("0x", "Summary:")) for m in report.messages for line in m.lines)


def test_two_real_boots_have_equal_signatures():
    a = parse_dmesg(read("real_boot_612.log"))
    b = parse_dmesg(read("real_boot_612_second.log"))
    assert read("real_boot_612.log") != read("real_boot_612_second.log")
    assert [m.signature_id for m in a.messages] == [m.signature_id for m in b.messages]
    diff = compare(a, b)
    assert (
        diff.new == [] and diff.gone == [] and len(diff.common) == 1
    )  # the expected one is left out


def test_new_warning_format_has_the_same_signature():
    """Newer kernels print "WARNING: file:line at func+off/size, CPU#n: comm/pid"."""
    old = read("warning.log")
    new = old.replace(
        "WARNING: CPU: 1 PID: 87 at mm/vmalloc.c:3361 __vunmap_range_noflush+0x2a4/0x3c0",
        "WARNING: mm/vmalloc.c:3398 at __vunmap_range_noflush+0x2b0/0x3d0, CPU#0: vmalloc_test/0/91",
    )
    assert new != old
    (a,) = parse_dmesg(old).messages
    (b,) = parse_dmesg(new).messages
    assert b.kind == "warning" and a.signature == b.signature


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_ALL_LINES), max_size=300), st.booleans())
def test_any_mix_of_real_lines_parses_into_ordered_blocks(lines, unwrap):
    """Whatever order log lines come in, blocks are ordered, disjoint and inside the text."""
    report = parse_dmesg("\n".join(lines), unwrap=unwrap)
    last = 0
    for m in report.messages:
        assert last < m.first_line <= m.last_line <= len(lines)
        last = m.last_line
        assert m.signature.startswith(m.kind + ": ")


def test_panic_then_reboot_ends_at_the_new_boot():
    """panic=N reboots: the next boot's log is not part of the panic report."""
    text = read("real_panic_noinit_612.log") + read("real_panic_noinit_612.log")
    report = parse_dmesg(text)
    assert [m.kind for m in report.messages] == ["panic", "panic"]
    first, second = report.messages
    assert (first.first_line, first.last_line, first.ended_by) == (125, 138, "stop")
    assert second.first_line == 138 + 125
    assert len(report.wx_checks) == 2


def test_align_shift_vmalloc_error_of_7_3_is_expected():
    """7.3 prints the alignment in warn_alloc's vmalloc error; still the deliberate one."""
    from orchestrator.parsers.dmesg import parse as parse_dmesg

    text = (Path(__file__).parent / "data" / "parsers" / "test_vmalloc_7.3.4_smoke.dmesg").read_text()
    res = parse_dmesg(text).to_json()
    kinds = [(m["kind"], m["expected"] is not None) for m in res["messages"]]
    assert kinds == [("alloc_failure", True)] and res["unexpected"] == 0
