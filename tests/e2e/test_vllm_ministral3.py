"""Ministral-3's llama-4 attention scaling on `backend: vllm`: past the original context vLLM answers as
transformers does with our `hf_overrides` (services/text_engine/engine/vllm_overrides.py), and differently
without them.

The checkpoint is a tiny random `Ministral3ForCausalLM`: Ministral-3's text model alone, which vLLM runs with its
`MistralForCausalLM` as it runs a Mistral3 checkpoint's language model (the whole Mistral3 needs torchvision, which
does not load here). It is written in config.json's layout with the hub model's `rope_parameters`, but with an
original context of 32 positions and beta 0.5: the prompt's last positions have their queries scaled by up to 1 + 0.5 ln 5 = 1.8. Its weights are
drawn wider than transformers' default (std 0.1, not 0.02) so that attention is sharp enough for that factor
to move the logits. Three engines serve it through one gateway: transformers, vLLM, and vLLM without the
override (tests/support/vllm_engine_without_overrides.py). Marked `vllm`: `make test-vllm` runs it.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.support.stack import checkpoints_behind_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

HF, VLLM, UNSCALED = "ministral3-hf", "ministral3-vllm", "ministral3-vllm-unscaled"
CONTEXT, BETA = 512, 0.5  # original context: CONTEXT / 16 = 32 positions (ministral3_rope)
# 135 tokens with the chat template: more than four times the original context.
PROMPT = "The quick brown fox jumps over the lazy dog while the grey sea rolls on under a low sky. " * 3
ANSWER = {"max_tokens": 12, "temperature": 0, "logprobs": True, "top_logprobs": 5}


def write_checkpoint(out: Path) -> Path:
    import torch
    from transformers import Ministral3Config, Ministral3ForCausalLM

    from services.model_builder.text_model import ministral3_rope, ministral3_tokenizer

    torch.manual_seed(0)
    tokenizer = ministral3_tokenizer(512, CONTEXT)
    config = Ministral3Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,  # vLLM's CPU attention takes 32, not the stand-ins' 16
        max_position_embeddings=CONTEXT,
        rope_parameters={**ministral3_rope(CONTEXT), "llama_4_scaling_beta": BETA},
        initializer_range=0.1,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.architectures = ["Ministral3ForCausalLM"]
    Ministral3ForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm_ministral3")
    checkpoint = write_checkpoint(tmp / "checkpoint")
    models = [(HF, "transformers", checkpoint), (VLLM, "vllm", checkpoint), (UNSCALED, "vllm", checkpoint)]
    modules = {UNSCALED: "tests.support.vllm_engine_without_overrides"}
    with checkpoints_behind_gateway(tmp, models, modules=modules) as services:
        yield openai.OpenAI(base_url=f"{services[-1].url}/v1", api_key="none", max_retries=0, timeout=120)


def answer(client, model: str) -> list:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}], **ANSWER)
    assert reply.usage.prompt_tokens > 4 * CONTEXT // 16
    return reply.choices[0].logprobs.content


def gap(ours: list, theirs: list) -> float:
    """The largest difference between two answers' logprobs, over each step's token and its top 5; inf where the
    tokens or top-5 lists differ."""
    if [t.token for t in ours] != [t.token for t in theirs]:
        return float("inf")
    worst = 0.0
    for mine, other in zip(ours, theirs):
        if [t.token for t in mine.top_logprobs] != [t.token for t in other.top_logprobs]:
            return float("inf")
        pairs = [(mine, other), *zip(mine.top_logprobs, other.top_logprobs)]
        worst = max(worst, *(abs(a.logprob - b.logprob) for a, b in pairs))
    return worst


def test_vllm_scales_attention_past_the_original_context_as_transformers_does(client):
    hf = answer(client, HF)
    assert gap(answer(client, VLLM), hf) < 2e-3


def test_without_the_override_vllm_answers_differently(client):
    hf = answer(client, HF)
    assert gap(answer(client, UNSCALED), hf) > 0.1
