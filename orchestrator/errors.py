"""Errors a user can act on.

Every failure that reaches the user is an :class:`MmlabError`: one line saying what went
wrong, and a hint saying what to do. The CLI prints ``mmlab: error: <message>`` and, when
there is one, ``mmlab: hint: <hint>``, and exits with ``exit_code``.
"""

from __future__ import annotations


class MmlabError(Exception):
    """An error with a one-line message and an optional hint for the user."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, *, log: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.log = log  # path of a log file with the full story, if any

    def __str__(self) -> str:  # one line, always
        return self.message.replace("\n", " ")

    def render(self) -> str:
        lines = [f"mmlab: error: {self}"]
        if self.log:
            lines.append(f"mmlab: log: {self.log}")
        if self.hint:
            lines.append(f"mmlab: hint: {self.hint}")
        return "\n".join(lines)


class MissingToolError(MmlabError):
    """A host tool is missing; the hint names the Debian package."""


class InputError(MmlabError):
    """Bad user input: a missing tree, a corrupt tarball, an unknown option..."""


class SeriesApplyError(MmlabError):
    """A patch of a series does not apply: names the patch, the file and the hunk."""


class ConfigError(MmlabError):
    """A kernel config option asked for by a fragment did not stick."""


class BuildError(MmlabError):
    """The kernel build failed; the message holds the first compiler error."""


class TargetError(MmlabError):
    """A boot or a target session failed (timeout, panic, lost connection)."""
