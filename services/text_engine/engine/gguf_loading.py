"""Serve a GGUF file directly (`gguf_file` in models.yaml): the text engine's side of services/common/gguf.py.

The file is dequantized at load (see that module: ~40 s and parameters x 4 bytes in float32 for SmolLM2-135M);
`/v1/models` shows what was dequantized to what under `quantization`. Sampling defaults: a GGUF carries no
`generation_config.json`, so models.yaml, then one beside the file (a hub repo's), then the built-ins.
"""

from __future__ import annotations

from services.common.config import SamplingDefaults
from services.common.gguf import load_gguf, locate, open_gguf
from services.common.hf_models import resolve_device, resolve_dtype

from .loader import LoadedModel, with_checkpoint_defaults


def load_gguf_text_model(
    source: str,
    gguf_file: str,
    *,
    dtype: str,
    device: str,
    revision: str | None = None,
    max_model_len: int | None = None,
    sampling: SamplingDefaults | None = None,
) -> LoadedModel:
    """Load `gguf_file` (in `source`, see `locate`) for the batching loop; ModelLoadError naming the file."""
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    path = open_gguf(locate(source, gguf_file, revision))
    config, tokenizer, model, summary = load_gguf(path, dtype=torch_dtype)
    return with_checkpoint_defaults(
        model.to(torch_device),
        tokenizer,
        config,
        # A generation_config.json next to the file, if any (hub repos rarely have one).
        generation_dir=str(path.parent),
        common={},
        sampling=sampling,
        max_model_len=max_model_len,
        dtype=torch_dtype,
        device=torch_device,
        config=config,
        stand_in_for="",
        quantization=summary.describe(torch_dtype),
    )
