"""JSON request bodies of the web API, read strictly. Pure (no web server library).

A JSON object with a key twice is valid JSON, but parsers keep one of the values (orjson and the
standard library the last), and a proxy, a log or a filter in front may have judged the other:
``{"sql": "SELECT 1", "sql": "DROP …"}``. So such a body is refused, naming the key.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


class BadBody(ValueError):
    """The body is not one strict JSON document; the message says why."""


def parse(body: bytes) -> Any:
    """The JSON document in ``body``: UTF-8, no NaN or Infinity, no lone surrogate (orjson's
    rules), and no object with a key twice (at any depth). BadBody otherwise."""
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadBody(f"not JSON: {exc}") from None
    # orjson accepted it, so it is UTF-8 and standard JSON; this second read finds repeated keys.
    return json.loads(body.decode("utf-8"), object_pairs_hook=_unique)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise BadBody(f"duplicate key {key[:100]!r} in the JSON body")
        found[key] = value
    return found
