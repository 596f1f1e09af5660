"""`backend: vllm` against `backend: transformers` on the same real checkpoint, through one gateway and the SDK.

Two text engines serve SmolLM2-135M-Instruct (real weights, 64-dim heads: vLLM's CPU attention takes them):
`hf` on transformers' continuous batching in the engine's process, `vllm` on vLLM's engine core (the engine
runs under .venv-vllm's python, as the launcher starts it). Greedy answers must be the same text, token for
token (the output pipeline is ours on both), constrained ones too (our grammar masks run inside vLLM's
sampler); the sampling parameters must reach vLLM; idle unload must end vLLM's processes and a request must
bring them back.
Marked `vllm`: `make test-vllm` runs them after `make install-vllm`.
"""

from __future__ import annotations

import json

import grpc
import httpx
import jsonschema
import openai
import psutil
import pytest

from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2_grpc
from tests.support.chat_streams import reasoning_and_content
from tests.support.metrics import scrape
from tests.support.models_yaml import ModelsYaml
from tests.support.processes import REPO_ROOT, free_port, wait_until
from tests.support.real_model import smollm2_checkpoint
from tests.support.stack import checkpoints_behind_gateway, start_gateway, start_text_engine

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

HF, VLLM = "smollm2-hf", "smollm2-vllm"
# The Qwen3-0.6B stand-in (random weights, 128-dim heads, <think> reasoning): the reasoning parser on both backends.
QWEN_HF, QWEN_VLLM = "qwen3-hf", "qwen3-vllm"
PARAMS = {"mem": 64, "dtype": "f32", "max_num_seqs": 8}
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three primary colors.",
    "Explain what a CPU does in one sentence.",
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm_backend")
    models = [
        (HF, "transformers", smollm2_checkpoint()),
        (VLLM, "vllm", smollm2_checkpoint()),
        (QWEN_HF, "transformers", qwen3_checkpoint()),
        (QWEN_VLLM, "vllm", qwen3_checkpoint()),
    ]
    metrics_port = free_port()
    fields = {
        "tiny_defaults": False,
        "params": PARAMS,
        "max_model_len": 2048,
        "capabilities": {"vision_mode": "disabled"},
    }
    with checkpoints_behind_gateway(tmp, models, metrics_ports={VLLM: metrics_port}, **fields) as services:
        gateway = services[-1]
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0, timeout=120)
        yield {"client": client, "base": gateway.url, "vllm": services[1], "metrics": metrics_port}


def qwen3_checkpoint():
    from services.model_builder import build_all

    return build_all(REPO_ROOT / "models" / "tiny", only={"qwen3"})["qwen3"]


def chat(client, model: str, content: str, **kwargs):
    kwargs.setdefault("max_tokens", 40)
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **kwargs)


def streamed_text(client, model: str, content: str, **kwargs) -> str:
    stream = chat(client, model, content, stream=True, **kwargs)
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_answers_are_the_same_on_both_backends(stack, prompt):
    hf, vllm = chat(stack["client"], HF, prompt), chat(stack["client"], VLLM, prompt)
    assert vllm.choices[0].message.content == hf.choices[0].message.content
    assert vllm.choices[0].finish_reason == hf.choices[0].finish_reason
    assert vllm.usage.model_dump() == hf.usage.model_dump()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_reasoning_models_split_is_the_same_on_both_backends(stack, stream):
    reasoning, content = reasoning_and_content(stack["client"], QWEN_VLLM, PROMPTS[0], stream=stream, max_tokens=48)
    assert (reasoning, content) == reasoning_and_content(
        stack["client"], QWEN_HF, PROMPTS[0], stream=stream, max_tokens=48
    )
    assert reasoning  # the stand-in opens <think> at once: its parser routed tokens to the reasoning


def test_a_stream_on_vllm_says_what_the_whole_answer_says(stack):
    whole = chat(stack["client"], VLLM, PROMPTS[1]).choices[0].message.content
    assert whole and streamed_text(stack["client"], VLLM, PROMPTS[1]) == whole


def test_logprobs_agree_across_backends(stack):
    kwargs = {"logprobs": True, "top_logprobs": 3, "max_tokens": 12}
    hf = chat(stack["client"], HF, PROMPTS[0], **kwargs).choices[0].logprobs.content
    vllm = chat(stack["client"], VLLM, PROMPTS[0], **kwargs).choices[0].logprobs.content
    assert [t.token for t in vllm] == [t.token for t in hf] and len(hf) > 3
    for ours, theirs in zip(vllm, hf):
        assert ours.logprob == pytest.approx(theirs.logprob, abs=2e-3)
        assert [t.token for t in ours.top_logprobs] == [t.token for t in theirs.top_logprobs]


