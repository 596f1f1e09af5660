"""The Qwen3 stand-in's tokenizer: Qwen's byte-level BPE pipeline, with every special token at its real id.

What Qwen/Qwen3-0.6B ships (its tokenizer.json / tokenizer_config.json, as vendored verbatim by public
repos that test against it; the same files as every Qwen2/2.5/3 text model):
- a byte-level BPE of 151,643 tokens (ids 0..151642) behind an NFC normalizer and a pre-tokenizer that
  splits with Qwen2's regex (single digits, ``(?i:'s|'t|...)`` contractions, punctuation runs with their
  newlines) and then maps bytes with `ByteLevel(add_prefix_space=False, use_regex=False)`;
- 26 added tokens from id 151643: `<|endoftext|>` (151643, bos and pad), `<|im_start|>` (151644),
  `<|im_end|>` (151645, eos), the object/box/quad/vision tokens (151646..151656), then the tool and FIM
  tokens `<tool_call>` 151657, `</tool_call>` 151658, `<|fim_prefix|>`..`<|file_sep|>` (151659..151664),
  `<tool_response>` 151665, `</tool_response>` 151666, `<think>` 151667, `</think>` 151668. Only the first
  14 are *special*: the tool, FIM and think tokens are added tokens with `special: false`, so
  `skip_special_tokens` keeps them in decoded text (a reasoning or tool-call parser sees them);
- `len(tokenizer)` 151,669; the model's 151,936 embedding rows leave 267 ids with no token at all.

What differs here: the real merges cannot be had offline, so the first `LEARNED_VOCAB` ids are a BPE
trained on the built-in corpus (corpus.py) with the same pipeline, and the ids up to 151642 are filler
tokens (" bako", " lumiro", ...): pseudo-words in the byte-level alphabet that no merge produces, so
they never appear in an encoding but decode to visible text when a random model picks them. The vocabulary
is therefore full size and every id the real tokenizer has exists here too, with the real added tokens.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from .corpus import corpus
from .hub_files import added_tokens_decoder, write_bpe_files, write_json

BPE_VOCAB = 151643  # ids 0..151642: the real tokenizer's `vocab_size`
LEARNED_VOCAB = 2048  # of those, learned from the corpus; the rest are filler
CONTEXT = 131072  # tokenizer_config.json's model_max_length

# Qwen2's pre-tokenizer split (the Split step of its tokenizer.json).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The added tokens in id order from BPE_VOCAB, with their `special` flags.
ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]
TOKEN_IDS = {token: BPE_VOCAB + i for i, (token, _) in enumerate(ADDED_TOKENS)}
NUM_TOKENS = BPE_VOCAB + len(ADDED_TOKENS)  # 151669, len(tokenizer) of the real one


def _pipeline(tok: Tokenizer) -> Tokenizer:
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tok


def _filler(taken: set[str], count: int) -> list[str]:
    """`count` pseudo-words (" ba", ... " bako", ...) not among `taken`, in a fixed order."""
    syllables = [c + v for c in "bdfghjklmnprstvz" for v in "aeiou"]  # letters: byte-level maps them to themselves
    words = (
        "Ġ" + "".join(parts)  # Ġ is the byte-level form of the leading space
        for n in itertools.count(2)
        for parts in itertools.product(syllables, repeat=n)
    )
    return list(itertools.islice((w for w in words if w not in taken), count))


def build_qwen3_tokenizer(added: int = len(ADDED_TOKENS)) -> Tokenizer:
    """The full-size tokenizer: learned BPE, filler up to id 151642, then the first `added` of the 26 real added
    tokens at their ids (Qwen3 has all 26; the Qwen-VL repos, released before the tool and think tokens, fewer)."""
    learner = _pipeline(Tokenizer(models.BPE(unk_token=None)))
    trainer = trainers.BpeTrainer(
        vocab_size=LEARNED_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    learner.train_from_iterator(corpus(), trainer)
    if learner.get_vocab_size() != LEARNED_VOCAB:
        # The corpus is sized so this cannot happen; a smaller vocabulary would silently change every id.
        raise RuntimeError(f"the corpus yields only {learner.get_vocab_size()} tokens, not {LEARNED_VOCAB}")
    learned = json.loads(learner.to_str())["model"]
    vocab = dict(learned["vocab"])
    for i, word in enumerate(_filler(set(vocab), BPE_VOCAB - len(vocab)), start=len(vocab)):
        vocab[word] = i
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = _pipeline(
        Tokenizer(
            models.BPE(
                vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False, ignore_merges=False
            )
        )
    )
    for token, special in ADDED_TOKENS[:added]:  # one at a time, so each takes the next id
        item = AddedToken(token, special=special, normalized=False)
        if special:
            tok.add_special_tokens([item])
        else:
            tok.add_tokens([item])
    wrong = {t: tok.token_to_id(t) for t, i in list(TOKEN_IDS.items())[:added] if tok.token_to_id(t) != i}
    if wrong:
        raise RuntimeError(f"added tokens off their real ids: {wrong}")
    return tok


def added_tokens(count: int = len(ADDED_TOKENS)) -> list[tuple[int, str, bool]]:
    """The first `count` added tokens as (id, content, special)."""
    return [(BPE_VOCAB + i, token, special) for i, (token, special) in enumerate(ADDED_TOKENS[:count])]


def tokenizer_config(added: list[tuple[int, str, bool]], chat_template: str, model_max_length: int) -> dict:
    """tokenizer_config.json in the Qwen repos' layout (transformers 4.51's Qwen2Tokenizer), the text models'
    and the VL ones' alike; `added` are the (id, content, special) tokens after the BPE, `<|endoftext|>` first."""
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder(added),
        "additional_special_tokens": [t for _, t, special in added[1:] if special],  # <|endoftext|> is pad
        "bos_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def write_qwen2_tokenizer(
    tok: Tokenizer, out: Path, added: list[tuple[int, str, bool]], chat_template: str, model_max_length: int
) -> None:
    """tokenizer.json, vocab.json, merges.txt and tokenizer_config.json, as the Qwen repos have them."""
    write_bpe_files(tok, out)
    write_json(out / "tokenizer_config.json", tokenizer_config(added, chat_template, model_max_length))


def write_qwen3_tokenizer(out: Path, chat_template: str) -> None:
    """tokenizer.json, vocab.json, merges.txt and tokenizer_config.json, as the hub repo has them."""
    write_qwen2_tokenizer(build_qwen3_tokenizer(), out, added_tokens(), chat_template, CONTEXT)
