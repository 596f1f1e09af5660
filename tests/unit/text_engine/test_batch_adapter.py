"""The adapter between transformers' continuous-batching manager and our sampling pipeline (batcher.py):
which request owns which logits row, one-hot scores back, and the token lists it reads from request states."""

import torch

from services.text_engine.engine.batcher import SPEC_KEY, RequestSampler, generated_so_far
from services.text_engine.engine.sampling.spec import SamplingSpec


def spec(**kw):
    base = {"temperature": 1.0, "top_p": 1.0, "top_k": 0}
    base.update(kw)
    return SamplingSpec(**base).bind(torch.device("cpu"))


class _State:
    """The fields of the manager's RequestState that the sampler reads."""

    def __init__(self, s, generated=()):
        self.logit_processor_kwargs = {SPEC_KEY: s}
        self.generated_tokens = list(generated)
        self.initial_tokens = [1]
        self._true_initial_tokens = 0  # set by the manager once a request was preempted and resumed


class _Future:
    def __init__(self, state, has_new_token=True):
        self.state, self.has_new_token = state, has_new_token


def test_request_sampler_returns_one_hot_rows_for_requests_with_new_tokens():
    sampler = RequestSampler()
    prefilling = _Future(_State(spec(temperature=0.0)), has_new_token=False)
    a = _Future(_State(spec(temperature=0.0)))
    b = _Future(_State(spec(temperature=0.0, frequency_penalty=0.5)))  # one penalized row: the full pipeline
    sampler.prepare_tensor_args([prefilling, a, b], torch.empty(0, 2, dtype=torch.int32))
    scores = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    out = sampler(torch.zeros(2, dtype=torch.long), scores, torch.empty(0))
    assert out.argmax(dim=-1).tolist() == [1, 0]
    assert torch.isinf(out).sum().item() == 4  # everything but the chosen token is -inf


def test_rows_of_requests_still_prefilling_get_a_valid_token():
    """The manager hands more logits rows than requests with a new token; the extra rows must not hold
    garbage indices (they did once: an uninitialised tensor crashed a mixed prefill/decode batch)."""
    sampler = RequestSampler()
    sampler.prepare_tensor_args([_Future(_State(spec(temperature=1.0, seed=3)))], torch.empty(0, 2, dtype=torch.int32))
    out = sampler(torch.zeros(3, dtype=torch.long), torch.randn(3, 5), torch.empty(0))
    assert torch.isfinite(out).sum(dim=-1).tolist() == [1, 1, 1]


def test_an_all_greedy_batch_is_left_to_the_managers_argmax():
    """The common case pays nothing: no per-row Python, the raw scores go back (argmax is the same token)."""
    sampler = RequestSampler()
    rows = [_Future(_State(spec(temperature=0.0))) for _ in range(2)]
    sampler.prepare_tensor_args(rows, torch.empty(0, 2, dtype=torch.int32))
    scores = torch.randn(3, 7)
    assert sampler(torch.zeros(3, dtype=torch.long), scores, torch.empty(0)) is scores


def test_penalties_count_tokens_generated_before_a_preemption():
    from transformers.generation.continuous_batching.requests import RequestState

    state = RequestState(request_id="r", initial_tokens=[1, 2, 3])
    state.generated_tokens = [7, 8]
    assert generated_so_far(state) == [7, 8]
    # What the manager does on preemption: the output so far joins the prompt, and generation resumes.
    resumed = RequestState(request_id="r", initial_tokens=[1, 2, 3, 7, 8], _true_initial_tokens=3)
    resumed.generated_tokens = [9]
    assert generated_so_far(resumed) == [7, 8, 9]
