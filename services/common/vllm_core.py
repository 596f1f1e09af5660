"""What both engines' vLLM adapters share (`backend: vllm`): importing vLLM, the checks before its engine core
starts, and starting it.

The text engine's adapter (text_engine/engine/vllm_source.py) and the captioner's
(vision_engine/captioner/vllm_captioner.py) each hold one `AsyncLLM`, as vLLM's own OpenAI server does: its
engine core runs in child processes (scheduler, paged KV cache, continuous batching, the forward passes) and
talks to the engine's process over ZeroMQ, so no event loop of ours runs a forward pass. vLLM is imported only
here and in those adapters: it lives in its own venv (`make install-vllm`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .config import ModelEntry
from .hf_models import ModelLoadError, head_dim
from .multimodal.family import collapse_placeholders, expand_placeholders

log = logging.getLogger(__name__)

# vLLM on the CPU keeps VLLM_CPU_NUM_OF_RESERVED_CPU cores (default 1) off its worker's OpenMP threads for the
# processes in front of it. On this project's 2-core machine that halves the worker; our engine process and the
# gateway need far less than a core: 0 served 1.39x the tokens/s of vLLM's default at 16 streams here, with a
# lower TTFT (make bench-engines, docs/benchmarks.md). An operator's own setting wins.
DEFAULT_RESERVED_CPUS = "0"
INSTALL_HINT = "run `make install-vllm` and start the engine with .venv-vllm/bin/python (the launcher does)"


def import_vllm():
    """vLLM, its `AsyncEngineArgs` and `AsyncLLM`; ModelLoadError (one line, with the fix) when it is missing."""
    # Read by vLLM's worker processes, which inherit this process's environment (set before they start).
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", DEFAULT_RESERVED_CPUS)
    try:
        import vllm
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError as exc:
        raise ModelLoadError(f"backend: vllm, but vLLM cannot be imported here ({exc}): {INSTALL_HINT}") from None
    return vllm, AsyncEngineArgs, AsyncLLM


@dataclass(frozen=True)
class VllmEngine:
    """A started vLLM engine core, and what an adapter needs of vLLM to feed it."""

    llm: object  # vllm.v1.engine.async_llm.AsyncLLM
    sampling_params: type  # vllm.SamplingParams
    delta: object  # RequestOutputKind.DELTA: each output carries only the request's new tokens


def start_vllm(
    loaded, entry: ModelEntry, *, kv_blocks: int, bytes_per_token: int, stat_loggers=None, **engine_args
) -> VllmEngine:
    """Check that vLLM can run `loaded` (either engine's loaded model: its architectures, text config, dtype,
    device and context), then start an `AsyncLLM` for `entry` with what both adapters set: the checkpoint and
    how it is read, the dtype our loader resolved, `max_num_seqs`, a KV cache of `kv_blocks` blocks of
    `block_size` tokens and `max_model_len` within it. `engine_args`: the adapter's own. Blocking (a worker thread);
    a failure is a ModelLoadError with one line."""
    vllm, engine_args_cls, async_llm_cls = import_vllm()
    source, params = entry.source, entry.params
    check_runnable(
        vllm, architectures=loaded.architectures, text_config=loaded.text_config, device=loaded.device, source=source
    )
    args = engine_args_cls(
        model=source,
        **entry.pretrained_options,
        dtype=str(loaded.dtype).removeprefix("torch."),  # what our loader resolved (bf16 on GPU, f32 on CPU...)
        seed=0,
        # vLLM refuses to start unless one request of max_model_len fits the cache; admission already refuses
        # longer ones (they could never run), so the cache's capacity caps it here.
        max_model_len=min(loaded.max_context, kv_blocks * params.block_size),
        max_num_seqs=params.max_num_seqs,
        block_size=params.block_size,
        # The budget's blocks, plus the one block vLLM's allocator keeps as its null block (never holds tokens).
        kv_cache_memory_bytes=(kv_blocks + 1) * params.block_size * bytes_per_token,
        # On the CPU, torch.compile costs ~90 s more at every load (an idle unload's reload included) for
        # ~15 % more decode speed here (docs/benchmarks.md); on GPUs vLLM's compiled graphs are the point.
        enforce_eager=loaded.device.type == "cpu",
        **engine_args,
    )
    try:
        llm = async_llm_cls.from_engine_args(args, stat_loggers=stat_loggers)
    except Exception as exc:  # vLLM raises many kinds; each is a failed load with its reason
        raise ModelLoadError(f"vLLM could not start {source!r}: {first_line(exc)}") from exc
    from vllm.sampling_params import RequestOutputKind

    log.info("vLLM %s engine core started for %s (backend=vllm)", vllm.__version__, source)
    return VllmEngine(llm, vllm.SamplingParams, RequestOutputKind.DELTA)


def image_prompt(llm, family, prompt_ids: list[int], images: list, *, expanded: bool) -> dict:
    """vLLM's prompt for token ids with images (`EncodedImage`s from the family's `handed_over`): the ids, the sized
    images and the processor arguments that keep their sizes. `expanded`: whether `prompt_ids` already hold each
    image's tokens (else one placeholder each).

    vLLM's processors of the transformers format (Qwen2-VL's family, Mistral3's PixtralProcessor) write each
    image's tokens in place of one placeholder. Its Pixtral processor for Mistral's native format (params.json,
    consolidated.safetensors, tekken.json: what it reads a Mistral repo that ships them in, on mistral-common's
    tokenizer and image encoder) only checks the tokens, written out as mistral-common's chat encoding writes
    them. Either way the tokens are the family's, so the counts are ours."""
    from vllm.tokenizers.mistral import MistralTokenizer

    placeholder = family.placeholder_id
    if isinstance(llm.tokenizer, MistralTokenizer):
        ids = prompt_ids if expanded else expand_placeholders(prompt_ids, placeholder, images)
    else:
        ids = collapse_placeholders(prompt_ids, placeholder, images) if expanded else prompt_ids
    pictures = [image.image for image in images]
    return {
        "prompt_token_ids": ids,
        "multi_modal_data": {"image": pictures},
        "mm_processor_kwargs": family.kept_as_they_are(pictures),
    }


