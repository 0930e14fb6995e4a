"""The kernel stage: trees (Debian archive, git, tarballs, .debs), patch series, kernel
configuration, builds and their cached artifacts, and reading a built kernel (ELF
census, what its code says). In: a tree, a series, a fragment set. Out: an Artifact
(Image, vmlinux, modules, config, metadata).
"""
