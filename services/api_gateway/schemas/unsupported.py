"""Request fields the OpenAI API has and this server refuses: a 400 naming the field, never silently ignored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationInfo, field_validator


def is_set(value: Any) -> bool:
    """A field counts as sent when it is not null."""
    return value is not None


def unsupported(*fields: str, why: str, sent: Callable[[Any], bool] = is_set):
    """A validator of a request model refusing `fields` when `sent`; `why` may name the field as `{field}`.

    Assigned in the class body (`_no_audio = unsupported("audio", why="audio output is not supported")`)."""

    def refuse(cls, value, info: ValidationInfo):
        if sent(value):
            raise ValueError(why.format(field=info.field_name))
        return value

    return field_validator(*fields)(classmethod(refuse))
