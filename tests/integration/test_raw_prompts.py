"""Raw prompts (GenerateRequest.prompt, for legacy /v1/completions) over real gRPC: text engines on port 0 in this
process, serving the tiny stand-ins.

- ministral-3-tiny (tekken, no FIM tokens): text and token-id prompts, admission, refusals;
- qwen3-tiny (Qwen's `<|fim_prefix|>`...): fill-in-the-middle prompts;
- the scripted reasoning stand-in (greedy `[THINK]..[/THINK]It is four.` after `[/INST]`): the output of a raw
  prompt is not split into reasoning and answer, and stop strings apply to all of it.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio

from services.common.config import parse_models_config
from services.common.engine_server import EngineOptions
from services.common.errors import PARAM_METADATA_KEY
from services.common.generation import RawPrompt
from services.common.pb.proxyvision.v1 import text_engine_pb2 as pb, text_engine_pb2_grpc
from services.model_builder import build_all
from services.model_builder.scripted import END_INST_ID, SCRIPTED_COMPLETION_IDS, SCRIPTED_REASONING, SCRIPTED_TEXT
from services.text_engine.engine.prompt import render_raw_prompt
from services.text_engine.engine.types import GenerationRequest
from services.text_engine.server import TextEngineServer
from tests.support.models_yaml import ModelsYaml
from tests.support.processes import REPO_ROOT

PARAMS = {"mem": 16, "dtype": "f32", "max_num_seqs": 4, "prefill_chunk_size": 256}
QWEN_FIM = {"<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661}


@dataclass
class Engine:
    name: str
    server: TextEngineServer
    stub: text_engine_pb2_grpc.TextEngineStub

    @property
    def tokenizer(self):
        return self.server.engine.lifecycle.resource.loaded.tokenizer


@asynccontextmanager
async def serve(name: str, path):
    entry = parse_models_config(ModelsYaml().text(name, local_path=path, params=PARAMS).to_dict()).models[0]
    server = TextEngineServer(entry, EngineOptions(device="cpu"), idle_unload_secs=300)
    await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    try:
        yield Engine(name, server, text_engine_pb2_grpc.TextEngineStub(channel))
    finally:
        await channel.close()
        await server.stop(grace=0)


@pytest_asyncio.fixture(scope="module")
async def ministral(tiny_models):
    async with serve("ministral-3-tiny", tiny_models["text"]) as engine:
        yield engine


@pytest_asyncio.fixture(scope="module")
async def qwen3():
    async with serve("qwen3-tiny", build_all(REPO_ROOT / "models" / "tiny", only={"qwen3"})["qwen3"]) as engine:
        yield engine


@pytest_asyncio.fixture(scope="module")
async def scripted():
    path = build_all(REPO_ROOT / "models" / "tiny", only={"reasoning"})["reasoning"]
    async with serve("scripted", path) as engine:
        yield engine


def raw(model: str, text: str = "", token_ids=(), suffix: str = "", **sampling) -> pb.GenerateRequest:
    sampling.setdefault("max_tokens", 6)
    return pb.GenerateRequest(
        model=model,
        prompt=pb.RawPrompt(text=text, token_ids=token_ids, suffix=suffix),
        sampling=pb.SamplingParams(**sampling),
    )


@dataclass
class Answer:
    text: str
    finished: pb.Finished
    prompt_tokens: int
    kinds: set[str]
    logprobs: list


async def generate(stub, request) -> Answer:
    responses = [r async for r in stub.Generate(request, timeout=60)]
    assert responses[0].HasField("accepted") and responses[-1].HasField("finished")
    kinds = {r.WhichOneof("event") for r in responses[1:-1]}
    text = "".join(r.delta.text for r in responses if r.HasField("delta"))
    logprobs = [lp for r in responses if r.HasField("delta") for lp in r.delta.logprobs]
    assert responses[0].accepted.prompt_tokens == responses[-1].finished.usage.prompt_tokens
    return Answer(text, responses[-1].finished, responses[0].accepted.prompt_tokens, kinds, logprobs)


async def refused(stub, request) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await generate(stub, request)
    return caught.value


def param(error: grpc.aio.AioRpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get(PARAM_METADATA_KEY)


async def test_a_text_prompt_is_tokenized_as_is_with_no_chat_template(ministral):
    text = "The capital of France is"
    answer = await generate(ministral.stub, raw(ministral.name, text, temperature=0, ignore_eos=True))
    # The tokenizer's own defaults (tekken adds no BOS by default), not the chat template's [INST] wrapping.
    assert answer.prompt_tokens == len(ministral.tokenizer(text)["input_ids"])
    chat = pb.GenerateRequest(
        model=ministral.name,
        messages=[pb.ChatMessage(role="user", content=text)],
        sampling=pb.SamplingParams(max_tokens=1),
    )
    assert (await generate(ministral.stub, chat)).prompt_tokens > answer.prompt_tokens
    assert answer.finished.finish_reason == pb.FINISH_REASON_LENGTH and answer.finished.usage.completion_tokens == 6


async def test_a_token_id_prompt_is_used_as_given(ministral):
    ids = ministral.tokenizer("Once upon a time", add_special_tokens=False)["input_ids"]
    by_ids = await generate(ministral.stub, raw(ministral.name, token_ids=[1, *ids], temperature=0))
    by_text = await generate(ministral.stub, raw(ministral.name, "<s>Once upon a time", temperature=0))
    assert by_ids.prompt_tokens == len(ids) + 1 == by_text.prompt_tokens
    assert by_ids.text == by_text.text and by_ids.finished.usage == by_text.finished.usage


async def test_a_token_id_outside_the_vocabulary_is_refused_by_name(ministral):
    error = await refused(ministral.stub, raw(ministral.name, token_ids=[5, 4096, 7]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "token id 4096" in error.details()
    assert param(error) == "prompt"


async def test_refused_combinations(ministral):
    cases = {
        "tools": pb.GenerateRequest(model=ministral.name, prompt=pb.RawPrompt(text="hi"), tools=[pb.Tool(name="f")]),
        "tool_choice": pb.GenerateRequest(
            model=ministral.name,
            prompt=pb.RawPrompt(text="hi"),
            tool_choice=pb.ToolChoice(mode=pb.ToolChoice.TOOL_CHOICE_REQUIRED),
        ),
        "messages": pb.GenerateRequest(
            model=ministral.name, prompt=pb.RawPrompt(text="hi"), messages=[pb.ChatMessage(role="user", content="hi")]
        ),
        "prompt": pb.GenerateRequest(model=ministral.name, prompt=pb.RawPrompt(text="hi", token_ids=[5])),
    }
    for name, request in cases.items():
        error = await refused(ministral.stub, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and param(error) == name, (name, error.details())
    empty = await refused(ministral.stub, raw(ministral.name))
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty" in empty.details()


async def test_a_raw_prompt_is_admitted_as_a_chat_is(ministral):
    error = await refused(ministral.stub, raw(ministral.name, "hello", max_tokens=100_000))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and param(error) == "prompt"
    assert "in the prompt" in error.details()


async def test_seed_and_logprobs_work_on_raw_prompts(ministral):
    request = raw(ministral.name, "Roses are red", temperature=1.0, seed=7, top_logprobs=2, ignore_eos=True)
    first, again = await generate(ministral.stub, request), await generate(ministral.stub, request)
    assert first.text == again.text and [lp.logprob for lp in first.logprobs] == [lp.logprob for lp in again.logprobs]
    assert len(first.logprobs) == first.finished.usage.completion_tokens == 6
    assert all(len(lp.top_logprobs) == 2 for lp in first.logprobs)


async def test_a_suffix_builds_the_fill_in_the_middle_prompt(qwen3):
    tokenizer = qwen3.tokenizer
    prefix, suffix = "def add(a, b):\n    return", "\n\nprint(add(1, 2))\n"
    expected = [
        QWEN_FIM["<|fim_prefix|>"],
        *tokenizer(prefix, add_special_tokens=False)["input_ids"],
        QWEN_FIM["<|fim_suffix|>"],
        *tokenizer(suffix, add_special_tokens=False)["input_ids"],
        QWEN_FIM["<|fim_middle|>"],
    ]
    prefix_ids = tuple(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    vocab = qwen3.server.engine.lifecycle.resource.loaded.text_config.vocab_size
    for prompt in (RawPrompt(prefix, suffix=suffix), RawPrompt(token_ids=prefix_ids, suffix=suffix)):
        built = render_raw_prompt(tokenizer, GenerationRequest("r", (), prompt=prompt), vocab, qwen3.name)
        assert built == expected, prompt
    by_text = await generate(qwen3.stub, raw(qwen3.name, prefix, suffix=suffix, temperature=0))
    by_ids = await generate(qwen3.stub, raw(qwen3.name, token_ids=prefix_ids, suffix=suffix, temperature=0))
    assert by_text.prompt_tokens == by_ids.prompt_tokens == len(expected)
    assert by_text.text == by_ids.text and by_text.finished.usage == by_ids.finished.usage


async def test_a_suffix_without_fim_tokens_is_refused(ministral):
    error = await refused(ministral.stub, raw(ministral.name, "def f():", suffix="return 1"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and param(error) == "suffix"
    assert error.details() == f"model {ministral.name} has no fill-in-the-middle tokens; suffix is not supported"


async def test_a_reasoning_models_raw_output_is_not_split(scripted):
    """The scripted chain after `[/INST]`: all of it is text, the think markers written out, no reasoning."""
    answer = await generate(scripted.stub, raw(scripted.name, "What is 2+2?[/INST]", temperature=0, max_tokens=32))
    assert answer.kinds == {"delta"} and answer.text == SCRIPTED_TEXT
    assert answer.finished.finish_reason == pb.FINISH_REASON_STOP
    usage = answer.finished.usage
    assert (usage.completion_tokens, usage.reasoning_tokens) == (len(SCRIPTED_COMPLETION_IDS), 0)


async def test_stop_strings_and_lengths_apply_to_the_whole_raw_output(scripted):
    stopped = await generate(
        scripted.stub, raw(scripted.name, token_ids=[END_INST_ID], temperature=0, max_tokens=32, stop=["think"])
    )
    assert stopped.text == "[THINK]" + SCRIPTED_REASONING.split("think")[0]
    assert stopped.finished.finish_reason == pb.FINISH_REASON_STOP
    cut = await generate(scripted.stub, raw(scripted.name, token_ids=[END_INST_ID], temperature=0, max_tokens=3))
    assert cut.finished.finish_reason == pb.FINISH_REASON_LENGTH and cut.text == "[THINK]Let"
    ended = await generate(
        scripted.stub,
        raw(
            scripted.name,
            token_ids=[END_INST_ID],
            temperature=0,
            max_tokens=32,
            stop_token_ids=[SCRIPTED_COMPLETION_IDS[-2]],
        ),
    )
    assert ended.finished.finish_reason == pb.FINISH_REASON_STOP and ended.text == SCRIPTED_TEXT.removesuffix(".")
