"""One base for every error drill raises on purpose, each kind with a stable ``code``.

A command line catches :class:`DrillError`, prints its one line and exits 2;
anything else escaping is a bug. Scripts and records use ``code``, never the
message's wording. (``policies`` and ``targets`` are leaves below this package:
their few exceptions are ``ValueError`` subclasses of pure parsers, which the
agent turns into config problems or findings before anything leaves it.)
"""

from __future__ import annotations


class DrillError(Exception):
    """Something drill could not do, told in one line; ``code`` names the kind for scripts.

    ``code`` is set per class; a class whose kinds are only known per instance
    (restic's failures) sets it in ``__init__``.
    """

    code: str = "error"


class InputError(DrillError):
    """A request that cannot be run as given (unknown name, bad value); the message says what to change."""

    code = "bad_input"
