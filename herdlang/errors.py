"""The one base class for errors a user causes below the language layer.

A missing or corrupt plan, checkpoint, data file or store entry, a failed gate, a
kernel backend that cannot run here: each raises a subclass of `UserError`, and the CLI
prints its message (which names the file and a hint) instead of a traceback. Anything
else that escapes is a bug in herd and is reported as one.
"""

from __future__ import annotations


class UserError(Exception):
    """Raised for bad input or environment, never for a bug in herd."""
