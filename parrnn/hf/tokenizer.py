"""`ByteTokenizer`: UTF-8 bytes as token ids 0..255, a transformers tokenizer that needs no vocabulary file."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizer


class ByteTokenizer(PreTrainedTokenizer):
    """Token id = byte value: ``"hé"`` -> ``[104, 195, 169]`` (the char-LM task's encoding, vocabulary 256).

    No special tokens are added to encoded text. Padding uses byte 0 (``pad_token="\\x00"``; the attention mask
    marks it, so its value never matters); there is no end-of-sequence token unless one is given. Decoding joins
    the bytes and replaces invalid UTF-8 (a generation cut inside a multi-byte character) with U+FFFD.
    ``save_pretrained`` writes only ``tokenizer_config.json``; `parrnn.hf` registers the class with
    ``AutoTokenizer`` for ``model_type="parrnn"``.
    """

    model_input_names = ["input_ids", "attention_mask"]  # noqa: RUF012 (transformers' class attribute)

    def __init__(self, pad_token: str = "\x00", padding_side: str = "left", **kwargs: Any) -> None:
        super().__init__(pad_token=pad_token, padding_side=padding_side, **kwargs)

    @property
    def vocab_size(self) -> int:
        return 256

    def get_vocab(self) -> dict[str, int]:
        return {chr(i): i for i in range(256)}

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return [chr(b) for b in text.encode("utf-8")]

    def _convert_token_to_id(self, token: str) -> int | None:
        return ord(token) if len(token) == 1 and ord(token) < 256 else None

    def _convert_id_to_token(self, index: int) -> str:
        if not 0 <= index < 256:
            raise ValueError(f"token ids of ByteTokenizer are bytes in [0, 256), got {index}")
        return chr(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return bytes(ord(t) if len(t) == 1 and ord(t) < 256 else 63 for t in tokens).decode("utf-8", "replace")

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()
