"""What Python's JSON parser lets through but nothing after it can carry: checked once, on the parsed body.

- A lone UTF-16 surrogate (`"\\ud800"` without its pair) is valid JSON syntax but not text: it cannot be
  encoded as UTF-8, so protobuf (and the tokenizer) would fail on it long after the request was accepted.
- `NaN`, `Infinity` and `-Infinity` (and numbers so large they become infinity, like `1e999`) are not JSON;
  Python accepts them, OpenAI's parser and every strict client do not, and json.dumps would write them
  back out into tool schemas the engine cannot read.
- Nesting deeper than `MAX_DEPTH` serves no chat request and would reach the recursion limits of the
  serializers behind this check.

Each is a 400 whose `param` is the path of the offending value (`messages[0].content`).
"""

from __future__ import annotations

import math
import re

from services.common.errors import InvalidRequestError

MAX_DEPTH = 64  # objects and arrays inside one another; JSON Schemas of tools rarely pass 10
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_json_values(data: object) -> None:
    """Raise a 400 for the first value in `data` (as json.loads returns it) that is not carriable JSON."""
    stack: list[tuple[object, str, int]] = [(data, "", 0)]  # iterative: deep input must not exhaust the stack
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise _invalid(path, "contains a lone UTF-16 surrogate (not valid Unicode text)", "invalid_unicode")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _invalid(path, f"{value} is not a JSON number (NaN and Infinity are not allowed)", "invalid_json")
        elif isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise _invalid(path, f"nested more than {MAX_DEPTH} levels deep", "invalid_json")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and _SURROGATE.search(key):
                    raise _invalid(
                        path, "has a key with a lone UTF-16 surrogate (not valid Unicode text)", "invalid_unicode"
                    )
                stack.append((item, _join(path, key), depth + 1))


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _invalid(path: str, problem: str, code: str) -> InvalidRequestError:
    where = f"'{path}'" if path else "the request body"
    return InvalidRequestError(f"Invalid value for {where}: {problem}.", param=path or None, code=code)
