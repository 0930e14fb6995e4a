"""The barrier-counting stage: the QEMU TCG plugin (built from the qemu source package's
header), its windows and counts, and per-loop barrier/TLBI/atomic/instruction counts of
test_vmalloc workloads, split into the work the model describes and what it leaves out
(left_out.toml). In: an Artifact. Out: per-loop counts per function.
"""
