/*
 * Bare-metal AArch64 test program for the mmlab_barriers QEMU plugin.
 *
 * Runs at EL1 with the MMU off on `qemu-system-aarch64 -M virt -cpu max -kernel
 * barriers.elf` and executes known numbers of each barrier kind, in three functions
 * (for attribution by address range), inside marker windows (for windowing), and on two
 * vCPUs at once when started with -smp 2 (for lost-update checks). It powers the machine
 * off through PSCI SYSTEM_OFF (HVC: QEMU's virt board emulates PSCI when no firmware is
 * loaded). Expected counts are in tests/test_barrier_plugin.py; keep the two in step.
 *
 * Window (label)  what runs                                    expected counts
 *   0 (boot)      _start prologue                              dsb.sy 1, isb 1 in (user)
 *   1 (1)         func_a(1000)                                 func_a: dsb.ishst 1000, isb 1000
 *   2 (2)         func_b(300), func_a(7)                       func_b: dmb.ishld 300,
 *                                                              tlbi.vaale1is 300, dsb.ish 301,
 *                                                              tlbi.vmalle1is 1, isb 1;
 *                                                              func_a: dsb.ishst 7, isb 7
 *   3 (2)         func_a(5)                                    func_a: dsb.ishst 5, isb 5
 *   4 (3)         func_c(10000000) on each online vCPU           func_c: dsb.ish, dmb.ishst
 *                                                             10000000 x vCPUs
 *   5 (4)         func_d(100): atomics, one vCPU               func_d: atomic.lse.al 200
 *                                                              (ldaddal, swpal), atomic.lse
 *                                                              100 (stadd), atomic.lse.l 100
 *                                                              (staddl), atomic.cas.al 100,
 *                                                              atomic.stxr 100, atomic.stlxr
 *                                                              100, dmb.ish 100 (LL/SC loops
 *                                                              that succeed first time)
 *   6 (0)         _start epilogue                              dsb.nsh 1 in (user)
 *
 * func_d needs LSE (-cpu max has it; assembled with -march=armv8.1-a).
 */

/* MOVZ XZR, #(0x4D00 | id), LSL #48: the mmlab window marker (a no-op) */
.macro MARKER id
	.inst 0xD2E0001F | ((0x4D00 | \id) << 5)
.endm

	.equ	FUNC_C_LOOPS, 10000000

	.text
	.global _start
_start:
	dsb	sy
	isb

	MARKER	1
	mov	x0, #1000
	bl	func_a

	MARKER	2
	mov	x0, #300
	bl	func_b
	mov	x0, #7
	bl	func_a

	MARKER	2
	mov	x0, #5
	bl	func_a

	MARKER	3
	/* PSCI CPU_ON(target MPIDR 1, entry secondary, context 0); fails with -smp 1 */
	movz	w0, #0x0003
	movk	w0, #0xC400, lsl #16
	mov	x1, #1
	adr	x2, secondary
	mov	x3, #0
	hvc	#0
	mov	x19, x0			/* 0: the secondary runs */
	ldr	x0, =FUNC_C_LOOPS
	bl	func_c
	cbnz	x19, 2f
	adr	x1, secondary_done
1:	ldar	w2, [x1]
	cbz	w2, 1b
2:
	MARKER	4
	mov	x0, #100
	bl	func_d

	MARKER	0
	dsb	nsh

	/* PSCI SYSTEM_OFF */
	movz	w0, #0x0008
	movk	w0, #0x8400, lsl #16
	hvc	#0
3:	wfi
	b	3b

secondary:
	ldr	x0, =FUNC_C_LOOPS
	bl	func_c
	adr	x1, secondary_done
	mov	w2, #1
	stlr	w2, [x1]
	/* PSCI CPU_OFF */
	movz	w0, #0x0002
	movk	w0, #0x8400, lsl #16
	hvc	#0
4:	wfi
	b	4b

	.type	func_a, %function
func_a:				/* x0 iterations of dsb ishst; isb */
1:	dsb	ishst
	isb
	subs	x0, x0, #1
	b.ne	1b
	ret
	.size	func_a, . - func_a

	.type	func_b, %function
func_b:				/* x0 iterations of dmb ishld; tlbi vaale1is; dsb ish */
	mov	x1, #0
1:	dmb	ishld
	tlbi	vaale1is, x1
	dsb	ish
	add	x1, x1, #1
	subs	x0, x0, #1
	b.ne	1b
	tlbi	vmalle1is
	dsb	ish
	isb
	ret
	.size	func_b, . - func_b

	.type	func_c, %function
func_c:				/* x0 iterations of dsb ish; dmb ishst */
1:	dsb	ish
	dmb	ishst
	subs	x0, x0, #1
	b.ne	1b
	ret
	.size	func_c, . - func_c

	.type	func_d, %function
func_d:				/* x0 iterations of each kind of atomic read-modify-write */
	adr	x1, atomic_word
	mov	x2, #1
1:	ldaddal	x2, x3, [x1]		/* atomic.lse.al */
	swpal	x2, x3, [x1]		/* atomic.lse.al */
	stadd	x2, [x1]		/* atomic.lse */
	staddl	x2, [x1]		/* atomic.lse.l */
	mov	x3, x2
	casal	x3, x2, [x1]		/* atomic.cas.al */
2:	ldxr	x4, [x1]		/* LL/SC relaxed: atomic.stxr */
	add	x4, x4, #1
	stxr	w5, x4, [x1]
	cbnz	w5, 2b
3:	ldxr	x4, [x1]		/* LL/SC fully ordered (Linux's style): atomic.stlxr + dmb ish */
	add	x4, x4, #1
	stlxr	w5, x4, [x1]
	cbnz	w5, 3b
	dmb	ish
	subs	x0, x0, #1
	b.ne	1b
	ret
	.size	func_d, . - func_d

	.ltorg

	.data
	.balign	8
secondary_done:
	.word	0
	.balign	8
atomic_word:
	.quad	0
