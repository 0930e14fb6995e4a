// Functions with known barrier contents for tests/test_elfinspect.py.
// Assembled with aarch64-linux-gnu-as, linked (with second.s) at a kernel-like address.
// --defsym BATCHED=1 moves vmap_pte_range's barrier after the loop and adds
// arch_leave_lazy_mmu_mode (the 6.16 shape); --defsym NO_IKCONFIG=1 drops the config.
        .arch armv8.7-a
        .text

// Every barrier kind once or more, no loop: counts only.
        .globl  counts_fn
        .globl  __pi_counts_fn
        .type   counts_fn, %function
        .type   __pi_counts_fn, %function
__pi_counts_fn:
counts_fn:
        dsb     ishst
        dsb     ishst
        dsb     ish
        dsb     sy
        dsb     nsh
        dsb     oshst
        isb
        isb
        isb
        dmb     ish
        dmb     ishld
        dmb     ishld
        dmb     oshld
        ssbb                    // not a DSB
        pssbb                   // not a DSB
        sb                      // not counted
        tlbi    vaale1is, x0
        tlbi    vaae1is, x1
        tlbi    vmalle1is
        tlbi    vale1is, x2
        tlbi    vale1is, x3
        tlbi    aside1is, x4
        tlbi    vae1, x5
        ret
        .size   counts_fn, .-counts_fn
        .size   __pi_counts_fn, .-__pi_counts_fn

// 6.12 shape: dsb ishst; isb per pte inside the loop. BATCHED: once after it.
        .globl  vmap_pte_range
        .type   vmap_pte_range, %function
vmap_pte_range:
.ifndef BATCHED
1:      str     x1, [x0], #8
        dsb     ishst
        isb
        subs    x2, x2, #1
        b.ne    1b
.else
1:      str     x1, [x0], #8
        subs    x2, x2, #1
        b.ne    1b
        dsb     ishst
        isb
.endif
        ret
        .size   vmap_pte_range, .-vmap_pte_range

.ifdef BATCHED
        .globl  arch_leave_lazy_mmu_mode
        .type   arch_leave_lazy_mmu_mode, %function
arch_leave_lazy_mmu_mode:
        dsb     ishst
        isb
        ret
        .size   arch_leave_lazy_mmu_mode, .-arch_leave_lazy_mmu_mode
.endif

// A DSB before the only loop: neither in nor after a loop.
        .globl  before_loop_fn
        .type   before_loop_fn, %function
before_loop_fn:
        dsb     sy
1:      subs    x2, x2, #1
        b.ne    1b
        ret
        .size   before_loop_fn, .-before_loop_fn

// Nested loops closed by TBNZ (inner) and CBNZ (outer); a DSB on the outer loop's
// target address counts as inside; two after the loops, one behind a forward branch.
        .globl  nested_fn
        .type   nested_fn, %function
nested_fn:
1:      dsb     ishst           // in (target of cbnz)
2:      sub     x3, x3, #1
        dsb     ish             // in (inner and outer)
        tbnz    x3, #5, 2b
        sub     x2, x2, #1
        cbnz    x2, 1b
        dsb     sy              // after
        b       3f              // forward: no loop
        nop
3:      dsb     nsh             // after
        ret
        .size   nested_fn, .-nested_fn

// An unconditional backward B makes a loop; CBZ forward does not.
        .globl  uncond_loop_fn
        .type   uncond_loop_fn, %function
uncond_loop_fn:
1:      ldr     x1, [x0]
        cbz     x1, 2f
        dsb     ishst           // in
        tbz     x1, #3, 2f
        b       1b
2:      ret
        .size   uncond_loop_fn, .-uncond_loop_fn

// flush_tlb_kernel_range as gcc -Os lays it out: the loop's exit branches *back* to a
// shared tail. That branch is backward but closes no cycle: the tail's DSB is after the
// loop, not in it, and the DSBs on the other paths are in neither count.
        .globl  shared_tail_fn
        .type   shared_tail_fn, %function
shared_tail_fn:
        cmp     x2, #0x200
        b.ls    2f
        dsb     ishst           // neither (the flush-all path)
        tlbi    vmalle1is
1:      dsb     ish             // after (the loop exits to here)
        isb
        ret
2:      dsb     ishst           // neither (before the loop)
3:      cmp     x0, x1
        b.cs    1b              // backward, but it leaves the loop
        tlbi    vaale1is, x0
        add     x0, x0, #1
        b       3b              // the loop
        .size   shared_tail_fn, .-shared_tail_fn

// A one-instruction loop (a branch to itself), then a DSB after it; and a BRK
// (BUG()) that does not fall through into the DSB behind it.
        .globl  spin_fn
        .type   spin_fn, %function
spin_fn:
        cbz     x1, 2f
        dsb     ishld           // neither
1:      cbnz    x0, 1b
        dsb     ish             // after
        ret
2:      brk     #0x800
        dsb     sy              // neither: only reachable from BRK, which stops
        ret
        .size   spin_fn, .-spin_fn

// Backward BL (a call) and a backward tail call out of the function: no loops.
        .globl  tail_fn
        .type   tail_fn, %function
tail_fn:
        dsb     ishst           // neither
        bl      tail_fn
        cbz     x0, 1f
        b       counts_fn
1:      ret
        .size   tail_fn, .-tail_fn

// A static function; second.s has another static `helper`.
        .type   helper, %function
helper:
        dmb     ish
        ret
        .size   helper, .-helper

// -Os shape: the barrier stays in an out-of-line helper that the pte loop calls.
        .type   set_pte_helper, %function
set_pte_helper:
        str     x1, [x0]
        dsb     ishst
        isb
        ret
        .size   set_pte_helper, .-set_pte_helper

        .globl  vmap_caller_fn
        .type   vmap_caller_fn, %function
vmap_caller_fn:
        stp     x29, x30, [sp, #-16]!
        bl      plain_fn            // no barriers: not recorded
        bl      set_pte_helper      // before the loop: neither
1:      bl      set_pte_helper      // in the loop
        subs    x2, x2, #1
        b.ne    1b
        bl      helper              // after the loop
        bl      init_fn             // after the loop, in another section
        bl      vmap_caller_fn      // recursion: not recorded
        ldp     x29, x30, [sp], #16
        ret
        .size   vmap_caller_fn, .-vmap_caller_fn

        .globl  plain_fn
        .type   plain_fn, %function
plain_fn:
        nop
        ret
        .size   plain_fn, .-plain_fn

        .section .rodata, "a"
        .globl  linux_banner
        .type   linux_banner, %object
linux_banner:
        .asciz  "Linux version 6.12.0-mmlab-test (test@example) (aarch64-linux-gnu-gcc 12.2.0) #1 SMP\n"
        .size   linux_banner, .-linux_banner
.ifndef NO_IKCONFIG
        .ascii  "IKCFG_ST"
        .globl  kernel_config_data
kernel_config_data:
        .incbin "config_data.gz"
        .globl  kernel_config_data_end
kernel_config_data_end:
        .ascii  "IKCFG_ED"
.endif
