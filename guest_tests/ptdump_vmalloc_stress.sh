#!/bin/sh
# mmlab guest test: page-table dumps in a loop while test_vmalloc stresses vmalloc.
#
# How the "arm64: Enable vmalloc-huge with ptdump" patch (v6.18, fa93b45fd397) was
# validated: test_vmalloc.sh in parallel with
# `cat /sys/kernel/debug/{kernel_page_tables,check_wx_pages}` in a loop. A kernel where the
# walkers race with pud_free_pmd_page()/pmd_free_pte_page() oopses here.
#
# Usage: ptdump_vmalloc_stress.sh [vmalloc.sh arguments]   (default: stress)
#   e.g. ptdump_vmalloc_stress.sh stress test_loop_count=2000 use_huge=1
# Prints vmalloc.sh's output, then "mmlab-ptdump-stress: ptdump_reads=N wx=... vmalloc_status=S
# kernel_warnings=W". Exit 1 when vmalloc.sh failed, the W+X check failed or the kernel
# logged a WARNING/BUG during the run; 4 when the module or ptdump file is missing.
. "$(dirname "$0")/lib.sh"

PT=/sys/kernel/debug/kernel_page_tables
WX=/sys/kernel/debug/check_wx_pages
[ -r "$PT" ] || skip "$PT not present (CONFIG_PTDUMP_DEBUGFS)"
[ -n "$(find_module test_vmalloc)" ] || skip "test_vmalloc.ko not found (CONFIG_TEST_VMALLOC=m)"
[ $# -gt 0 ] || set -- stress

id=$(new_id)
stop=/tmp/ptdump-stop.$id
count=/tmp/ptdump-count.$id
wxres=/tmp/ptdump-wx.$id
kmsg_mark "mmlab-ptdump-stress: start $id"
(
	i=0
	wx=absent
	while [ ! -e "$stop" ]; do
		cat "$PT" > /dev/null || echo "read error" >> "$wxres.err"
		if [ -e "$WX" ]; then
			case "$(cat "$WX" 2>&1)" in *FAIL*) wx=failed ;; *) [ "$wx" = failed ] || wx=passed ;; esac
		fi
		i=$((i + 1))
		echo "$i" > "$count"
		echo "$wx" > "$wxres"
	done
) &
loop=$!
"$(dirname "$0")/vmalloc.sh" "$@"
vrc=$?
touch "$stop"
wait "$loop"
reads=$(cat "$count" 2>/dev/null || echo 0)
wx=$(cat "$wxres" 2>/dev/null || echo absent)
warnings=$(dmesg_since "mmlab-ptdump-stress: start $id" | grep -c -E 'WARNING:|BUG:|Oops|Unable to handle')
errors=0
[ -e "$wxres.err" ] && errors=$(wc -l < "$wxres.err")
rm -f "$stop" "$count" "$wxres" "$wxres.err"
echo "mmlab-ptdump-stress: ptdump_reads=$reads read_errors=$errors wx=$wx vmalloc_status=$vrc kernel_warnings=$warnings"
[ "$vrc" -eq $KSFT_SKIP ] && exit $KSFT_SKIP
[ "$vrc" -eq 0 ] || fail "vmalloc.sh failed (status $vrc)"
[ "$reads" -gt 0 ] || fail "the ptdump loop never completed a read"
[ "$errors" -eq 0 ] || fail "$errors ptdump read(s) failed"
[ "$wx" != failed ] || fail "check_wx_pages found W+X mappings"
[ "$warnings" -eq 0 ] || fail "the kernel logged $warnings warning(s) during the run"
exit $KSFT_PASS
