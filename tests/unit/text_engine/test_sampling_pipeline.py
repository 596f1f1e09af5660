"""The engine's own logits pipeline, without a model: processors, sampler, logprobs, and the one shortcut."""

import math

import pytest
import torch

from services.text_engine.engine.sampling.pipeline import Row, choose_tokens
from services.text_engine.engine.sampling.processors import apply_bans, apply_logit_bias, apply_penalties
from services.text_engine.engine.sampling.sampler import sample_batch
from services.text_engine.engine.sampling.spec import SamplingSpec


def spec(**kw):
    base = {"temperature": 1.0, "top_p": 1.0, "top_k": 0}
    base.update(kw)
    return SamplingSpec(**base).bind(torch.device("cpu"))


def sample_row(logits: torch.Tensor, s: SamplingSpec, generated: list[int]) -> int:
    """One row through the whole pipeline, as the batch step runs it."""
    chosen = choose_tokens(logits[None, :], [Row(s, generated)])
    return int(logits.argmax()) if chosen is None else int(chosen[0])


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
    apply_penalties(logits, spec(presence_penalty=0.5, frequency_penalty=0.25), [2, 2, 3], [])
    assert logits.tolist() == [0.0, 0.0, -1.0, -0.75]


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    logits = torch.tensor([2.0, -2.0, 2.0, -2.0])
    apply_penalties(logits, spec(repetition_penalty=2.0), [], [0, 1, 1])  # prompt and output alike
    assert logits.tolist() == [1.0, -4.0, 2.0, -2.0]


def test_logit_bias_is_added_and_can_force_or_forbid_a_token():
    logits = torch.zeros(5)
    apply_logit_bias(logits, spec(logit_bias={1: -100.0, 3: 5.0}))
    assert logits.tolist() == [0.0, -100.0, 0.0, 5.0, 0.0]
    assert {sample_row(torch.zeros(5), spec(seed=s, logit_bias={3: 100.0}), []) for s in range(20)} == {3}


def test_min_tokens_bans_the_end_tokens_until_reached_and_ignore_eos_always():
    s = spec(min_tokens=2, end_ids=(0, 4))
    logits = torch.zeros(5)
    apply_bans(logits, s, generated_count=1)
    assert torch.isinf(logits).tolist() == [True, False, False, False, True]
    logits = torch.zeros(5)
    apply_bans(logits, s, generated_count=2)
    assert not torch.isinf(logits).any()
    eos_heavy = torch.tensor([9.0, 0.0, 0.0, 0.0, 0.0])
    assert sample_row(eos_heavy, spec(temperature=0.0, banned_ids=(0,)), [1, 2, 3]) != 0


def test_min_p_drops_tokens_below_the_fraction_of_the_best():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    draws = {sample_row(logits, spec(min_p=0.4, seed=s), []) for s in range(300)}
    assert draws == {0, 1}  # 0.15 < 0.4 * 0.5


def test_logprobs_are_the_log_softmax_of_the_processed_logits_with_the_sampled_token_among_them():
    logits = torch.tensor([1.0, 3.0, 0.5, 2.0])
    s = spec(temperature=0.0, top_logprobs=2, logit_bias={0: 1.0})
    token = sample_row(logits, s, [])
    record = s.sampled.popleft()
    expected = torch.log_softmax(logits + torch.tensor([1.0, 0, 0, 0]), dim=-1)
    assert record.token_id == token == 1
    assert math.isclose(record.logprob, float(expected[1]), rel_tol=1e-5)
    assert [t for t, _ in record.top] == [1, 3] and math.isclose(record.top[1][1], float(expected[3]), rel_tol=1e-5)
    # Temperature and top-k shape the choice, not the reported distribution.
    hot = spec(temperature=1.5, top_k=2, top_logprobs=0, seed=3)
    token = sample_row(logits, hot, [])
    assert math.isclose(hot.sampled.popleft().logprob, float(torch.log_softmax(logits, -1)[token]), rel_tol=1e-5)


@pytest.mark.parametrize("ask", [dict(top_logprobs=0), dict(logit_bias={2: 1.0}), dict(min_tokens=1, end_ids=(1,))])
def test_only_plain_greedy_batches_skip_the_pipeline(ask):
    """The raw-argmax shortcut serves only rows with nothing to apply or record: a bias, a ban or a logprobs
    request anywhere in the batch takes the full path."""
    logits = torch.randn(2, 6)
    assert choose_tokens(logits, [Row(spec(temperature=0.0), []), Row(spec(temperature=0.0), [])]) is None
    assert choose_tokens(logits, [Row(spec(temperature=0.0), []), Row(spec(temperature=0.0, **ask), [])]) is not None


def test_kv_budget_is_capped_at_what_sequences_can_use():
    from types import SimpleNamespace

    from services.text_engine.engine.kv_budget import kv_budget

    config = SimpleNamespace(
        num_key_value_heads=2, num_attention_heads=4, head_dim=16, hidden_size=64, num_hidden_layers=2
    )
    big = kv_budget(config, torch.float32, 2048, 64)
    assert big.bytes_per_token == 2 * 2 * 2 * 16 * 4 and big.capacity_tokens == 2048 * 1024 * 1024 // 512
    capped = kv_budget(config, torch.float32, 2048, 64, max_useful_tokens=16 * 4096)
    assert capped.capacity_tokens == 16 * 4096


def test_a_seeded_request_draws_the_same_tokens_alone_or_in_a_batch():
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
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.6, 0.3, 0.05, 0.05], [0.1, 0.2, 0.3, 0.4]]))
    specs = [spec(top_k=1, seed=1), spec(top_p=0.8, seed=2), spec(temperature=0.0)]
    draws = [sample_batch(logits, specs).tolist() for _ in range(300)]
    assert {d[0] for d in draws} == {0}  # top_k=1
    assert {d[1] for d in draws} == {0, 1}  # the 0.8 nucleus
    assert {d[2] for d in draws} == {3}  # greedy


def test_sampling_follows_the_softmax_at_the_requested_temperature():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    s = spec(temperature=0.5, seed=5)
    counts = (
        torch.bincount(
            torch.tensor([int(sample_batch(torch.log(probs)[None, :], [s])[0]) for _ in range(4000)]), minlength=4
        ).float()
        / 4000
    )
    expected = torch.softmax(torch.log(probs) / 0.5, dim=-1)
    assert torch.allclose(counts, expected, atol=0.03), (counts, expected)
