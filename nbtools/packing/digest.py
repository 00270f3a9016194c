"""One way to hash several parts: each part, then a separator, so ("ab", "c") != ("a", "bc")."""

from __future__ import annotations

import hashlib


def parts_digest(*parts: bytes | str):
    """A sha256 object over ``parts`` (str encoded as UTF-8), each followed by a NUL separator."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest
