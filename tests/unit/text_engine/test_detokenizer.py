"""The detokenizer against a byte-level fake: one token per UTF-8 byte, the hardest case."""

from services.common.detokenizer import IncrementalDetokenizer


class ByteTokenizer:
    """Token id = byte value; decoding invalid UTF-8 yields U+FFFD like HF byte-level tokenizers."""

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def stream(text, prompt="p"):
    tok = ByteTokenizer()
    detok = IncrementalDetokenizer(tok, tok.encode(prompt))
    return [detok.push([i]) for i in tok.encode(text)]


def test_multibyte_characters_are_never_split():
    deltas = stream("héllo 世界 🙂!")
    assert "".join(deltas) == "héllo 世界 🙂!"
    assert all("\ufffd" not in d for d in deltas)
    # The 4-byte emoji arrives as one delta after three empty ones.
    emoji_at = deltas.index("🙂")
    assert deltas[emoji_at - 3 : emoji_at] == ["", "", ""]


def test_long_output_round_trips():
    text = "The quick brown fox. " * 50
    assert "".join(stream(text)) == text


def test_text_does_not_depend_on_how_tokens_are_grouped_and_flush_releases_the_tail():
    tok = ByteTokenizer()
    # Invalid UTF-8 (as random weights produce), then valid text, then an unfinished 3-byte character.
    ids = [0xE4, 0xB8, 0x41, 0xC3, 0x42, *b"ok", 0xE4, 0xB8]
    one_by_one = IncrementalDetokenizer(tok)
    text_a = "".join(one_by_one.push([i]) for i in ids) + one_by_one.flush()
    assert text_a == tok.decode(ids)
    assert text_a.endswith("ok\ufffd")
