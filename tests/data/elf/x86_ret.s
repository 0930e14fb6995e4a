# An x86-64 object: tests/test_elfinspect.py checks that it is refused as "not aarch64".
        .text
        .globl  f
f:
        ret