def test_max_tokens_stop_and_n_on_vllm(stack):
    client = stack["client"]
    cut = chat(client, VLLM, PROMPTS[1], max_tokens=5)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 5
    full = chat(client, VLLM, PROMPTS[0]).choices[0].message.content  # "The capital of France is Paris."
    stopped = chat(client, VLLM, PROMPTS[0], stop=["France"])
    assert stopped.choices[0].message.content == full.split("France")[0]
    assert stopped.choices[0].finish_reason == "stop"
    two = chat(client, VLLM, PROMPTS[0], n=2)
    assert [c.message.content for c in two.choices] == [full, full]


def test_sampling_parameters_reach_vllm(stack):
    client = stack["client"]
    sampled = {"temperature": 1.0, "top_p": 0.95, "max_tokens": 30}
    first = chat(client, VLLM, PROMPTS[1], seed=7, **sampled).choices[0].message.content
    assert chat(client, VLLM, PROMPTS[1], seed=7, **sampled).choices[0].message.content == first
    others = {chat(client, VLLM, PROMPTS[1], seed=seed, **sampled).choices[0].message.content for seed in (8, 9, 10)}
    assert others - {first}, "three other seeds all gave the seed-7 text: the seed is not applied"
    # ignore_eos + min_tokens: exactly max_tokens; logit_bias +100 on one token: nothing but that token.
    long = chat(client, VLLM, PROMPTS[0], max_tokens=24, extra_body={"ignore_eos": True, "min_tokens": 24})
    assert long.usage.completion_tokens == 24 and long.choices[0].finish_reason == "length"
    biased = chat(client, VLLM, PROMPTS[0], max_tokens=4, logit_bias={"28": 100}, logprobs=True)  # 28: ","
    assert [t.token for t in biased.choices[0].logprobs.content] == [","] * 4


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.mark.parametrize("model_pair", [(HF, VLLM), (QWEN_HF, QWEN_VLLM)], ids=["smollm2", "qwen3-reasoning"])
def test_a_json_schema_answer_is_the_same_valid_json_on_both_backends(stack, model_pair):
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}
    hf, vllm = (
        chat(stack["client"], model, "Describe Paris as JSON.", max_tokens=60, response_format=fmt)
        for model in model_pair
    )
    assert vllm.choices[0].message.model_dump() == hf.choices[0].message.model_dump()
    if vllm.choices[0].finish_reason == "stop":  # complete: it must parse and match the schema
        jsonschema.validate(json.loads(vllm.choices[0].message.content), SCHEMA)
    streamed = streamed_text(
        stack["client"], model_pair[1], "Describe Paris as JSON.", max_tokens=60, response_format=fmt
    )
    assert streamed == vllm.choices[0].message.content


def test_a_required_tool_call_is_the_same_call_on_both_backends(stack):
    bounded = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 6}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
    calls, cut = [], []
    for model in (QWEN_HF, QWEN_VLLM):
        reply = chat(
            stack["client"],
            model,
            "What is the weather in Paris?",
            max_tokens=240,
            tools=[bounded],
            parallel_tool_calls=False,
            tool_choice="required",
        )
        calls.append([(c.function.name, c.function.arguments) for c in reply.choices[0].message.tool_calls or []])
        # The random stand-in's unbounded `city` string runs until max_tokens cuts the call: never sent, `length`.
        unbounded = chat(
            stack["client"],
            model,
            "What is the weather in Paris?",
            max_tokens=60,
            tools=[WEATHER_TOOL],
            tool_choice="required",
        )
        cut.append((unbounded.choices[0].finish_reason, unbounded.choices[0].message.tool_calls))
    # A whole call on both, valid against the schema. Not the same bytes: the grammar lets JSON whitespace through
    # (bounded), and on whitespace the random stand-in's greedy choice is a near-tie that the two backends' kernels
    # may break differently.
    for backend_calls in calls:
        ((name, arguments),) = backend_calls
        assert name == "get_weather" and len(json.loads(arguments)["city"]) <= 6
    assert cut == [("length", None), ("length", None)]


def test_backend_is_shown_in_models_model_info_and_metrics(stack):
    listing = {m["id"]: m for m in httpx.get(f"{stack['base']}/v1/models").json()["data"]}
    assert (listing[HF]["backend"], listing[VLLM]["backend"]) == ("transformers", "vllm")
    with grpc.insecure_channel(stack["vllm"].address) as channel:
        info = text_engine_pb2_grpc.TextEngineStub(channel).GetModelInfo(common_pb2.GetModelInfoRequest())
    assert info.backend == "vllm" and info.kv_cache_tokens == 1408
    assert (
        scrape(f"http://127.0.0.1:{stack['metrics']}/metrics").value(
            "proxyvision_model_backend", model=VLLM, backend="vllm"
        )
        == 1
    )
    assert "backend=vllm" in stack["vllm"].wait_for_log(f"Model {VLLM} ready")


