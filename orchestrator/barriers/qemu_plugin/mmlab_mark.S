/*
 * mmlab-mark ID: open barrier-counting window ID (0..255) in the mmlab_barriers plugin.
 *
 * A static arm64 Linux program without libc (a few hundred bytes of code), for the guest
 * initramfs: `mmlab-mark 1; <workload>; mmlab-mark 0`. It executes the marker
 *     MOVZ XZR, #(0x4D00 | ID), LSL #48
 * which is architecturally a no-op (a write to the zero register); the plugin closes the
 * current window when a vCPU executes it. The id is part of the encoding, so the program
 * branches into a table of 256 markers. Exit status 0, or 2 with a message on bad usage.
 */
	.equ	SYS_write, 64
	.equ	SYS_exit, 93

	.text
	.global	_start
_start:
	ldr	x0, [sp]		/* argc */
	cmp	x0, #2
	b.ne	usage
	ldr	x1, [sp, #16]		/* argv[1] */
	mov	x2, #0			/* value */
	mov	x4, #0			/* digits seen */
	mov	x5, #10
1:	ldrb	w3, [x1], #1
	cbz	w3, 2f
	subs	w3, w3, #'0'
	b.lo	usage
	cmp	w3, #9
	b.hi	usage
	madd	x2, x2, x5, x3
	add	x4, x4, #1
	cmp	x2, #255
	b.hi	usage
	b	1b
2:	cbz	x4, usage
	adr	x6, table
	add	x6, x6, x2, lsl #3	/* 8 bytes per entry: marker, branch */
	br	x6

	.balign	8
table:
	.set	id, 0
	.rept	256
	.inst	0xD2E0001F | ((0x4D00 | id) << 5)
	b	done
	.set	id, id + 1
	.endr

done:
	mov	x0, #0
	mov	x8, #SYS_exit
	svc	#0

usage:
	mov	x0, #2
	adr	x1, msg
	mov	x2, #msg_len
	mov	x8, #SYS_write
	svc	#0
	mov	x0, #2
	mov	x8, #SYS_exit
	svc	#0

msg:	.ascii	"usage: mmlab-mark ID (0..255)\n"
	.equ	msg_len, . - msg
