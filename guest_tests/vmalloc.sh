#!/bin/sh
# mmlab guest test: test_vmalloc, loaded exactly once per run.
#
# Usage:
#   vmalloc.sh performance|stress|smoke [key=val ...]   test_vmalloc.sh's modes; extra
#                                                       key=val pairs override the mode's
#   vmalloc.sh key=val ...                              manual mode, test_vmalloc.sh rules
#   vmalloc.sh --direct [key=val ...]                   the parameters passed verbatim
#
# Same parameter sets as tools/testing/selftests/mm/test_vmalloc.sh, with its traps handled:
# - the module is loaded by mmlab-load (one finit_module() call): busybox insmod/modprobe
#   retry with init_module() after test_vmalloc's deliberate -EAGAIN and run it twice;
# - manual mode: every key must be a module parameter (modinfo) and every value > 0, as in
#   test_vmalloc.sh; a "key=0" that only restates the module default (use_huge,
#   sequential_test_order, nr_threads) is dropped with a note instead of rejected;
# - no module: exit 4 (skip), like test_vmalloc.sh.
# - performance/stress/smoke without run_test_mask: every case the module offers is selected
#   (the mask is read from the module's own run_test_mask description, "id: N, name: ..."),
#   because newer kernels default the mask to 7 (3 cases) where 6.12 ran them all.
# Prints the kernel messages the run produced (Summary lines, "All test took ...") between
# "mmlab-vmalloc: dmesg begin" / "end", then a status line. Exit 0 when the tests ran and no
# test except align_shift_alloc_test (an expected failure) failed, 1 otherwise.
. "$(dirname "$0")/lib.sh"

DRIVER=test_vmalloc
NUM_CPUS=$(grep -c ^processor /proc/cpuinfo)
PERF_PARAM="sequential_test_order=1 test_repeat_count=3"
SMOKE_PARAM="test_loop_count=10000 test_repeat_count=10"
STRESS_PARAM="nr_threads=$NUM_CPUS test_repeat_count=20"

[ "$(id -u)" -eq 0 ] || skip "must be run as root"
ko=$(find_module $DRIVER)
[ -n "$ko" ] || skip "$DRIVER.ko not found in /lib/modules/$(uname -r) (CONFIG_TEST_VMALLOC=m)"
command -v mmlab-load >/dev/null 2>&1 || skip "mmlab-load (the module loader) is missing"

valid_params=$(modinfo -F parmtype "$ko" 2>/dev/null | sed "s/:.*//")
is_param() {
	for p in $valid_params; do [ "$p" = "$1" ] && return 0; done
	return 1
}

# merge BASE EXTRA: BASE's key=val pairs with EXTRA's overriding them.
merge() {
	out=
	for kv in $1; do
		k=${kv%%=*}
		case " $2 " in *" $k="*) ;; *) out="$out $kv" ;; esac
	done
	echo "$out $2"
}

validate() {
	out=
	for kv in "$@"; do
		k=${kv%%=*}
		v=${kv#*=}
		if [ "$k" = "$kv" ] || ! is_param "$k"; then
			echo "Error: key or value is not correct: $k $v" >&2
			echo "valid parameters: $(echo $valid_params)" >&2
			exit $KSFT_FAIL
		fi
		case "$v" in ''|*[!0-9]*)
			echo "Error: key or value is not correct: $k $v (not a number)" >&2
			exit $KSFT_FAIL ;;
		esac
		if [ "$v" -le 0 ]; then
			case "$k" in
			use_huge|sequential_test_order|nr_threads)
				echo "note: $k=0 is the module default; omitted (test_vmalloc.sh rejects it)"
				continue ;;
			esac
			echo "Error: key or value is not correct: $k $v (test_vmalloc.sh needs > 0)" >&2
			exit $KSFT_FAIL
		fi
		out="$out $kv"
	done
	PARAMS=$out
}

# Every test case the module offers: the OR of the ids its run_test_mask description lists.
offered_mask() {
	modinfo -F parm "$ko" 2>/dev/null | sed -n 's/.*id: *\([0-9][0-9]*\),.*/\1/p' | {
		m=0
		while read -r bit; do m=$((m | bit)); done
		echo $m
	}
}
OFFERED=$(offered_mask)

# with_all_cases PARAMS: PARAMS plus run_test_mask=OFFERED unless a mask is given
with_all_cases() {
	case " $* " in
	*" run_test_mask="*) echo "$*" ;;
	*) if [ "${OFFERED:-0}" -gt 0 ]; then echo "$* run_test_mask=$OFFERED"; else echo "$*"; fi ;;
	esac
}

mode=manual
case "$1" in
performance) mode=$1; shift; validate $(with_all_cases $(merge "$PERF_PARAM" "$*")) ;;
stress) mode=$1; shift; validate $(with_all_cases $(merge "$STRESS_PARAM" "$*")) ;;
smoke) mode=$1; shift; validate $(with_all_cases $(merge "$SMOKE_PARAM" "$*")) ;;
--direct) mode=direct; shift; PARAMS="$*" ;;
"") echo "usage: vmalloc.sh performance|stress|smoke|--direct [key=val ...] | key=val ..."
    echo "parameters: $(echo $valid_params)"; exit $KSFT_FAIL ;;
*) validate "$@" ;;
esac
PARAMS=$(echo $PARAMS)

id=$(new_id)
echo "mmlab-vmalloc: mode=$mode cpus=$NUM_CPUS params=$PARAMS"
echo "mmlab-vmalloc: offered_mask=${OFFERED:-0}"
kmsg_mark "mmlab-vmalloc: start $id"
t0=$(uptime_ms)
# shellcheck disable=SC2086
mmlab-load "$ko" $PARAMS
rc=$?
t1=$(uptime_ms)
echo "mmlab-vmalloc: dmesg begin"
dmesg_since "mmlab-vmalloc: start $id" > /tmp/vmalloc.$id.log
cat /tmp/vmalloc.$id.log
echo "mmlab-vmalloc: dmesg end"
summaries=$(grep -c 'Summary: ' /tmp/vmalloc.$id.log)
# Failed tests other than align_shift_alloc_test (it fails on purpose).
bad=$(grep 'Summary: ' /tmp/vmalloc.$id.log | grep -v 'align_shift_alloc_test' \
	| grep -v -c 'failed: 0 ')
rm -f /tmp/vmalloc.$id.log
echo "mmlab-vmalloc: load_status=$rc elapsed_ms=$((t1 - t0)) summaries=$summaries failed_tests=$bad"
# test_vmalloc's init returns -EAGAIN (11) after running the tests, on purpose.
case "$rc" in
0|11) ;;
*) fail "loading $DRIVER failed with errno $rc" ;;
esac
[ "$summaries" -gt 0 ] || fail "no Summary lines in the kernel log"
[ "$bad" -eq 0 ] || fail "$bad test(s) failed"
exit $KSFT_PASS
