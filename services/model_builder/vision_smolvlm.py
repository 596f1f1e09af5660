"""A random-weight SmolVLM (Idefics3) in the layout of HuggingFaceTB/SmolVLM-256M-Instruct.

Matched, file for file:
- config.json nested as the repo has it (transformers 4.46): `Idefics3ForConditionalGeneration`,
  `model_type` idefics3, `image_token_id` 49190, `scale_factor` 4, `image_seq_len` 64, `vocab_size` 49280,
  untied embeddings; `text_config` a Llama (`head_dim` 64, `rope_theta` 100000, `rms_norm_eps` 1e-5,
  `pad_token_id` 2, `max_position_embeddings` 8192, `vocab_size` 49280); `vision_config` (`image_size` 512,
  `patch_size` 16, `max_image_size` {longest_edge 512}, `size` {longest_edge 2048}), so each 512x512 tile is
  (512/16)^2 / 4^2 = 64 image tokens, as the real one's;
- model.safetensors in bfloat16 with the repo's names (`model.text_model.*`, `model.vision_model.*`,
  `model.connector.modality_projection.proj.weight`, `lm_head.weight`);
- preprocessor_config.json (`Idefics3ImageProcessor`: image splitting on, tiles of 512, images resized to a
  2048 longest edge first, mean/std 0.5, resample 1, do_pad) and processor_config.json (`image_seq_len` 64);
- the tokenizer: SmolLM2's byte-level BPE layout (the 17 special tokens `<|endoftext|>` 0, `<|im_start|>` 1
  (bos), `<|im_end|>` 2 (pad), ... `<empty_output>` 16, the BPE up to 49151), then SmolVLM's added tokens:
  `<global-img>` 49152, `<row_1_col_1>`..`<row_6_col_6>` 49153..49188, `<fake_token_around_image>` 49189,
  `<image>` 49190, `<end_of_utterance>` 49279 (eos); tokenizer.json, vocab.json, merges.txt,
  tokenizer_config.json (`GPT2Tokenizer`, model_max_length 8192), special_tokens_map.json,
  added_tokens.json and chat_template.json with SmolVLM's template ("User:" / "Assistant:" turns ended by
  `<end_of_utterance>`, `<image>` where each image goes);
- generation_config.json: bos 1, eos 49279, pad 2.

Not checked against the repo's bytes here: generation_config.json (bos 1, eos 49279, pad 2 as the config
and tokenizer name them), the ids 49191..49278 (see below) and the tokenizer_config.json keys beyond the
special tokens.

What differs: the sizes (text hidden 64, 2 layers, 2/1 heads of head_dim 32, the least vLLM's CPU attention takes,
for the real 9/3 of 64, MLP 192; vision 2 layers 32 wide), the BPE's learned part (trained on the built-in corpus,
the rest of the ids filler words that no merge produces, as in qwen3_tokenizer.py) and the ids 49191..49278, which
hold filler words here (the real tokenizer has nothing the stand-in relies on there). Rows of ids past the
tokenizer get zero weights in lm_head, so the random model does not pick them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import Idefics3Config, Idefics3ForConditionalGeneration

from .corpus import corpus
from .hub_files import added_tokens_decoder, data_json, save_shards, write_bpe_files, write_json
from .qwen3_tokenizer import _filler

SMOLVLM_HUB_ID = "HuggingFaceTB/SmolVLM-256M-Instruct"
LEADING = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<repo_name>",
    "<reponame>",
    "<file_sep>",
    "<filename>",
    "<gh_stars>",
    "<issue_start>",
    "<issue_comment>",
    "<issue_closed>",
    "<jupyter_start>",
    "<jupyter_text>",
    "<jupyter_code>",
    "<jupyter_output>",
    "<jupyter_script>",
    "<empty_output>",
]
BPE_VOCAB = 49152
ROWS = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
ADDED = {
    "<global-img>": 49152,
    **{t: 49153 + i for i, t in enumerate(ROWS)},
    "<fake_token_around_image>": 49189,
    "<image>": 49190,
    "<end_of_utterance>": 49279,
}
VOCAB_SIZE = 49280
LEARNED_VOCAB = 2048
IMAGE, EOU, BOS, PAD = ADDED["<image>"], ADDED["<end_of_utterance>"], 1, 2

# SmolVLM's chat template (its chat_template.json).
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

CONFIG = {
    "architectures": ["Idefics3ForConditionalGeneration"],
    "image_seq_len": 64,
    "image_token_id": IMAGE,
    "model_type": "idefics3",
    "scale_factor": 4,
    "text_config": {
        "architectures": ["VLlama3ForCausalLM"],
        "head_dim": 32,  # vLLM's CPU attention takes no smaller (the real model's are 64)
        "hidden_size": 64,
        "intermediate_size": 192,
        "max_position_embeddings": 8192,
        "model_type": "llama",
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "num_key_value_heads": 1,
        "pad_token_id": PAD,
        "rms_norm_eps": 1e-05,
        "rope_theta": 100000,
        "torch_dtype": "bfloat16",
        "vocab_size": VOCAB_SIZE,
    },
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.0",
    "use_cache": True,
    "vision_config": {
        "hidden_size": 32,
        "image_size": 512,
        "intermediate_size": 64,
        "max_image_size": {"longest_edge": 512},
        "model_type": "idefics3",
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "patch_size": 16,
        "size": {"longest_edge": 2048},
        "tie_word_embeddings": False,
        "use_base_siglip": False,
    },
    "vocab_size": VOCAB_SIZE,
}

PREPROCESSOR_CONFIG = data_json("smolvlm/preprocessor_config.json")

GENERATION_CONFIG = {"bos_token_id": BOS, "eos_token_id": EOU, "pad_token_id": PAD, "transformers_version": "4.46.0"}


def _pipeline(tok: Tokenizer) -> Tokenizer:
    # SmolLM2's: single digits, then byte-level with GPT-2's regex.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def build_smolvlm_tokenizer() -> Tokenizer:
    """Every id 0..49279 in the model's vocabulary (specials at their real ids), the specials registered."""
    learner = _pipeline(Tokenizer(models.BPE(unk_token=None)))
    trainer = trainers.BpeTrainer(
        vocab_size=LEARNED_VOCAB,
        special_tokens=LEADING,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    learner.train_from_iterator(corpus(), trainer)
    learned = json.loads(learner.to_str())["model"]
    vocab = dict(learned["vocab"])
    if len(vocab) != LEARNED_VOCAB or any(vocab[t] != i for i, t in enumerate(LEADING)):
        raise RuntimeError("the learned vocabulary does not start with SmolLM2's special tokens")
    by_id = {i: t for t, i in ADDED.items()}
    filler = iter(_filler(set(vocab), VOCAB_SIZE - len(vocab) - len(ADDED)))
    for i in range(len(vocab), VOCAB_SIZE):  # in id order: specials where they belong, filler around them
        vocab[by_id.get(i) or next(filler)] = i
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = _pipeline(Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None)))
    # Already in the vocabulary, so each keeps its id; registering them makes them unsplittable and special.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in [*LEADING, *ADDED]])
    wrong = {t: tok.token_to_id(t) for t, i in ADDED.items() if tok.token_to_id(t) != i}
    if wrong:
        raise RuntimeError(f"added tokens off their real ids: {wrong}")
    return tok


