"""Per-request sampling inside the continuous-batching loop.

transformers' continuous-batching manager samples the whole batch with one global RNG and supports only
temperature/top-k/top-p per request. OpenAI clients also expect `seed` to make a request reproducible
whatever else is in the batch, and presence/frequency penalties. `RequestSampler` takes the place of the
manager's logits-processor list (same duck-typed interface): it sees which request owns each row of
logits, samples each row with that request's own `torch.Generator`, and returns scores that are -inf
everywhere but the chosen token, so the manager's own argmax picks exactly that token.

Threading: every method except `SamplingSpec` construction runs on the manager's generation thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

SPEC_KEY = "proxyvision_sampling"


@dataclass
class SamplingSpec:
    """Resolved sampling parameters of one request (defaults already applied)."""

    temperature: float
    top_p: float
    top_k: int
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    generator: torch.Generator | None = field(default=None, repr=False)

    def bind(self, device: torch.device) -> "SamplingSpec":
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
        """Whether the request asked for presence or frequency penalties."""
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


class RequestSampler:
    """Drop-in for `ContinuousBatchingLogitsProcessorList` that samples every row itself."""

    # The manager reads these attributes.
    do_processing = True
    tensors_required = 0

    def __init__(self) -> None:
        self.supported_keys = {SPEC_KEY: SamplingSpec}
        self.ignored_keys: set[str] = set()
        self._rows: list = []

    def check_kwargs(self, kwargs: dict) -> None:
        """Every request must carry its SamplingSpec (the engine always adds one)."""
        if not isinstance(kwargs.get(SPEC_KEY), SamplingSpec):
            raise ValueError("request is missing its SamplingSpec")

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        """No tensor arguments: the specs live on the request states."""

    def prepare_tensor_args(self, requests_in_batch: list, arg_storage: torch.Tensor) -> torch.Tensor:
        """Remember which request owns each logits row (rows follow requests that have a new token)."""
        self._rows = [r.state for r in requests_in_batch if r.has_new_token]
        return arg_storage

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, _args: torch.Tensor) -> torch.Tensor:
        """Pick one token per row; return one-hot scores (0 at the token, -inf elsewhere)."""
        # The manager passes one row per request in the batch; only the first len(self._rows) (requests with a
        # new token, in order) matter. The rest belong to requests still prefilling and are discarded.
        states = self._rows[: scores.shape[0]]
        specs = [state.logit_processor_kwargs[SPEC_KEY] for state in states]
        if all(spec.greedy and not spec.penalized for spec in specs):
            return scores  # all greedy: the manager's own argmax over the raw scores is the same choice
        logits = scores[: len(specs)].float()
        for row, (state, spec) in enumerate(zip(states, specs)):
            if spec.penalized:
                logits[row] = apply_penalties(logits[row], spec, generated_so_far(state))
        # Rows past the requests with a new token get token 0: valid, and discarded by the manager.
        chosen = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
        chosen[: len(specs)] = sample_batch(logits, specs)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen.unsqueeze(1), 0.0)
        return out


def generated_so_far(state) -> list[int]:
    """All tokens a request has generated. After a preemption the manager restarts the request with its
    earlier output folded into the prompt (`initial_tokens` past `_true_initial_tokens`), and
    `generated_tokens` holds only what came since; penalties must count both, as the output does."""
    if state._true_initial_tokens:
        return state.initial_tokens[state._true_initial_tokens :] + state.generated_tokens
    return state.generated_tokens


def apply_penalties(logits: torch.Tensor, spec: SamplingSpec, generated: list[int]) -> torch.Tensor:
    """OpenAI's presence/frequency penalties over the tokens generated so far."""
    if not spec.penalized or not generated:
        return logits
    ids = torch.tensor(generated, device=logits.device)
    counts = torch.bincount(ids, minlength=logits.shape[-1])[: logits.shape[-1]].to(logits.dtype)
    return logits - spec.frequency_penalty * counts - spec.presence_penalty * (counts > 0).to(logits.dtype)


def sample_batch(logits: torch.Tensor, specs: list[SamplingSpec]) -> torch.Tensor:
    """One token per row of `logits` [rows, vocab], each row with its own request's parameters.

    The tensor work (temperature, top-k, top-p, softmax) is done for the whole batch at once; only one
    uniform number per sampled row comes from that request's own generator, and it is turned into a token
    by inverse-CDF lookup. So a seeded request draws the same tokens whatever else is in the batch."""
    rows, vocab = logits.shape
    device = logits.device
    greedy = torch.tensor([spec.greedy for spec in specs], device=device)
    temperature = torch.tensor([1.0 if spec.greedy else spec.temperature for spec in specs], device=device)
    top_k = torch.tensor([spec.top_k if 0 < spec.top_k < vocab else vocab for spec in specs], device=device)
    top_p = torch.tensor([spec.top_p for spec in specs], device=device)
    uniform = torch.stack([
        torch.zeros((), device=device) if spec.greedy else torch.rand((), generator=spec.generator, device=device)
        for spec in specs
    ])  # fmt: skip
    scaled = logits / temperature[:, None]
    if bool(((top_k < vocab) | (top_p < 1.0)).any()):
        scaled, order = torch.sort(scaled, dim=-1, descending=True)
        ranks = torch.arange(vocab, device=device)[None, :]
        scaled = scaled.masked_fill(ranks >= top_k[:, None], float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        # Drop a token when the tokens before it already reach top_p (the first token always stays).
        scaled = scaled.masked_fill(probs.cumsum(dim=-1) - probs >= top_p[:, None], float("-inf"))
    else:
        order = None  # nothing to cut: no need to sort the vocabulary
    cdf = torch.softmax(scaled, dim=-1).cumsum(dim=-1)
    picked = torch.searchsorted(cdf, (uniform * cdf[:, -1])[:, None]).clamp_(max=vocab - 1)
    sampled = (order.gather(1, picked) if order is not None else picked).squeeze(1)
    return torch.where(greedy, logits.argmax(dim=-1), sampled)


def sample_row(logits: torch.Tensor, spec: SamplingSpec, generated: list[int]) -> int:
    """Sample one token from one row of logits with the request's own generator (as in a batch)."""
    return int(sample_batch(apply_penalties(logits.float(), spec, generated)[None, :], [spec])[0])
