"""What every protocol's `plan` returns: its validated request and the request core's plan for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from services.common.config import ModelEntry

from ..core import Plan

RequestT = TypeVar("RequestT")


@dataclass
class ProtocolPlan(Generic[RequestT]):
    """A validated request of one protocol and its planned conversation (a protocol may add what it needs)."""

    request: RequestT
    core: Plan

    @property
    def entry(self) -> ModelEntry:
        """The model that answers."""
        return self.core.entry

    @property
    def n(self) -> int:
        """How many choices (engine calls)."""
        return self.core.n
