"""Parsers: turn what a guest prints into structured results.

* :mod:`.test_vmalloc` -- lib/test_vmalloc.ko Summary / "All test took" lines.
* :mod:`.dmesg` -- kernel reports (oops, BUG, WARNING, KASAN, panic, ...) with signatures;
  the message kinds are data in ``kernel_messages.toml``.
* :mod:`.ptdump` -- arm64 /sys/kernel/debug/kernel_page_tables and the W+X check.
* :mod:`.kmsg` -- the line cleaning they share (time stamps, levels, caller ids, mail).
"""

from orchestrator.parsers.dmesg import DmesgReport, KernelMessage, compare, parse_dmesg
from orchestrator.parsers.ptdump import PtDump, parse_ptdump, parse_wx, split_dumps
from orchestrator.parsers.test_vmalloc import VmallocResult, parse_test_vmalloc

__all__ = [
    "DmesgReport",
    "KernelMessage",
    "PtDump",
    "VmallocResult",
    "compare",
    "parse_dmesg",
    "parse_ptdump",
    "parse_test_vmalloc",
    "parse_wx",
    "split_dumps",
]
