"""Mistakes in the user's input, told apart from bugs.

The command line prints a :class:`UserError` as one ``error:`` line (plus a hint) and exits
with status 2; any other exception is a bug and keeps its traceback. ``--debug`` or
``LIGHTNING_ALEXNET_DEBUG=1`` shows the traceback of user errors too. The subclasses keep the
built-in types, so ``except FileNotFoundError`` and ``except ValueError`` still catch them.
"""

from __future__ import annotations


class UserError(Exception):
    """A bad path, option or checkpoint given by the user; the message names it and the fix."""


class UserValueError(UserError, ValueError):
    """A bad option value."""


class UserPathError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (or is not the expected kind)."""
