# mmlab console agent: runs the host's commands on the serial console.
#
# Protocol (one line each, the console's echo turned off):
#   A <base64>            append a chunk to the pending command (commands longer than a line)
#   R <tok> [<base64>]    run the pending command + this chunk; prints
#                         "@@MMLAB-BEGIN:<tok>", the output (stdout and stderr) in base64,
#                         then "\n@@MMLAB-END:<tok>:<exit status>"
#   W <tok> <n> <path>    write a file: n bytes of base64 lines follow (read with head -c:
#                         a canonical tty read never returns more than one line, so head
#                         cannot read past them); prints "@@MMLAB-END:<tok>:<status>"
#   Q                     power off now
# Markers are printed with printf from parts, so they never appear in what the host sends.
trap 'true' INT
stty -echo 2>/dev/null
dmesg -n "${MMLAB_LOGLEVEL:-1}" 2>/dev/null
printf '%s-READY:%s\n' @@MMLAB "$MMLAB_TOKEN"
pending=
fails=0
while :; do
	if ! IFS= read -r line; then
		# interrupted by ^C, or the console went away
		fails=$((fails + 1))
		[ "$fails" -gt 50 ] && exit 1
		sleep 0.1
		continue
	fi
	fails=0
	case "$line" in
	A\ *)
		pending="$pending${line#A }"
		;;
	R\ *)
		rest=${line#R }
		tok=${rest%% *}
		chunk=
		[ "$tok" != "$rest" ] && chunk=${rest#* }
		cmd=$(printf '%s' "$pending$chunk" | base64 -d)
		pending=
		printf '%s-BEGIN:%s\n' @@MMLAB "$tok"
		# The output travels base64-encoded: kernel messages that land on the console
		# meanwhile can then be told apart from it exactly.
		{ ( eval "$cmd" ) </dev/null 2>&1; echo $? > /tmp/.mmlab-rc.$tok; } | base64
		rc=$(cat /tmp/.mmlab-rc.$tok 2>/dev/null || echo 255)
		rm -f /tmp/.mmlab-rc.$tok
		printf '\n%s-END:%s:%d\n' @@MMLAB "$tok" "$rc"
		;;
	W\ *)
		rest=${line#W }
		tok=${rest%% *}
		rest=${rest#* }
		n=${rest%% *}
		path=${rest#* }
		head -c "$n" | base64 -d > "$path"
		rc=$?
		printf '\n%s-END:%s:%d\n' @@MMLAB "$tok" "$rc"
		;;
	Q*)
		sync
		poweroff -f
		;;
	esac
done
