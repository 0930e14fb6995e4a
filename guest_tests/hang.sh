#!/bin/sh
# mmlab guest test: hang on purpose (never returns by itself), to prove that an entry that
# runs past its timeout is stopped with ^C, recorded as "timeout", and that the boot goes on
# with the next entry. Never part of a real plan; used by mmlab's own tests (selfcheck).
echo "mmlab-hang: sleeping until interrupted"
while :; do sleep 1; done
