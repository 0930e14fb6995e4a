"""The board userland image and its keys: dropbear's host key, mmlab's login key, known_hosts.

``images/board.toml`` is the guest initramfs plus dropbear, sftp-server and kexec-tools. Two
things cannot live in the recipe because they are one installation's secrets, so they are
generated once and kept under ``cache_dir("board-keys")``:

* the dropbear host key (``dropbear_ed25519_host_key``), made by Debian's arm64
  ``dropbearkey`` run on the host through ``qemu-aarch64-static -L <closure>`` (no binfmt, no
  root), and its OpenSSH public line (``dropbearkey -y``);
* mmlab's client key (``id_ed25519``, OpenSSH format, mode 0600), whose public line becomes
  root's ``authorized_keys`` in the image.

``known_hosts_line(address, port)`` gives the entry a user adds to the known_hosts that the
SSH target checks (``[127.0.0.1]:2222 ssh-ed25519 AAAA...`` for a non-22 port).

Usage::

    keys = board_keys()                       # BoardKeys(host_key, host_pub, client_key, ...)
    image = build_board_image(artifact)       # InitramfsImage with keys and modules
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator.atomic import atomic_write_bytes, atomic_write_text
from orchestrator.errors import MissingToolError, TargetError
from orchestrator.kernel import debpkg
from orchestrator.paths import IMAGES, cache_dir

RECIPE = IMAGES / "board.toml"
HOST_KEY_IN_IMAGE = "etc/dropbear/dropbear_ed25519_host_key"
AUTHORIZED_KEYS_IN_IMAGE = "root/.ssh/authorized_keys"

# dropbearkey's closure: (package, file in the package, path under the -L prefix)
_DROPBEARKEY_CLOSURE = [
    ("dropbear-bin", "usr/bin/dropbearkey", "usr/bin/dropbearkey"),
    ("libc6", "lib/aarch64-linux-gnu/ld-linux-aarch64.so.1", "lib/ld-linux-aarch64.so.1"),
    ("libc6", "lib/aarch64-linux-gnu/libc.so.6", "lib/aarch64-linux-gnu/libc.so.6"),
    ("libtomcrypt1", "usr/lib/aarch64-linux-gnu/libtomcrypt.so.1.0.1",
     "usr/lib/aarch64-linux-gnu/libtomcrypt.so.1"),
    ("libtommath1", "usr/lib/aarch64-linux-gnu/libtommath.so.1.2.0",
     "usr/lib/aarch64-linux-gnu/libtommath.so.1"),
    ("libgmp10", "usr/lib/aarch64-linux-gnu/libgmp.so.10.4.1",
     "usr/lib/aarch64-linux-gnu/libgmp.so.10"),
]


@dataclass(frozen=True)
class BoardKeys:
    """Where the generated keys are, and their public lines."""

    directory: Path
    host_key: Path          # dropbear format, goes into the image
    host_public: str        # "ssh-ed25519 AAAA..." (no comment)
    client_key: Path        # OpenSSH private key mmlab logs in with
    client_public: str      # "ssh-ed25519 AAAA... mmlab"

    def known_hosts_line(self, address: str = "127.0.0.1", port: int = 22) -> str:
        host = address if port == 22 else f"[{address}]:{port}"
        return f"{host} {self.host_public}"

    def write_known_hosts(self, path: Path, endpoints: list[tuple[str, int]]) -> Path:
        """A known_hosts file with the board host key for each (address, port)."""
        atomic_write_text(path, "".join(self.known_hosts_line(a, p) + "\n"
                                        for a, p in endpoints))
        return path


def _emulator() -> str:
    emu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if emu is None:
        raise MissingToolError("qemu-aarch64-static not found (needed to run the arm64 "
                               "dropbearkey on this host)", hint="apt-get install qemu-user-static")
    return emu


def _dropbearkey(args: list[str]) -> str:
    """Run Debian's arm64 dropbearkey on the host through qemu-user with its closure."""
    with tempfile.TemporaryDirectory(prefix="mmlab-dbkey-") as tmp:
        root = Path(tmp)
        for pkg, src, dst in _DROPBEARKEY_CLOSURE:
            p = root / dst
            p.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(debpkg.unpack(pkg) / src, p)
        res = subprocess.run([_emulator(), "-L", str(root), str(root / "usr/bin/dropbearkey"),
                              *args], capture_output=True, text=True, timeout=120, check=False)
    if res.returncode != 0:
        raise TargetError(f"dropbearkey {' '.join(args)} failed: "
                          f"{(res.stderr or res.stdout).strip()[:200]}",
                          hint="check qemu-user-static and the dropbear-bin package")
    return res.stdout


def board_keys(directory: Path | None = None) -> BoardKeys:
    """The installation's board keys, generated on first use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = directory or cache_dir("board-keys")
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    host_key = d / "dropbear_ed25519_host_key"
    host_pub = d / "dropbear_ed25519_host_key.pub"
    if not host_key.is_file() or not host_pub.is_file():
        with tempfile.TemporaryDirectory(prefix="mmlab-hk-", dir=d) as tmp:
            # dropbearkey writes through the -L prefix only for paths it resolves there;
            # an absolute host path outside the prefix is used as is.
            out = Path(tmp) / "key"
            _dropbearkey(["-t", "ed25519", "-f", str(out)])
            pub = _dropbearkey(["-y", "-f", str(out)])
            line = next((ln for ln in pub.splitlines() if ln.startswith("ssh-")), None)
            if line is None:
                raise TargetError("dropbearkey -y printed no public key",
                                  hint=f"output was: {pub[:200]!r}")
            atomic_write_bytes(host_key, out.read_bytes(), mode=0o600)
            atomic_write_text(host_pub, " ".join(line.split()[:2]) + "\n")
    client_key = d / "id_ed25519"
    client_pub = d / "id_ed25519.pub"
    if not client_key.is_file() or not client_pub.is_file():
        key = Ed25519PrivateKey.generate()
        priv = key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.OpenSSH,
                                 serialization.NoEncryption())
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                            serialization.PublicFormat.OpenSSH)
        atomic_write_bytes(client_key, priv, mode=0o600)
        atomic_write_text(client_pub, pub.decode() + " mmlab\n")
    return BoardKeys(directory=d, host_key=host_key,
                     host_public=host_pub.read_text().strip(),
                     client_key=client_key, client_public=client_pub.read_text().strip())


def build_board_image(artifact, keys: BoardKeys | None = None):
    """The board initramfs for ``artifact`` (its modules inside), with the keys added."""
    from orchestrator.image.initramfs import build_initramfs

    keys = keys or board_keys()
    # (data, mode): the host's private key is 0600 inside the image, and an image holding a
    # secret is itself written 0600 in the cache (and uploaded 0600)
    extra = {HOST_KEY_IN_IMAGE: (keys.host_key.read_bytes(), 0o600),
             AUTHORIZED_KEYS_IN_IMAGE: ((keys.client_public + "\n").encode(), 0o600)}
    return build_initramfs(artifact, recipe_path=RECIPE, extra_files=extra)
