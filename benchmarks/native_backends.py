"""Native image requests on the text engine's two backends: transformers vs vLLM, one checkpoint, one run.

    python -m benchmarks.native_backends [--model-dir DIR] [--concurrency 8] [--rounds 3] [--max-tokens 16]

The checkpoint (default: the brief's Ministral-3 stand-in, models/tiny/ministral-3-tiny, whose Pixtral tower sees
the images) is served with `vision_mode: native` by one text engine + gateway per backend, one backend after the
other (an idle vLLM is not idle: its worker's threads spin), with the same `mem` and `max_num_seqs`:

- transformers: image requests run in static `generate()` batches beside the text continuous batching;
- vllm: images and text share vLLM's continuous batch and paged KV cache (mistral-common's image encoder for a
  Mistral repo in its native format).

Load: waves of `concurrency` streamed chats at once (and waves of 1), each with an image never sent before (a JPEG,
448x336, `detail: auto`, native_vision.py's `one_turn`), greedy, `max_tokens` tokens; per wave its wall time, per
request its TTFT. Printed: medians per backend, `vllm/transformers images/s = R at C streams`, and whether the
greedy answers to the same images are the same on both backends (`greedy answers identical: yes|no`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.models_yaml import ModelsYaml
from tests.support.processes import REPO_ROOT

from .native_vision import Timed, one_turn, stream_chat
from .servers import text_stack
from .vision import fresh_image

MODEL_NAME = "native"
BACKENDS = ("transformers", "vllm")
IMAGE_SIZE = (448, 336)


def wave(base_url: str, images: list[bytes], max_tokens: int) -> tuple[float, list[Timed]]:
    """Send one streamed chat per image at once; the wave's wall time (s) and each answer."""
    started = time.perf_counter()
    with ThreadPoolExecutor(len(images)) as pool:
        answers = list(pool.map(lambda image: stream_chat(base_url, MODEL_NAME, one_turn([image]), max_tokens), images))
    return time.perf_counter() - started, answers


def measure(base_url: str, concurrencies: list[int], rounds: int, max_tokens: int, probes: list[bytes]) -> dict:
    """Warm up, then `rounds` waves at each concurrency; and the greedy answers to `probes`, one at a time."""
    wave(base_url, [fresh_image(IMAGE_SIZE)], max_tokens)
    rows = {}
    for concurrency in concurrencies:
        seconds, ttfts = [], []
        for _ in range(rounds):
            elapsed, answers = wave(base_url, [fresh_image(IMAGE_SIZE) for _ in range(concurrency)], max_tokens)
            seconds.append(elapsed)
            ttfts += [answer.ttft_ms for answer in answers]
        wall = statistics.median(seconds)
        rows[concurrency] = {"images_per_s": concurrency / wall, "ttft_p50_ms": statistics.median(ttfts)}
    greedy = [stream_chat(base_url, MODEL_NAME, one_turn([image]), max_tokens).text for image in probes]
    return {"rows": rows, "greedy": greedy}


def serve(model_dir: str, backend: str, concurrency: int, work: Path):
    """A text engine on `backend` serving `model_dir` natively, and a gateway."""
    config = (
        ModelsYaml()
        .native(
            MODEL_NAME,
            local_path=model_dir,
            backend=backend,
            tiny_defaults=False,
            params={"mem": 64, "dtype": "f32", "max_num_seqs": concurrency},
            max_model_len=4096,
        )
        .set(idle_unload_secs=0)
    )
    (work / backend).mkdir()
    return text_stack(config, MODEL_NAME, work / backend, timeout=900, engine_backend=backend)


def report(results: dict, concurrencies: list[int]) -> str:
    lines = ["| backend | " + " | ".join(f"images/s c={c} | TTFT p50 c={c}" for c in concurrencies) + " |"]
    lines.append("|---|" + "---|---|" * len(concurrencies))
    for backend in BACKENDS:
        rows = results[backend]["rows"]
        cells = " | ".join(f"{rows[c]['images_per_s']:.2f} | {rows[c]['ttft_p50_ms']:,.0f} ms" for c in concurrencies)
        lines.append(f"| {backend} | {cells} |")
    for c in concurrencies:
        ratio = results["vllm"]["rows"][c]["images_per_s"] / results["transformers"]["rows"][c]["images_per_s"]
        lines.append(f"vllm/transformers images/s = {ratio:.2f} at {c} stream{'s' if c > 1 else ''}")
    same = results["vllm"]["greedy"] == results["transformers"]["greedy"]
    lines.append(f"greedy answers identical: {'yes' if same else 'no'} ({len(results['vllm']['greedy'])} images)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=str(REPO_ROOT / "models" / "tiny" / "ministral-3-tiny"))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    concurrencies = [1, args.concurrency]
    probes = [fresh_image(size) for size in ((448, 336), (200, 600), (900, 700), (64, 64))]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-native-") as tmp:
        for backend in BACKENDS:
            with serve(args.model_dir, backend, args.concurrency, Path(tmp)) as stack:
                results[backend] = measure(
                    stack.base_url.removesuffix("/v1"), concurrencies, args.rounds, args.max_tokens, probes
                )
    print(report(results, concurrencies))


if __name__ == "__main__":
    main()
