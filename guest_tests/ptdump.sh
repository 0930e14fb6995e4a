#!/bin/sh
# mmlab guest test: read the kernel page-table dump N times (and run the W+X check).
#
# Usage: ptdump.sh [-n N] [-p]
#   -n N  reads of /sys/kernel/debug/kernel_page_tables (default 1); each iteration also
#         reads /sys/kernel/debug/check_wx_pages where the kernel has it
#   -p    print the last dump between "mmlab-ptdump: dump begin" / "dump end"
# Prints "mmlab-ptdump: reads=N lines=L bytes=B elapsed_ms=T wx=passed|failed|absent".
# Exit 0 pass, 1 when a read fails or the W+X check fails, 4 when there is no ptdump file.
. "$(dirname "$0")/lib.sh"

n=1
print=0
while [ $# -gt 0 ]; do
	case "$1" in
	-n) n=$2; shift 2 ;;
	-p) print=1; shift ;;
	*) echo "usage: ptdump.sh [-n N] [-p]"; exit $KSFT_FAIL ;;
	esac
done

PT=/sys/kernel/debug/kernel_page_tables
WX=/sys/kernel/debug/check_wx_pages
grep -q " /sys/kernel/debug " /proc/mounts || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
[ -r "$PT" ] || skip "$PT not present (CONFIG_PTDUMP_DEBUGFS)"

wx=absent
t0=$(uptime_ms)
i=0
while [ "$i" -lt "$n" ]; do
	cat "$PT" > /tmp/ptdump.cur || fail "reading $PT failed (iteration $i)"
	if [ -e "$WX" ]; then
		out=$(cat "$WX" 2>&1)
		case "$out" in
		*FAIL*) wx=failed ;;
		*) [ "$wx" = failed ] || wx=passed ;;
		esac
	fi
	i=$((i + 1))
done
t1=$(uptime_ms)
lines=$(wc -l < /tmp/ptdump.cur)
bytes=$(wc -c < /tmp/ptdump.cur)
if [ "$print" = 1 ]; then
	echo "mmlab-ptdump: dump begin"
	cat /tmp/ptdump.cur
	echo "mmlab-ptdump: dump end"
fi
rm -f /tmp/ptdump.cur
echo "mmlab-ptdump: reads=$n lines=$lines bytes=$bytes elapsed_ms=$((t1 - t0)) wx=$wx"
[ "$wx" != failed ] || fail "check_wx_pages found W+X mappings"
exit $KSFT_PASS
