"""FAKE guest console (a test double, not QEMU): prints the mmlab boot markers for the
token given as argv[1], then answers the first command line it reads with the console
text in argv[2] (a recorded arm64 oops) and stays alive without ever finishing the
command, as a guest whose kernel oopsed in a kernel thread would.

Used only for the one fault the test kernel cannot produce for real: an oops that does
not panic (the default kernel has no LKDTM, and sysrq-c panics).
"""

import sys
import time

token, crash = sys.argv[1], sys.argv[2]
out = sys.stdout.buffer
out.write(b"[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x000f0510]\r\n")
out.write(f"@@MMLAB-INIT:{token}\r\n@@MMLAB-READY:{token}\r\n".encode())
out.flush()
sys.stdin.buffer.readline()
out.write(b"@@MMLAB-BEGIN:")  # the token of the command does not matter: it never ends
out.flush()
for line in open(crash, "rb"):
    out.write(line.rstrip(b"\n") + b"\r\n")
    out.flush()
    time.sleep(0.005)
time.sleep(600)