def _write_tokenizer(out: Path) -> None:
    tok = build_smolvlm_tokenizer()
    write_bpe_files(tok, out, vocab_below=BPE_VOCAB, vocab_indent=2)
    write_json(out / "added_tokens.json", ADDED)
    decoder = added_tokens_decoder(
        [*((i, t, True) for i, t in enumerate(LEADING)), *((i, t, True) for t, i in ADDED.items())]
    )
    extra = ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]
    write_json(
        out / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "added_tokens_decoder": decoder,
            "additional_special_tokens": extra,
            "bos_token": "<|im_start|>",
            "chat_template": SMOLVLM_CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<end_of_utterance>",
            "extra_special_tokens": {},
            "legacy": False,
            "model_max_length": 8192,
            "pad_token": "<|im_end|>",
            "processor_class": "Idefics3Processor",
            "tokenizer_class": "GPT2Tokenizer",
            "truncation_side": "left",
            "unk_token": "<|endoftext|>",
            "vocab_size": BPE_VOCAB,
        },
    )
    write_json(
        out / "special_tokens_map.json",
        {
            "additional_special_tokens": extra,
            "bos_token": "<|im_start|>",
            "eos_token": "<end_of_utterance>",
            "pad_token": "<|im_end|>",
            "unk_token": "<|endoftext|>",
        },
    )
    write_json(out / "chat_template.json", {"chat_template": SMOLVLM_CHAT_TEMPLATE})


def write_tiny_smolvlm(out: Path) -> dict:
    """Write a ~6.5M-parameter (almost all embeddings) random Idefics3 with SmolVLM-256M's files to `out`."""
    torch.manual_seed(7)
    model = Idefics3ForConditionalGeneration(Idefics3Config.from_dict(json.loads(json.dumps(CONFIG))))
    with torch.no_grad():
        # Filler ids never come out of an encoding; zero lm_head rows (a zero logit, far below the best random
        # one) keep them out of greedy captions too, so captions are the learned tokens' text.
        model.lm_head.weight[LEARNED_VOCAB:BPE_VOCAB] = 0
        model.lm_head.weight[ADDED["<image>"] + 1 : EOU] = 0
    model = model.to(torch.bfloat16)
    save_shards(model.state_dict(), out, shards=1)
    write_json(out / "config.json", CONFIG)
    write_json(out / "generation_config.json", GENERATION_CONFIG)
    write_json(out / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    write_json(out / "processor_config.json", {"image_seq_len": 64, "processor_class": "Idefics3Processor"})
    _write_tokenizer(out)
    return {"parameters": sum(p.numel() for p in model.parameters())}
