"""The one error an import raises: the package is wrong, and the message names the file and field."""

from __future__ import annotations


class PackageError(ValueError):
    """A package that cannot be imported; the message starts with the file (and field) at fault."""
