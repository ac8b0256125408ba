"""Text for the terminal: names from a study store may hold anything.

A study name, a host or a failure reason is data that anyone who can write the store
chose; printed raw, an escape sequence in it would drive the terminal (move the cursor,
rewrite earlier lines, set the window title). Every name the command line prints goes
through :func:`printable`.
"""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: object) -> str:
    """``text`` with every non-printable character (controls, escapes, line breaks,
    bidirectional overrides) written as a Python escape, e.g. ``\\x1b``.

    Example:
        >>> printable("ok\\x1b[2J\\nname")
        'ok\\\\x1b[2J\\\\nname'
        >>> printable("ünïcode-ok")
        'ünïcode-ok'
    """
    value = str(text)
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in value)
