"""The proxy captioner on vLLM (`backend: vllm` on the vision model) against the transformers captioner, on the
same checkpoint, over gRPC as the gateway calls them, then through the gateway and the SDK.

The checkpoints: the Qwen2-VL stand-in (the brief's captioner, Qwen/Qwen2-VL-7B-Instruct's layout, 32-dim heads),
the Qwen2.5-VL one (Qwen/Qwen2.5-VL-3B-Instruct's, 32-dim heads) and the Qwen3-VL one (Qwen/Qwen3-VL-2B-Instruct's,
128-dim heads) and the brief's Ministral-3 (mistralai/Ministral-3-3B-Reasoning-2512's files, 32-dim heads), random
weights; vLLM's CPU attention takes these head sizes. vLLM runs the Qwen ones with transformers' image processors,
which need torchvision: .venv-vllm has the registry's torchvision less its compiled ops
(deploy/vllm/torchvision_without_ops.py). It reads the Ministral-3 one in Mistral's native format (params.json,
consolidated.safetensors) and encodes its images with mistral-common's image encoder.
Greedy captions must be the same text on both backends, at each `detail` (the family's processor arguments give
vLLM's processor the same token budget, so both encode the same grid), alone or many at once (vLLM batches
images continuously); the vision engine's ModelInfo says which backend runs it; a chat's image reaches the
text model through the vLLM captioner.
Marked `vllm`: `make test-vllm` runs them after `make install-vllm`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import openai
import pytest

from services.common.pb.proxyvision.v1 import common_pb2, vision_engine_pb2 as vpb, vision_engine_pb2_grpc
from tests.support.images import data_url, png
from tests.support.models_yaml import ModelsYaml
from tests.support.processes import REPO_ROOT, free_port, wait_grpc_serving, wait_until
from tests.support.real_model import REAL_MODEL, smollm2_checkpoint
from tests.support.stack import start_gateway, start_text_engine, start_vision_engine

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

# The captioner's name in models.yaml -> the stand-in it loads (services/model_builder/build.py's kinds).
CHECKPOINTS = {
    "qwen2-vl-7b": "vision",
    "qwen2.5-vl-3b": "qwen25_vl",
    "qwen3-vl-2b": "qwen3_vl",
    "ministral-3-3b": "text",
}
PARAMS = {"mem": 64, "dtype": "f32", "max_num_seqs": 4}
MAX_TOKENS = 12
QUESTION = "What is in this picture?"
IMAGES = [
    png((200, 30, 30)),
    png((20, 160, 60), size=(300, 200)),
    png((10, 10, 220), size=(64, 480)),
    png((240, 240, 0), size=(900, 700)),
]


def checkpoint(eyes: str):
    from services.model_builder import build_all

    kind = CHECKPOINTS[eyes]
    return build_all(REPO_ROOT / "models" / "tiny", only={kind})[kind]


def config_for(tmp, eyes: str, backend: str, *, text_endpoint: str | None = None, vision_endpoint: str | None = None):
    """A models.yaml with the captioner `eyes` on `backend` and SmolLM2 to answer (a file needs a text model;
    only the gateway test starts it)."""
    yaml = ModelsYaml().vision(
        eyes,
        local_path=checkpoint(eyes),
        backend=backend,
        tiny_defaults=False,
        params=PARAMS,
        capabilities={
            "vision_mode": "proxy",
            "vision_proxy": {"prompt_template": "Describe this image in detail:", "max_caption_tokens": MAX_TOKENS},
        },
        **({"endpoint": vision_endpoint} if vision_endpoint else {}),
    )
    yaml = yaml.text(
        REAL_MODEL,
        local_path=smollm2_checkpoint(),
        max_model_len=2048,
        **({"endpoint": text_endpoint} if text_endpoint else {}),
    )
    return yaml.write(tmp / f"models.{backend}.yaml")


@pytest.fixture(scope="module", params=list(CHECKPOINTS))
def eyes(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def engines(tmp_path_factory, eyes):
    tmp = tmp_path_factory.mktemp("vllm_captioner")
    started = {
        backend: start_vision_engine(config_for(tmp, eyes, backend), tmp, model=eyes, wait=False, backend=backend)
        for backend in ("transformers", "vllm")
    }
    try:
        for engine in started.values():
            wait_grpc_serving(engine, timeout=300)
        yield started
    finally:
        for engine in started.values():
            engine.stop()


def describe(engine, images: list[bytes], detail=common_pb2.DETAIL_AUTO, user_prompt="") -> list[vpb.CaptionDone]:
    with grpc.insecure_channel(engine.address) as channel:
        stub = vision_engine_pb2_grpc.VisionEngineStub(channel)
        request = vpb.DescribeRequest(
            images=[common_pb2.ImageInput(data=data, mime_type="image/png", detail=detail) for data in images],
            user_prompt=user_prompt,
        )
        responses = list(stub.Describe(request, timeout=120))
    done = sorted((r.done for r in responses if r.HasField("done")), key=lambda d: d.image_index)
    assert len(done) == len(images)
    return done


def info(engine) -> common_pb2.ModelInfo:
    with grpc.insecure_channel(engine.address) as channel:
        return vision_engine_pb2_grpc.VisionEngineStub(channel).GetModelInfo(
            common_pb2.GetModelInfoRequest(), timeout=10
        )


def test_model_info_names_each_backend(engines):
    assert {backend: info(engine).backend for backend, engine in engines.items()} == {
        "transformers": "transformers",
        "vllm": "vllm",
    }


@pytest.mark.parametrize("detail", [common_pb2.DETAIL_LOW, common_pb2.DETAIL_AUTO, common_pb2.DETAIL_HIGH])
def test_greedy_captions_are_the_same_on_both_backends(engines, detail):
    hf = describe(engines["transformers"], IMAGES, detail)
    vllm = describe(engines["vllm"], IMAGES, detail)
    assert [d.caption for d in vllm] == [d.caption for d in hf]
    assert [d.image_tokens for d in vllm] == [d.image_tokens for d in hf]
    assert [(d.finish_reason, d.caption_tokens) for d in vllm] == [(d.finish_reason, d.caption_tokens) for d in hf]
    assert all(d.caption_tokens > 0 for d in vllm)


def test_images_captioned_at_once_match_each_alone(engines):
    engine = engines["vllm"]
    fresh = [png((i * 40, 255 - i * 30, 90), size=(120 + i * 20, 90)) for i in range(6)]
    with ThreadPoolExecutor(len(fresh)) as pool:
        together = list(pool.map(lambda data: describe(engine, [data])[0], fresh))
    assert not any(d.cached for d in together)
    alone = [describe(engines["transformers"], [data])[0] for data in fresh]
    assert [d.caption for d in together] == [d.caption for d in alone]


def test_a_chat_image_reaches_the_text_model_through_the_vllm_captioner(engines, eyes, tmp_path):
    text_port = free_port()
    config = config_for(
        tmp_path,
        eyes,
        "vllm",
        text_endpoint=f"127.0.0.1:{text_port}",
        vision_endpoint=engines["vllm"].address,
    )
    text = start_text_engine(config, tmp_path, model=REAL_MODEL, port=text_port)
    gateway = None
    try:
        gateway = start_gateway(config, tmp_path, ready="/ready")
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0, timeout=120)
        url = data_url(IMAGES[1])
        reply = client.chat.completions.create(
            model=REAL_MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": QUESTION},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
            max_tokens=8,
            temperature=0,
        )
        (told,) = reply.model_extra["proxy_vision"]["images"]
        (same,) = describe(engines["transformers"], [IMAGES[1]], user_prompt=QUESTION)
        # Random weights may caption in whitespace only (Qwen2.5-VL's here), which the gateway strips.
        assert told["caption"] == same.caption.strip() and same.caption_tokens > 0
        assert reply.choices[0].message.content
    finally:
        if gateway is not None:
            gateway.stop()
        text.stop()


def test_a_caller_leaving_aborts_its_caption_in_vllm(engines):
    engine = engines["vllm"]
    with grpc.insecure_channel(engine.address) as channel:
        stub = vision_engine_pb2_grpc.VisionEngineStub(channel)
        # Captioned to its end, this image takes seconds here (Qwen2-VL's stops after ~600 tokens, ~4 s; Qwen3-VL's
        # runs to the 4,000, ~50 s); aborted, our request leaves the engine as soon as the cancel arrives.
        request = vpb.DescribeRequest(
            images=[common_pb2.ImageInput(data=png((5, 98, 7), size=(97, 61)), mime_type="image/png")],
            max_tokens=4000,
        )
        call = stub.Describe(request, timeout=120)
        first = next(call)
        assert first.HasField("delta") and info(engine).running == 1
        call.cancel()
    wait_until(lambda: info(engine).running == 0, 2, "the vLLM request aborted after its caller left")
    # The engine still captions (nothing is left in vLLM's batch).
    assert describe(engine, [IMAGES[0]])[0].caption_tokens > 0
