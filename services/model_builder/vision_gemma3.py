"""A random-weight Gemma 3 in the layout of google/gemma-3-4b-it.

Matched, file for file:
- config.json as the repo has it (transformers 4.50): `Gemma3ForConditionalGeneration`, `model_type` gemma3,
  `boi_token_index` 255999, `eoi_token_index` 256000, `image_token_index` 262144, `mm_tokens_per_image` 256,
  `eos_token_id` [1, 106], `torch_dtype` bfloat16; a sparse `text_config` (`gemma3_text`, `rope_scaling`
  {linear, factor 8}, `sliding_window` 1024, the defaults for the rest: vocab 262208, head_dim 256,
  query_pre_attn_scalar 256, five sliding layers to one global); `vision_config` a SigLIP
  (`siglip_vision_model`, `image_size` 896, `patch_size` 14, `vision_use_head` false);
- the weights in bfloat16 with the repo's pre-transformers-5 names (`language_model.model.*`,
  `vision_tower.vision_model.*`, `multi_modal_projector.mm_input_projection_weight`,
  `multi_modal_projector.mm_soft_emb_norm.weight`), tied (no `lm_head.weight`), in two shards behind
  `model.safetensors.index.json`;
- generation_config.json (bos 2, eos [1, 106], pad 0, do_sample, top_k 64, top_p 0.95,
  cache_implementation hybrid); preprocessor_config.json (`Gemma3ImageProcessor`, 896x896, mean/std 0.5,
  resample 2, pan & scan unset, i.e. off; `image_seq_length` 256) and processor_config.json;
- the tokenizer: Gemma's SentencePiece-style BPE pipeline (spaces to `▁`, byte fallback, `<unk>`), with
  the special tokens at their real ids: `<pad>` 0, `<eos>` 1, `<bos>` 2, `<unk>` 3, `<mask>` 4,
  `[multimodal]` 5, `<unused0..98>` 6..104, `<start_of_turn>` 105, `<end_of_turn>` 106, `<start_of_image>`
  255999, `<end_of_image>` 256000, `<unused99..>` up to 262143 and the added `<image_soft_token>` 262144;
  tokenizer.json, tokenizer_config.json (`GemmaTokenizer`, add_bos_token, the boi/eoi/image tokens as
  extra special tokens) and special_tokens_map.json; chat_template.json with Gemma 3's template (bos, a
  system message folded into the first user turn, `model` for the assistant, `<start_of_image>` per image).

Not checked against the repo's bytes here: the `<unusedN>` numbering past 256000, the position of the byte
tokens, and tokenizer_config.json keys beyond the special tokens.

What differs: the sizes (text hidden 32, 6 layers so the 5:1 sliding/global pattern is real, 2/1 heads of the
real head_dim 256, MLP 64; SigLIP 2 layers 32 wide), no tokenizer.model (the SentencePiece file; transformers
loads tokenizer.json), and the BPE's ordinary part: the 256 byte tokens follow `<end_of_turn>` and a BPE
learned on the built-in corpus comes next, then filler words up to 255998, where the real vocabulary has
its own order. Filler rows of the tied embedding are zero, so the random model all but never picks them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Gemma3Config, Gemma3ForConditionalGeneration

from .corpus import corpus
from .hub_files import added_tokens_decoder, data_json, save_shards, write_json

GEMMA3_HUB_ID = "google/gemma-3-4b-it"
LEADING = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "[multimodal]",
    *(f"<unused{i}>" for i in range(99)),
    "<start_of_turn>",
    "<end_of_turn>",
]
BYTES = [f"<0x{b:02X}>" for b in range(256)]
BOI, EOI, IMAGE = 255999, 256000, 262144
BPE_VOCAB = 262144  # ids 0..262143 in the model vocabulary; <image_soft_token> is added after them
VOCAB_SIZE = 262208  # the config's (embedding rows)
LEARNED = 2048

# Gemma 3's chat template (its chat_template.json).
GEMMA3_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

CONFIG = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "boi_token_index": BOI,
    "eoi_token_index": EOI,
    "eos_token_id": [1, 106],
    "image_token_index": IMAGE,
    "initializer_range": 0.02,
    "mm_tokens_per_image": 256,
    "model_type": "gemma3",
    "text_config": {
        "head_dim": 256,
        "hidden_size": 32,
        "intermediate_size": 64,
        "model_type": "gemma3_text",
        "num_attention_heads": 2,
        "num_hidden_layers": 6,
        "num_key_value_heads": 1,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    },
    "torch_dtype": "bfloat16",
    "transformers_version": "4.50.0.dev0",
    "vision_config": {
        "hidden_size": 32,
        "image_size": 896,
        "intermediate_size": 64,
        "model_type": "siglip_vision_model",
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "patch_size": 14,
        "vision_use_head": False,
    },
}

GENERATION_CONFIG = {
    "bos_token_id": 2,
    "cache_implementation": "hybrid",
    "do_sample": True,
    "eos_token_id": [1, 106],
    "pad_token_id": 0,
    "top_k": 64,
    "top_p": 0.95,
    "transformers_version": "4.50.0.dev0",
}

PREPROCESSOR_CONFIG = data_json("gemma-3/preprocessor_config.json")


def _specials() -> dict[int, str]:
    fixed = {i: t for i, t in enumerate(LEADING)} | {BOI: "<start_of_image>", EOI: "<end_of_image>"}
    fixed |= {i: f"<unused{99 + n}>" for n, i in enumerate(range(EOI + 1, BPE_VOCAB))}
    return fixed


def _filler(taken: set[str], count: int) -> list[str]:
    # Pseudo-words in SentencePiece form ("▁bako"): letters only, so no merge of the learned BPE makes them.
    syllables = [c + v for c in "bdfghjklmnprstvz" for v in "aeiou"]
    out: list[str] = []
    n = 2
    while len(out) < count:
        stack = [""]
        for _ in range(n):
            stack = [p + s for p in stack for s in syllables]
        out += [w for w in ("▁" + p for p in stack) if w not in taken][: count - len(out)]
        n += 1
    return out


def build_gemma3_tokenizer() -> Tokenizer:
    """All 262,144 model-vocabulary ids (specials and bytes at fixed ids) plus the added <image_soft_token>."""
    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.normalizer = normalizers.Replace(" ", "▁")
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    trainer = trainers.BpeTrainer(vocab_size=LEARNED, show_progress=False, special_tokens=[])
    learner.train_from_iterator(corpus(), trainer)
    learned = json.loads(learner.to_str())["model"]
    specials = _specials()
    vocab = {t: i for i, t in specials.items() if i < len(LEADING)}
    vocab |= {t: len(LEADING) + i for i, t in enumerate(BYTES)}
    for token in learned["vocab"]:
        if token not in vocab:
            vocab[token] = len(vocab)
    learned_end = len(vocab)
    filler = iter(_filler(set(vocab), BPE_VOCAB - learned_end - (BPE_VOCAB - BOI)))
    for i in range(learned_end, BPE_VOCAB):
        vocab[specials.get(i) or next(filler)] = i
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for i, t in sorted(specials.items())
            if i < len(LEADING) or i in (BOI, EOI)
        ]
    )
    tok.add_special_tokens([AddedToken("<image_soft_token>", special=True, normalized=False)])
    wrong = {t: i for i, t in [*specials.items(), (IMAGE, "<image_soft_token>")] if tok.token_to_id(t) != i}
    if wrong:
        raise RuntimeError(f"special tokens off their real ids: {list(wrong)[:5]}")
    return tok, learned_end


def _write_tokenizer(out: Path) -> int:
    tok, learned_end = build_gemma3_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    extra = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    decoder = added_tokens_decoder(
        [
            *((i, t, True) for i, t in _specials().items() if i < len(LEADING) or i in (BOI, EOI)),
            (IMAGE, "<image_soft_token>", True),
        ]
    )
    write_json(
        out / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": decoder,
            **extra,
            "bos_token": "<bos>",
            "chat_template": GEMMA3_CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<eos>",
            "extra_special_tokens": extra,
            "model_max_length": 1000000000000000019884624838656,
            "pad_token": "<pad>",
            "processor_class": "Gemma3Processor",
            "sp_model_kwargs": None,
            "spaces_between_special_tokens": False,
            "tokenizer_class": "GemmaTokenizer",
            "unk_token": "<unk>",
            "use_default_system_prompt": False,
        },
    )
    write_json(
        out / "special_tokens_map.json",
        {**extra, "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
    )
    write_json(out / "chat_template.json", {"chat_template": GEMMA3_CHAT_TEMPLATE})
    return learned_end


def legacy_name(name: str) -> str:
    """transformers-5 module names -> the 4b-it repo's (transformers 4.50) weight names."""
    # transformers 5's SiglipVisionModel has no `vision_model.` level; the repo's names (4.50) do.
    for new, old in (
        ("model.language_model.", "language_model.model."),
        ("model.vision_tower.", "vision_tower.vision_model."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
    ):
        if name.startswith(new):
            return old + name[len(new) :]
    return name


def write_tiny_gemma3(out: Path) -> dict:
    """Write a ~8.5M-parameter (almost all embedding) random Gemma 3 with gemma-3-4b-it's files to `out`."""
    torch.manual_seed(8)
    learned_end = _write_tokenizer(out)
    model = Gemma3ForConditionalGeneration(Gemma3Config.from_dict(json.loads(json.dumps(CONFIG))))
    with torch.no_grad():  # tied: a zero row is a zero logit, far below the best random one
        embed = model.model.language_model.embed_tokens.weight
        embed[learned_end:BOI] = 0
        embed[EOI + 1 : IMAGE] = 0
        embed[IMAGE + 1 :] = 0
    model = model.to(torch.bfloat16)
    weights = {legacy_name(k): v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_shards(weights, out, shards=2)
    write_json(out / "config.json", CONFIG)
    write_json(out / "generation_config.json", GENERATION_CONFIG)
    write_json(out / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    write_json(out / "processor_config.json", {"image_seq_length": 256, "processor_class": "Gemma3Processor"})
    return {"parameters": sum(p.numel() for p in model.parameters())}
