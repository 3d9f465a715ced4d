"""The identity of a result: the canonical JSON of every setting that changes it, hashed. A bench run's id
(``RunSpec.run_id``) and a d90 search's settings are identified alike, so a changed setting is a new result, never
an old one answered again."""
from __future__ import annotations

import hashlib
import json
import re

from peftzoo._atomic import dumps

DIGITS = 12  # hex digits of the hash kept in ids


def canonical(config: dict) -> dict:
    """``config`` as plain JSON data (tuples as lists, NaN as null), which is what a file records of it."""
    return json.loads(dumps(config))


def digest(config: dict) -> str:
    """The hash of ``config``'s canonical JSON: equal for equal settings, however they were typed."""
    text = json.dumps(canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:DIGITS]


def readable(text: str) -> str:
    """``text`` safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", text)
