# Shared helpers for mmlab guest tests (sourced; POSIX sh / busybox ash).
#
# Exit statuses follow kselftest: 0 pass, 1 fail, 4 skip (KSFT_SKIP: the test cannot run
# here, e.g. the kernel lacks the module or debugfs file).

KSFT_PASS=0
KSFT_FAIL=1
KSFT_SKIP=4

skip() {
	echo "SKIP: $*"
	exit $KSFT_SKIP
}

fail() {
	echo "FAIL: $*"
	exit $KSFT_FAIL
}

# find_module NAME: path of NAME.ko for the running kernel (empty when absent).
find_module() {
	find "/lib/modules/$(uname -r)" -name "$1.ko" -o -name "$1.ko.*" 2>/dev/null | head -n 1
}

# kmsg_mark TEXT: put TEXT in the kernel log, so the messages a test causes can be cut out.
kmsg_mark() {
	echo "$1" > /dev/kmsg
}

# dmesg_since TEXT: the kernel log from the line holding TEXT (a kmsg_mark) to the end.
dmesg_since() {
	dmesg | sed -n "/$1/,\$p"
}

# uptime_ms: milliseconds since boot (10 ms resolution; busybox date may lack %N).
# Leading zeros are stripped: before 1 s of uptime "0.95" would give "0950", which shell
# arithmetic reads as an (invalid) octal number.
uptime_ms() {
	read -r up _ < "${MMLAB_UPTIME_FILE:-/proc/uptime}"
	ms="${up%.*}${up#*.}0"
	while [ "${#ms}" -gt 1 ] && [ "${ms#0}" != "$ms" ]; do ms=${ms#0}; done
	echo "$ms"
}

# new_id: a short random id for markers.
new_id() {
	od -An -N4 -tx4 /dev/urandom | tr -d ' \n'
}
