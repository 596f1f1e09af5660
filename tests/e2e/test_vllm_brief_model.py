"""The brief's text model, ministral-3-3b-reasoning, on `backend: vllm`: the whole hub-layout checkpoint.

The stand-ins are `Mistral3ForConditionalGeneration` checkpoints with the hub repo's files (config.json with a
`ministral3` text_config and a pixtral tower, model.safetensors beside consolidated.safetensors, tekken.json,
params.json); vLLM runs their language model with its `MistralForCausalLM` and, since `make install-vllm` gives it
a torchvision, loads the whole checkpoint as the hub's would be. Their heads are 32 wide, the least vLLM's CPU
attention takes.

- the random stand-in: greedy answers equal transformers', token for token, running past the original
  context (256 positions, where the Llama-4 attention scaling starts), with vLLM reading the checkpoint as it
  does a Mistral repo by default: params.json and consolidated.safetensors, Mistral's native layout (whose
  `llama_4_scaling` it reads itself). The random weights' attention is too flat for that scaling to move these
  answers; test_vllm_ministral3.py shows it does with sharper weights;
- the scripted stand-in (its weights answer `[THINK]…[/THINK]…` to any chat): the reasoning parser splits the
  same `reasoning_content` and `content` on both backends, streamed or not.

Marked `vllm`: `make test-vllm` runs it.
"""

from __future__ import annotations

import openai
import pytest

from services.model_builder.scripted import SCRIPTED_ANSWER, SCRIPTED_REASONING
from services.model_builder.text_model import TINY_CONTEXT, ministral3_rope
from tests.support.chat_streams import reasoning_and_content
from tests.support.processes import REPO_ROOT
from tests.support.stack import checkpoints_behind_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

HF, VLLM = "ministral3-hf", "ministral3-vllm"
SCRIPTED_HF, SCRIPTED_VLLM = "scripted-hf", "scripted-vllm"
PARAMS = {"mem": 16, "dtype": "f32", "max_num_seqs": 8}
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a CPU does in one sentence. " * 8,
]
# Where the Llama-4 attention scaling starts: the stand-in's original context (256, a 16th of it as on the hub).
ORIGINAL_CONTEXT = ministral3_rope(TINY_CONTEXT)["original_max_position_embeddings"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from services.model_builder import build_all

    tiny = build_all(REPO_ROOT / "models" / "tiny", only={"text", "reasoning"})
    models = [
        (HF, "transformers", tiny["text"]),
        (VLLM, "vllm", tiny["text"]),
        (SCRIPTED_HF, "transformers", tiny["reasoning"]),
        (SCRIPTED_VLLM, "vllm", tiny["reasoning"]),
    ]
    fields = {
        "tiny_defaults": False,
        "params": PARAMS,
        "max_model_len": 2048,
        "capabilities": {"vision_mode": "disabled"},
    }
    with checkpoints_behind_gateway(tmp_path_factory.mktemp("vllm_brief_model"), models, **fields) as services:
        yield openai.OpenAI(base_url=f"{services[-1].url}/v1", api_key="none", max_retries=0, timeout=120)


def greedy(client, model: str, content: str, **kwargs):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], temperature=0, **kwargs
    )


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_answers_are_the_same_on_both_backends(stack, prompt):
    ours = greedy(stack, HF, prompt, max_tokens=80, logprobs=True)
    theirs = greedy(stack, VLLM, prompt, max_tokens=80, logprobs=True)
    assert ours.usage.total_tokens > ORIGINAL_CONTEXT  # the answer runs on where the queries are scaled
    assert theirs.usage == ours.usage
    assert [t.token for t in theirs.choices[0].logprobs.content] == [t.token for t in ours.choices[0].logprobs.content]
    assert theirs.choices[0].message.content == ours.choices[0].message.content
    assert theirs.choices[0].finish_reason == ours.choices[0].finish_reason


def test_the_answers_differ_by_prompt(stack):
    answers = {greedy(stack, VLLM, prompt, max_tokens=24).choices[0].message.content for prompt in PROMPTS}
    assert len(answers) == len(PROMPTS)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_the_scripted_reasoning_is_split_alike_on_both_backends(stack, stream):
    theirs = reasoning_and_content(stack, SCRIPTED_VLLM, "Hello", stream=stream)
    assert theirs == reasoning_and_content(stack, SCRIPTED_HF, "Hello", stream=stream)
    assert theirs == (SCRIPTED_REASONING, SCRIPTED_ANSWER)
