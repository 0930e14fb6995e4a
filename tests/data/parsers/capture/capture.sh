#!/bin/sh
# Re-capture the real_* logs in tests/data/parsers from a built arm64 kernel tree.
# Usage: capture.sh KBUILD_OUTPUT_DIR KERNEL_SRC_DIR OUTDIR   (needs aarch64-linux-gnu-gcc,
# cpio, qemu-system-aarch64) and KHDR=<dir of arm64 uapi headers, e.g. O=x headers -> x/usr/include>.
# One-off data capture, not mmlab's image builder.
set -eu
B=$1; S=$2; O=$3
here=$(cd "$(dirname "$0")" && pwd)
w=$(mktemp -d)
aarch64-linux-gnu-gcc -Os -static -nostdlib -fno-stack-protector -include "$S/tools/include/nolibc/nolibc.h" \
    -I "$S/tools/include/nolibc" -I "${KHDR:?set KHDR to arm64 uapi headers (make headers)}" -o "$w/init" "$here/init.c" -lgcc
mkdir -p "$w/root/dev" "$w/root/proc" "$w/root/sys"
cp "$w/init" "$w/root/init"
cp "$B/lib/test_vmalloc.ko" "$w/root/"
(cd "$w/root" && find . | cpio -o -H newc --quiet) > "$w/initrd.cpio"
run() {
    timeout 300 qemu-system-aarch64 -M virt -cpu max -smp 2 -m 512 -nographic -nic none \
        -kernel "$B/arch/arm64/boot/Image" -initrd "$w/initrd.cpio" \
        -append "console=ttyAMA0 panic=-1 $1" -no-reboot | tr -d '\r'
}
run "" > "$O/real_boot_612.log"
timeout 60 qemu-system-aarch64 -M virt -cpu max -m 512 -nographic -nic none \
    -kernel "$B/arch/arm64/boot/Image" -append 'console=ttyAMA0 panic=-1' -no-reboot \
    | tr -d '\r' > "$O/real_panic_noinit_612.log"
rm -rf "$w"
