"""A real vision engine process: grpcurl lists/describes it and streams a Describe with a base64 image;
batching and cancellation over gRPC."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from services.common.pb.proxyvision.v1 import common_pb2, vision_engine_pb2 as pb, vision_engine_pb2_grpc
from tests.support.images import png
from tests.support.models_yaml import tiny
from tests.support.stack import start_vision_engine

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


@pytest.fixture(scope="module")
def engine(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vision_engine")
    config = tiny(tiny_models, vision=True).write(tmp / "models.yaml")
    service = start_vision_engine(config, tmp)
    try:
        yield service
    finally:
        assert service.stop() == 0


def grpcurl(*args, data=None) -> str:
    cmd = [GRPCURL, "-plaintext", "-max-time", "60"] + (["-d", json.dumps(data)] if data is not None else [])
    result = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_lists_describes_and_streams_describe(engine):
    assert "proxyvision.v1.VisionEngine" in grpcurl(engine.address, "list").split()
    assert "rpc Describe" in grpcurl(engine.address, "describe", "proxyvision.v1.VisionEngine")
    data = base64.b64encode(png((9, 99, 199))).decode()
    out = grpcurl(
        engine.address,
        "proxyvision.v1.VisionEngine/Describe",
        data={"images": [{"data": data, "mime_type": "image/png", "detail": "DETAIL_LOW"}], "max_tokens": 6},
    )
    messages = [json.loads(chunk) for chunk in out.replace("}\n{", "}\x00{").split("\x00")]
    done = messages[-1]["done"]
    assert done["caption_tokens"] == 6 and done["finish_reason"] == "length" and done["caption"]
    assert "".join(m["delta"]["text"] for m in messages if "delta" in m) == done["caption"]


def test_bad_image_is_invalid_argument(engine):
    with grpc.insecure_channel(engine.address) as channel:
        stub = vision_engine_pb2_grpc.VisionEngineStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Describe(pb.DescribeRequest(images=[common_pb2.ImageInput(data=b"definitely not an image")])))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "Invalid image" in info.value.details()


def test_several_images_of_one_request_come_back_by_index(engine):
    images = [
        common_pb2.ImageInput(data=png((i * 40, 10, 10), (40 + i * 8, 40)), detail=common_pb2.DETAIL_AUTO)
        for i in range(4)
    ]
    with grpc.insecure_channel(engine.address) as channel:
        responses = list(
            vision_engine_pb2_grpc.VisionEngineStub(channel).Describe(pb.DescribeRequest(images=images, max_tokens=5))
        )
    done = {r.done.image_index: r.done for r in responses if r.HasField("done")}
    assert sorted(done) == [0, 1, 2, 3] and all(d.caption_tokens == 5 for d in done.values())
    engine.wait_for_log("Vision processing completed in ")
