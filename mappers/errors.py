"""Root of the mapping errors: every refusal of untrusted input by a mapper is a ``MappingError``.

Each mapper module defines its own subclasses (``InsError`` in ``ins``, ``UnsafeArchiveError`` in ``xdm`` …),
so callers can catch one type at a boundary and still show the precise message to a person.
"""

from __future__ import annotations


class MappingError(ValueError):
    """Input that a mapper refuses; ``str(error)`` is a sentence a person can act on."""
