"""Schemathesis hook (named by schemathesis.toml): send whole-number floats as integers.

JSON Schema counts 45.0 as an integer, and schemathesis 4 generates such floats for `type:
integer`. The server takes integers only as JSON integers: a snowflake sent as a float would
lose digits past 2**53 without a word, so `{"user": 4.6e17}` is refused (README: Decisions).
"""

from __future__ import annotations

from typing import Any

import schemathesis


def _ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    return value


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    return _ints(body)