def test_vllms_prefix_cache_is_counted_in_our_metrics(stack):
    url = f"http://127.0.0.1:{stack['metrics']}/metrics"

    def counted() -> tuple[float, float]:
        scraped = scrape(url)
        return (
            scraped.value("proxyvision_prefix_cache_queries_total", model=VLLM),
            scraped.value("proxyvision_prefix_cache_hits_total", model=VLLM),
        )

    system = "You are a helpful assistant. " * 40  # a long shared prefix: several 64-token blocks
    before = counted()
    for question in ("Name a fruit.", "Name a color."):
        stack["client"].chat.completions.create(
            model=VLLM,
            max_tokens=2,
            temperature=0,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        )
    # The stats arrive after the engine's step.
    wait_until(lambda: counted()[1] - before[1] >= 64, 10, "64 prefix-cache hits counted", interval=0.2)
    queries, hits = (now - then for now, then in zip(counted(), before))
    assert queries >= 2 * 200 and hits >= 64, (queries, hits)  # the second prompt reused the first one's blocks


def test_a_client_that_leaves_frees_its_slot_in_vllm(stack):
    stream = chat(stack["client"], VLLM, PROMPTS[1], stream=True, max_tokens=400, extra_body={"ignore_eos": True})
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    with grpc.insecure_channel(stack["vllm"].address) as channel:
        stub = text_engine_pb2_grpc.TextEngineStub(channel)
        idle = lambda: stub.GetModelInfo(common_pb2.GetModelInfoRequest()).running == 0  # noqa: E731
        wait_until(idle, 30, "the left client's slot freed", interval=0.2)
    # The engine still answers, and the same as before.
    assert (
        chat(stack["client"], VLLM, PROMPTS[0]).choices[0].message.content
        == chat(stack["client"], HF, PROMPTS[0]).choices[0].message.content
    )


def test_idle_unload_ends_vllms_processes_and_a_request_reloads_it(tmp_path):
    port = free_port()
    config = (
        ModelsYaml()
        .text(
            VLLM,
            local_path=smollm2_checkpoint(),
            endpoint=f"127.0.0.1:{port}",
            backend="vllm",
            tiny_defaults=False,
            params=PARAMS,
            max_model_len=2048,
            idle_unload_secs=3,
            capabilities={"vision_mode": "disabled"},
        )
        .write(tmp_path / "models.yaml")
    )
    engine = start_text_engine(config, tmp_path, model=VLLM, port=port, backend="vllm")
    try:
        process = psutil.Process(engine.proc.pid)

        def engine_core() -> list[psutil.Process]:
            """vLLM's live processes under the engine: not multiprocessing's resource tracker (a few MB that lives
            as long as the engine process), nor an exited child its parent has not reaped yet (it holds nothing)."""
            alive = []
            for child in process.children(recursive=True):
                try:
                    if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                        alive.append(child)
                except psutil.NoSuchProcess:
                    continue
            return alive

        def tree_rss() -> int:
            return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])

        loaded_rss, loaded_children = tree_rss(), len(engine_core())
        engine.wait_for_log(f"Unloading model {VLLM} after 3s idle", timeout=60)
        wait_until(lambda: not engine_core(), 30, "vLLM's processes gone", interval=0.2)
        assert loaded_children >= 1
        assert tree_rss() < loaded_rss / 2, (tree_rss(), loaded_rss)
        with grpc.insecure_channel(engine.address) as channel:
            stub = text_engine_pb2_grpc.TextEngineStub(channel)
            # UNLOADED is said once the whole unload is done (its garbage collection included), a moment after
            # vLLM's processes are gone.
            wait_until(
                lambda: stub.GetModelInfo(common_pb2.GetModelInfoRequest()).state == common_pb2.MODEL_STATE_UNLOADED,
                30,
                "GetModelInfo to say UNLOADED",
            )
        gateway = start_gateway(config, tmp_path)
        try:
            reply = httpx.post(
                f"{gateway.url}/v1/chat/completions",
                timeout=240,
                json={
                    "model": VLLM,
                    "messages": [{"role": "user", "content": PROMPTS[0]}],
                    "max_tokens": 8,
                    "temperature": 0,
                },
            )
            assert reply.status_code == 200 and "Paris" in reply.json()["choices"][0]["message"]["content"]
        finally:
            gateway.stop()
        assert len(engine_core()) >= 1  # reloaded
    finally:
        engine.stop()
