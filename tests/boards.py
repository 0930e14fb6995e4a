"""Shared helpers for the SSH-board tests: QEMU stand-in boards running dropbear.

Imported by tests/test_ssh_board.py and tests/test_lab.py (pytest puts tests/ on sys.path).
The boards are real: QEMU arm64 guests booted from the board kernel (kernel_configs/
board.config on the default set) and the board image (images/board.toml: dropbear,
sftp-server, kexec-tools), reached over 127.0.0.1 port forwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.image.board_image import BoardKeys
from orchestrator.targets.ssh import BoardConfig
from orchestrator.targets.standin_board import CMDLINE, QemuBoard

# TCG on 2 shared cores: commands run ~4x slower than on hardware
TIMEOUT_SCALE = 4.0


def board_config(name: str, board: QemuBoard, keys: BoardKeys, known_hosts: Path,
                 **kw) -> BoardConfig:
    """How the SSH target reaches a stand-in board: mmlab's key, a known_hosts with the
    board's key, the power hook that kills and restarts its QEMU."""
    base = dict(name=name, address="127.0.0.1", port=board.port, user="root",
                key=str(keys.client_key), agent=False, known_hosts=str(known_hosts),
                power=[sys.executable, "-m", "orchestrator.targets.standin_board", "power-cycle",
                       str(board.state_dir)],
                console=["tail", "-n", "0", "-F", str(board.console_log)],
                board_keys=str(keys.directory), cmdline=list(CMDLINE), timeout_scale=TIMEOUT_SCALE, boot_timeout=90,
                restore_timeout=90, tags={"soc": "qemu-virt", "cpu": "max"})
    base.update(kw)
    return BoardConfig(**base)
