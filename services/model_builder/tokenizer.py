"""Byte-level BPE tokenizers trained here, offline, on the built-in corpus.

Byte-level, like the real models' tokenizers: every Unicode string (emoji, CJK, accents, control
characters) round-trips through encode/decode, and there is never an unknown token. Training is
deterministic, so every build produces the same vocabulary and the same token ids.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from .corpus import corpus


def train_tokenizer(
    vocab_size: int,
    *,
    leading_specials: Sequence[str] = (),
    trailing_specials: Sequence[str] = (),
    bos: str | None,
    eos: str,
    unk: str | None,
    pad: str,
    model_max_length: int,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of `vocab_size` tokens (leading specials included) and wrap it for transformers.

    `leading_specials` get ids 0, 1, 2, ... in order (Mistral's tekken layout); `trailing_specials` are
    appended after the learned vocabulary (Qwen's layout). bos/eos/unk/pad must be among them.
    """
    specials = [*leading_specials, *trailing_specials]
    missing = {t for t in (bos, eos, unk, pad) if t is not None} - set(specials)
    if missing:
        raise ValueError(f"named special tokens not in the special token lists: {sorted(missing)}")
    tok = Tokenizer(models.BPE(unk_token=None))  # byte-level: every byte has a token, nothing is unknown
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(leading_specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    if tok.get_vocab_size() != vocab_size:
        # The corpus is sized so this cannot happen; a smaller vocabulary would silently change every id.
        raise RuntimeError(f"the corpus yields only {tok.get_vocab_size()} tokens, not {vocab_size}")
    # Added to the raw tokenizer first so they get consecutive ids in the given order.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in trailing_specials])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        pad_token=pad,
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
    )
    named = {bos, eos, unk, pad}
    # Registered with the wrapper too, so they are saved as special tokens and skipped by `skip_special_tokens`.
    wrapped.add_special_tokens(
        {"extra_special_tokens": [t for t in specials if t not in named]}, replace_extra_special_tokens=True
    )
    return wrapped
