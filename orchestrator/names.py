"""Names that become paths: kernel names, board names, plan entry ids.

They name directories under ``--out`` (results/<kernel>/<entry>/, boards/<board>/) and
lease files, so they are checked here, in one place, when an input file is loaded: letters,
digits and ``. _ + -``, starting with a letter or digit, at most 64 characters. No ``/``,
no ``..`` (a leading dot is refused), no spaces or control characters.
"""

from __future__ import annotations

import re

from orchestrator.errors import InputError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
HINT = "use letters, digits and . _ + - only, starting with a letter or digit, at most 64"


def is_safe_name(name: object) -> bool:
    return isinstance(name, str) and bool(NAME.match(name))


def check_name(name: object, what: str, where: str = "") -> str:
    """``name`` if it is safe as a path component; else a one-line InputError."""
    if not is_safe_name(name):
        prefix = f"{where}: " if where else ""
        raise InputError(f"{prefix}{what} {name!r} is not a short name (it becomes a "
                         "directory or file name)", hint=HINT)
    return name  # type: ignore[return-value]
