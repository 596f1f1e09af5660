"""A grammar constraint on one request's answer, gated by the reasoning markers.

A reasoning model's constraint starts after its reasoning ([/THINK], </think>): the reasoning itself is free.
Models that open the reasoning in the prompt (deepseek_r1 style) start `thinking`; Mistral-style models may
start with [THINK] or answer at once, so they start `undecided`: the first token is the grammar's or the
start marker. Models without reasoning start `constrained`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class Matcher(Protocol):
    """The grammar library's per-request state (sampling/grammar.py's GrammarMatcher)."""

    def accept(self, token_id: int) -> None: ...

    @property
    def is_finished(self) -> bool: ...


@dataclass
class Constraint:
    """One request's grammar, and where its output stands relative to the reasoning."""

    matcher: Matcher
    think_start: int | None = None  # reasoning markers of the model (None: no reasoning)
    think_end: int | None = None
    state: str = field(default="constrained")  # "undecided" | "thinking" | "constrained"
    # What the matcher was compiled from (sampling/grammar.py's GrammarSpec): an engine core in another process
    # (vLLM's, vllm_grammar.py) compiles its own matcher from it.
    spec: object = None

    @classmethod
    def for_model(
        cls,
        matcher: Matcher,
        think_start: int | None,
        think_end: int | None,
        starts_in_reasoning: bool,
        spec: object = None,
    ) -> Constraint:
        """The gate for a model's reasoning format."""
        if think_end is None:
            return cls(matcher, spec=spec)
        return cls(matcher, think_start, think_end, "thinking" if starts_in_reasoning else "undecided", spec)

    @property
    def masks(self) -> bool:
        """Whether the grammar decides the next token (while thinking, nothing is masked)."""
        return self.state != "thinking"

    @property
    def also_allowed(self) -> int | None:
        """A token the mask must let through besides the grammar's: the reasoning start, before anything else."""
        return self.think_start if self.state == "undecided" else None

    def observe(self, token_id: int) -> None:
        """Advance past the sampled token (generation thread)."""
        if self.state == "undecided" and token_id == self.think_start:
            self.state = "thinking"
        elif self.state == "thinking":
            if token_id == self.think_end:
                self.state = "constrained"
        else:
            self.state = "constrained"
            self.matcher.accept(token_id)
