#!/bin/sh
# mmlab guest test: the kernel's own KUnit suites for the paths mmlab judges.
#
# Usage: kunit.sh MODULE [MODULE ...]     e.g. kunit.sh lazy_mmu_mode_kunit
#
# Each module is loaded once with mmlab-load (one finit_module() call); a KUnit test module
# runs its suites at load and prints KTAP to the kernel log, which the runner reads back and
# parses (orchestrator/parsers/ktap.py). The suites' debugfs results, where the kernel has
# them (CONFIG_KUNIT_DEBUGFS), are printed too. A kernel without any of the modules (6.12 has
# no lazy-MMU suite: it came with 7.0) is a skip (exit 4), not a failure: the report says
# which kernels ran the suite. Exit 1 when a module fails to load.
. "$(dirname "$0")/lib.sh"

[ "$#" -gt 0 ] || { echo "usage: kunit.sh MODULE [MODULE ...]"; exit $KSFT_FAIL; }
[ "$(id -u)" -eq 0 ] || skip "must be run as root"
command -v mmlab-load >/dev/null 2>&1 || skip "mmlab-load (the module loader) is missing"

found=0
bad=0
for mod in "$@"; do
	ko=$(find_module "$mod")
	if [ -z "$ko" ]; then
		echo "mmlab-kunit: module=$mod absent (this kernel has no such KUnit suite)"
		continue
	fi
	found=$((found + 1))
	id=$(new_id)
	kmsg_mark "mmlab-kunit: start $id"
	mmlab-load "$ko"
	rc=$?
	echo "mmlab-kunit: module=$mod load_status=$rc"
	[ "$rc" -eq 0 ] || bad=$((bad + 1))
done
[ "$found" -gt 0 ] || skip "none of the KUnit modules $* is built for this kernel"
if [ -d /sys/kernel/debug/kunit ]; then
	for r in /sys/kernel/debug/kunit/*/results; do
		[ -f "$r" ] || continue
		echo "mmlab-kunit: debugfs $r"
		cat "$r"
	done
fi
[ "$bad" -eq 0 ] || fail "$bad KUnit module(s) failed to load"
exit $KSFT_PASS