def check_runnable(vllm, *, architectures: list[str], text_config, device, source: str) -> None:
    """The reasons vLLM cannot run a checkpoint that we know before it starts (its own failure only says "see
    root cause above", in its child's log): an architecture it does not implement; a vision-language checkpoint
    (vLLM runs them with transformers' image processors, which need torchvision) where torchvision cannot load;
    on the CPU, a head size its attention kernel lacks."""
    supported = vllm.ModelRegistry.get_supported_archs()
    archs = ", ".join(architectures)
    if architectures and not any(arch in supported for arch in architectures):
        raise ModelLoadError(
            f"{source!r}: vLLM {vllm.__version__} has no implementation of {archs}; serve it with backend: transformers"
        )
    if any(arch.endswith("ForConditionalGeneration") for arch in architectures) and not torchvision_loads():
        raise ModelLoadError(
            f"{source!r}: vLLM runs {archs} with transformers' image processors, which need torchvision, and "
            "none loads in this environment: run `make install-vllm` (it installs one), or serve it with "
            "backend: transformers"
        )
    if device.type == "cpu":
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        sizes = CPUAttentionBackend.get_supported_head_sizes()
        if head_dim(text_config) not in sizes:
            raise ModelLoadError(
                f"{source!r}: vLLM's CPU attention takes head sizes {sizes}, this model's heads are "
                f"{head_dim(text_config)}; serve it with backend: transformers (or on a GPU)"
            )


def torchvision_loads() -> bool:
    """Whether torchvision imports here (a build for another torch raises a RuntimeError, not an ImportError)."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (vLLM's can run to pages)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
