import torch

from services.text_engine.engine.sampler import RequestSampler, SamplingSpec, SPEC_KEY, apply_penalties, sample_row


def spec(**kw):
    base = {"temperature": 1.0, "top_p": 1.0, "top_k": 0}
    base.update(kw)
    return SamplingSpec(**base).bind(torch.device("cpu"))


def test_greedy_takes_argmax():
    logits = torch.tensor([0.1, 3.0, 0.2])
    assert sample_row(logits, spec(temperature=0.0), []) == 1


def test_same_seed_same_tokens_different_seed_differs():
    logits = torch.zeros(50)
    draws = lambda s: [sample_row(logits, s, []) for _ in range(20)]  # noqa: E731
    assert draws(spec(seed=7)) == draws(spec(seed=7))
    assert draws(spec(seed=7)) != draws(spec(seed=8))


def test_top_k_restricts_to_k_best():
    logits = torch.tensor([5.0, 4.0, 3.0, -1.0, -2.0])
    s = spec(top_k=2, seed=1)
    assert {sample_row(logits, s, []) for _ in range(200)} <= {0, 1}


def test_top_p_keeps_smallest_nucleus():
    logits = torch.log(torch.tensor([0.6, 0.3, 0.05, 0.05]))
    s = spec(top_p=0.8, seed=3)
    assert {sample_row(logits, s, []) for _ in range(300)} == {0, 1}


def test_penalties_follow_openai_formula():
    logits = torch.zeros(4)
    out = apply_penalties(logits, spec(presence_penalty=0.5, frequency_penalty=0.25), [2, 2, 3])
    assert out.tolist() == [0.0, 0.0, -1.0, -0.75]


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
    b = _Future(_State(spec(temperature=0.0, frequency_penalty=0.5)))  # one penalized row: the per-row path
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


def test_kv_budget_is_capped_at_what_sequences_can_use():
    from types import SimpleNamespace

    from services.text_engine.engine.kv_budget import kv_budget

    config = SimpleNamespace(num_key_value_heads=2, num_attention_heads=4, head_dim=16, hidden_size=64, num_hidden_layers=2)
    big = kv_budget(config, torch.float32, 2048, 64)
    assert big.bytes_per_token == 2 * 2 * 2 * 16 * 4 and big.capacity_tokens == 2048 * 1024 * 1024 // 512
    capped = kv_budget(config, torch.float32, 2048, 64, max_useful_tokens=16 * 4096)
    assert capped.capacity_tokens == 16 * 4096


def test_a_seeded_request_draws_the_same_tokens_alone_or_in_a_batch():
    from services.text_engine.engine.sampler import sample_batch

    logits = torch.randn(30, 50, generator=torch.Generator().manual_seed(0))
    alone, mine = [], spec(seed=7, top_p=0.9)
    for step in range(30):
        alone.append(int(sample_batch(logits[step : step + 1], [mine])[0]))
    batched, mine, other = [], spec(seed=7, top_p=0.9), spec(seed=11, top_k=3)
    for step in range(30):
        rows = torch.stack([logits[step], logits[(step + 1) % 30], logits[(step + 2) % 30]])
        batched.append(int(sample_batch(rows, [mine, other, spec(temperature=0.0)])[0]))
    assert alone == batched


def test_each_row_keeps_its_own_parameters_in_a_mixed_batch():
    from services.text_engine.engine.sampler import sample_batch

    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.6, 0.3, 0.05, 0.05], [0.1, 0.2, 0.3, 0.4]]))
    specs = [spec(top_k=1, seed=1), spec(top_p=0.8, seed=2), spec(temperature=0.0)]
    draws = [sample_batch(logits, specs).tolist() for _ in range(300)]
    assert {d[0] for d in draws} == {0}  # top_k=1
    assert {d[1] for d in draws} == {0, 1}  # the 0.8 nucleus
    assert {d[2] for d in draws} == {3}  # greedy


def test_sampling_follows_the_softmax_at_the_requested_temperature():
    from services.text_engine.engine.sampler import sample_batch

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    s = spec(temperature=0.5, seed=5)
    counts = torch.bincount(torch.tensor([int(sample_batch(torch.log(probs)[None, :], [s])[0]) for _ in range(4000)]),
                            minlength=4).float() / 4000  # fmt: skip
    expected = torch.softmax(torch.log(probs) / 0.5, dim=-1)
    assert torch.allclose(counts, expected, atol=0.03), (counts, expected)


def test_penalties_count_tokens_generated_before_a_preemption():
    from transformers.generation.continuous_batching.requests import RequestState

    from services.text_engine.engine.sampler import generated_so_far

    state = RequestState(request_id="r", initial_tokens=[1, 2, 3])
    state.generated_tokens = [7, 8]
    assert generated_so_far(state) == [7, 8]
    # What the manager does on preemption: the output so far joins the prompt, and generation resumes.
    resumed = RequestState(request_id="r", initial_tokens=[1, 2, 3, 7, 8], _true_initial_tokens=3)
    resumed.generated_tokens = [9]
    assert generated_so_far(resumed) == [7, 8, 9]
