"""Load a checkpoint's tokenizer with one backend, chosen on purpose: transformers' `TokenizersBackend`.

transformers 5 picks a tokenizer class by what happens to be installed: for Mistral model types with a
`tekken.json`, `AutoTokenizer` returns `MistralCommonBackend` as soon as `mistral-common` is importable
(installing vLLM, for instance, pulls it in). That backend encodes chats with mistral-common's own request
encoder: it ignores the checkpoint's `chat_template.jinja` (so the Reasoning model's default system prompt
from `SYSTEM_PROMPT.txt` is never injected), ignores `add_generation_prompt`, and has no
`convert_ids_to_tokens`-style API that our incremental detokenizer uses. The same checkpoint would then
give different prompt token ids on two machines.

So both engines load every tokenizer with `mistral_format=False`: `TokenizersBackend`, which converts
`tekken.json` to a `tokenizers` BPE (transformers' `MistralConverter`), honours `chat_template.jinja` and
`add_generation_prompt`, whether or not mistral-common is installed (also when a tokenizer_config.json
names `MistralCommonBackend`, which AutoTokenizer would otherwise obey). A tekken.json with nothing that
names the bos/eos/pad/unk tokens (the stand-ins ship no tokenizer_config.json) gives a converted tokenizer
with none of them: the template's `{{ bos_token }}` would render empty and `<s>` would silently go
missing. So the loader names the missing ones as tekken defines them (`<s>` 1, `</s>` 2, `<pad>` 11,
`<unk>` 0), as transformers' own `convert_tekken_tokenizer` does.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, TokenizersBackend
from transformers.utils import cached_file

from .hub_access import cached_snapshot

TEKKEN_FILE = "tekken.json"
# The special tokens of every tekken vocabulary, by role (mistral-common's SpecialTokens).
TEKKEN_ROLE_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def _has_file(source: str, filename: str, revision: str | None) -> bool:
    return (
        cached_file(
            source,
            filename,
            revision=revision,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        is not None
    )


def _offline_snapshot(source: str, revision: str | None) -> str:
    """A hub id read offline, as its cached snapshot directory; anything else as it is.

    Offline, transformers cannot list a hub repo's files, and the listing is how it finds a `tekken.json` to
    convert when the repo has no tokenizer.json: from a directory it lists the files itself."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE or Path(source).is_dir():
        return source
    snapshot = cached_snapshot(source, revision)
    return str(snapshot) if snapshot is not None else source  # not cached: from_pretrained says so in its own words


def load_tokenizer(source: str, *, revision: str | None = None, trust_remote_code: bool = False):
    """The checkpoint's tokenizer as a `TokenizersBackend` (never `MistralCommonBackend`, see the module doc)."""
    source = _offline_snapshot(source, revision)
    common = {"revision": revision, "trust_remote_code": trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(source, mistral_format=False, **common)
    if type(tokenizer).__name__ == "MistralCommonBackend":
        # A tokenizer_config.json that names the class outranks `mistral_format` in AutoTokenizer.
        tokenizer = TokenizersBackend.from_pretrained(source, **common)
    missing = {role: token for role, token in TEKKEN_ROLE_TOKENS.items() if getattr(tokenizer, role) is None}
    if missing and _has_file(source, TEKKEN_FILE, revision):
        # The tokens exist in every tekken vocabulary; only their roles were never named.
        tokenizer.add_special_tokens(missing)
    return tokenizer
