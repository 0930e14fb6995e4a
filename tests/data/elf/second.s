// Second object for tests/test_elfinspect.py: a static function with the same name as
// one in census.s, and a function in another executable section (.init.text).
        .arch armv8-a
        .text
        .type   helper, %function
helper:
        isb
        isb
        ret
        .size   helper, .-helper

        .section .init.text, "ax"
        .globl  init_fn
        .type   init_fn, %function
init_fn:
        tlbi    vmalle1
        dsb     nsh
        isb
        ret
        .size   init_fn, .-init_fn
