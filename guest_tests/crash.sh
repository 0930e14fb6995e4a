#!/bin/sh
# mmlab guest test: crash the kernel on purpose (sysrq 'c'), to prove that a crash during a
# plan entry becomes a "crashed" verdict with the console log kept, and that the run goes on.
# Never part of a real plan; used by mmlab's own tests and `mmlab run --plan selfcheck`.
echo "mmlab-crash: triggering a kernel crash via /proc/sys/kernel/sysrq"
echo 1 > /proc/sys/kernel/sysrq
echo c > /proc/sysrq-trigger
sleep 5
echo "mmlab-crash: still alive?!"
exit 1
