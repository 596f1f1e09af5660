"""The captioner on vLLM's engine core (`backend: vllm` on the vision model): the one vLLM adapter of the vision
engine (services/common/vllm_core.py has what it shares with the text engine's).

Each image is one vLLM request, continuously batched with every other image in flight, where the transformers
captioner (batcher.py) runs static batches. What stays ours, so both backends caption alike: the prompt (the
chat template with one image placeholder, prompts.py, tokenized by our tokenizer), the image's size under its
token budget (the family's `handed_over`: resized as our processor would, and kept so by vLLM's, so `detail` and
`max_image_tokens` hold as on transformers), greedy decoding with the checkpoint's repetition penalty, the stop
tokens and the detokenizer. vLLM's processor encodes the image (transformers', in vLLM's venv, or for a Mistral
repo in its native format mistral-common's); its engine core runs the vision tower and the decoder.

Budget: `mem` is the KV cache (`kv_cache_memory_bytes`), the same tokens the transformers captioner's batches
may hold, and one image's prompt plus caption must fit it (`max_model_len`). Unloading shuts the engine core
down (its processes exit and give their memory back).
"""

from __future__ import annotations

import asyncio
import itertools
import time

from services.common.config import ModelEntry
from services.common.detokenizer import IncrementalDetokenizer
from services.common.static_batches import budget_tokens
from services.common.vllm_core import first_line, image_prompt, start_vllm

from .batcher import CaptionJob, CaptionResult
from .loader import LoadedVisionModel
from .prompts import render_prompt


class VllmCaptioner:
    """Captions on one vLLM `AsyncLLM`; `submit` runs on the event loop that owns it."""

    def __init__(self, loaded: LoadedVisionModel, entry: ModelEntry) -> None:
        params = entry.params
        self.loaded = loaded
        self.captioned = 0  # images that went through the model (cache hits never get here)
        blocks = budget_tokens(params.mem, loaded.kv_bytes_per_token) // params.block_size
        self.token_budget = blocks * params.block_size  # KV tokens of all images in flight
        self._max_num_seqs = params.max_num_seqs
        self._eos = set(loaded.eos_token_ids)
        self._ids = itertools.count()
        self._tasks: dict[str, asyncio.Task] = {}  # images in the engine core, by request id
        self._holding: dict[str, int] = {}  # KV tokens each of them holds (prompt with image + caption so far)
        core = start_vllm(
            loaded,
            entry,
            kv_blocks=blocks,
            bytes_per_token=loaded.kv_bytes_per_token,
            limit_mm_per_prompt={"image": 1, "video": 0},  # a caption prompt has one image and never a video
        )
        self.llm, self._sampling_params_cls, self._delta = core.llm, core.sampling_params, core.delta

    @property
    def running(self) -> int:
        """Images vLLM is captioning now (it schedules at most max_num_seqs at a time)."""
        return min(len(self._tasks), self._max_num_seqs)

    @property
    def waiting(self) -> int:
        """Images waiting for one of vLLM's max_num_seqs slots."""
        return max(0, len(self._tasks) - self._max_num_seqs)

    @property
    def tokens_in_flight(self) -> int:
        """KV tokens the images in flight hold."""
        return sum(self._holding.values())

    def submit(self, job: CaptionJob) -> None:
        """Start captioning `job`'s image; its callbacks run on this event loop. Cancelling the job aborts it."""
        request_id = f"caption-{next(self._ids)}"
        task = asyncio.get_running_loop().create_task(self._caption(job, request_id))
        self._tasks[request_id] = task
        job.on_cancel.append(task.cancel)

    def _prompt(self, job: CaptionJob) -> dict:
        """vLLM's prompt: our token ids, with the image as the family hands it over (sized for the job's token
        budget: vllm_core.image_prompt), or for a family that sizes images itself, as it came with the one
        placeholder that vLLM's processor expands."""
        family, tokenizer = self.loaded.family, self.loaded.tokenizer
        text = render_prompt(tokenizer, family.placeholder, job.instruction)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        handed = family.handed_over(job.image, job.max_image_tokens)
        if handed is not None:
            return image_prompt(self.llm, family, ids, [handed], expanded=False)
        return {"prompt_token_ids": ids, "multi_modal_data": {"image": job.image}}

    async def _caption(self, job: CaptionJob, request_id: str) -> None:
        try:
            try:
                prompt = await asyncio.to_thread(self._prompt, job)
            except Exception as exc:  # noqa: BLE001 - one bad image fails its own caption only
                job.on_error(f"cannot prepare image: {exc}")
                return
            self.captioned += 1
            placeholder = self.loaded.family.placeholder_id
            params = self._sampling_params_cls(
                temperature=0.0,  # captions are cached: the same image must give the same caption
                repetition_penalty=self.loaded.repetition_penalty,
                stop_token_ids=sorted(self._eos),
                max_tokens=job.max_new_tokens,
                detokenize=False,
                output_kind=self._delta,
            )
            detok = IncrementalDetokenizer(self.loaded.tokenizer)
            tokens: list[int] = []
            text: list[str] = []
            prompt_tokens, image_tokens, reason = None, 0, "length"
            async for out in self.llm.generate(prompt, params, request_id):
                if prompt_tokens is None:  # the prompt as vLLM's processor expanded it: the same in every output
                    expanded = out.prompt_token_ids or prompt["prompt_token_ids"]
                    prompt_tokens, image_tokens = len(expanded), expanded.count(placeholder)
                completion = out.outputs[0]
                new = [token for token in completion.token_ids if token not in self._eos]
                tokens += new
                self._holding[request_id] = prompt_tokens + len(tokens)
                delta = detok.push(new)
                if delta:
                    text.append(delta)
                    job.on_delta(delta)
                if out.finished:
                    reason = "length" if completion.finish_reason == "length" else "stop"
            elapsed = (time.monotonic() - job.submitted_at) * 1000
            job.on_done(CaptionResult("".join(text), reason, image_tokens, len(tokens), elapsed))
        # A cancel raises CancelledError here, which passes through: vLLM's generate() aborts the request.
        except Exception as exc:  # the engine core died or refused the image: this caption fails, with why
            job.on_error(f"captioning failed: vLLM: {first_line(exc)}")
        finally:
            self._tasks.pop(request_id, None)
            self._holding.pop(request_id, None)

    def stop(self) -> None:
        """Shut the engine core down (its processes exit and free their memory). Blocking: a worker thread."""
        for task in list(self._tasks.values()):
            task.get_loop().call_soon_threadsafe(task.cancel)
        self._tasks.clear()
        self.llm.shutdown()
