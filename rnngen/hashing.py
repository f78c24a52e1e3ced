"""Content hashes that name data and runs (the same input always gets the same key)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def content_key(payload: Any, length: int = 16) -> str:
    """Hash of a JSON-serialisable payload with sorted keys."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
