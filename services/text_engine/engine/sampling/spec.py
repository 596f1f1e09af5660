"""What one request asks of the sampler, resolved at admission, and what the sampler hands back."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from .constraint import Constraint


@dataclass(frozen=True)
class SampledToken:
    """One sampled token's log-probability and the most likely alternatives (ids, most likely first)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass
class SamplingSpec:
    """Resolved sampling parameters of one request (defaults already applied), and its per-request state.

    `bind()` creates the request's own generator. `constraint` (a grammar, gated by the reasoning markers) and
    `sampled` (the logprobs outbox) are per-request state too: the sampler writes them on the generation thread;
    the request's stream pops `sampled` on the event loop (a deque: one writer, one reader)."""

    temperature: float
    top_p: float
    top_k: int
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    min_tokens: int = 0
    end_ids: tuple[int, ...] = ()  # tokens that end the answer (EOS and stop_token_ids): banned before min_tokens
    banned_ids: tuple[int, ...] = ()  # tokens never sampled (EOS under ignore_eos)
    top_logprobs: int | None = None  # set: record every sampled token's logprob and this many alternatives
    constraint: Constraint | None = None
    generator: torch.Generator | None = field(default=None, repr=False)
    sampled: deque[SampledToken] = field(default_factory=deque, repr=False)

    def bind(self, device: torch.device) -> SamplingSpec:
        """Create the request's generator on the model's device (seeded when the client gave a seed)."""
        self.generator = torch.Generator(device=device)
        if self.seed is not None:
            self.generator.manual_seed(self.seed)
        else:
            self.generator.seed()
        return self

    @property
    def greedy(self) -> bool:
        """Temperature 0 means argmax, as in the OpenAI API."""
        return self.temperature <= 1e-5

    @property
    def penalized(self) -> bool:
        """Whether the request asked for presence, frequency or repetition penalties."""
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0 or self.repetition_penalty != 1.0

    @property
    def processed(self) -> bool:
        """Whether anything changes this request's logits before the choice (penalties, bias, bans, grammar)."""
        return bool(self.penalized or self.logit_bias or self.min_tokens or self.banned_ids or self.constraint)

    @property
    def plain_greedy(self) -> bool:
        """Argmax of the raw logits and nothing recorded: the one case the model's own argmax can serve."""
        return self.greedy and not self.processed and self.top_logprobs is None
