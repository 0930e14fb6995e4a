"""Targets: where a kernel artifact boots and guest tests run (QEMU now, SSH boards later).

See :mod:`orchestrator.targets.base` for the interface and :mod:`.qemu` for QEMU.
``make_target("qemu:default")`` turns a target spec from a plan or the command line into a
:class:`Target`.
"""

from __future__ import annotations

from orchestrator.errors import InputError
from orchestrator.targets.base import (
    BootInfo,
    BootTimeout,
    CommandTimeout,
    GuestDied,
    KernelCrash,
    KernelOops,
    KernelPanic,
    RunResult,
    Session,
    Target,
    TargetFault,
)

__all__ = [
    "BootInfo", "BootTimeout", "CommandTimeout", "GuestDied", "KernelCrash", "KernelOops",
    "KernelPanic", "RunResult", "Session", "Target", "TargetFault", "make_target",
]


def make_target(spec: str = "qemu") -> Target:
    """A target from a spec: ``qemu`` or ``qemu:<profile>`` (a name in qemu_profiles/ or a
    path to a profile .toml)."""
    kind, _, arg = spec.partition(":")
    if kind == "qemu":
        from orchestrator.targets.qemu import QemuTarget

        return QemuTarget(arg or "default")
    raise InputError(f"unknown target {spec!r}",
                     hint="use qemu or qemu:<profile> (see qemu_profiles/)")
