"""ByteTokenizer: UTF-8 bytes as ids, left padding, save/load through AutoTokenizer, batched pipelines."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from pathlib import Path  # noqa: E402

from transformers import AutoTokenizer, pipeline  # noqa: E402

import parrnn.hf  # noqa: E402
from tests.hf._models import tiny_model  # noqa: E402


def test_bytes_round_trip_and_left_padding(tmp_path: Path) -> None:
    tokenizer = parrnn.hf.ByteTokenizer()
    assert tokenizer("hé")["input_ids"] == [104, 195, 169]
    assert tokenizer.decode([104, 195, 169]) == "hé"
    assert tokenizer.decode([104, 195]) == "h\ufffd"  # cut inside a character
    batch = tokenizer(["abc", "x"], padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == [[97, 98, 99], [0, 0, 120]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, parrnn.hf.ByteTokenizer) and loaded.padding_side == "left"
    with pytest.raises(ValueError, match=r"bytes in \[0, 256\)"):
        tokenizer.convert_ids_to_tokens([300])


def test_batched_pipeline_equals_one_prompt_at_a_time() -> None:
    generator = pipeline("text-generation", model=tiny_model("sru", vocab_size=256),
                         tokenizer=parrnn.hf.ByteTokenizer())
    prompts = ["def f(x):", "import"]
    batched = generator(prompts, max_new_tokens=6, do_sample=False, batch_size=2)
    alone = [generator(p, max_new_tokens=6, do_sample=False) for p in prompts]
    assert [b[0]["generated_text"] for b in batched] == [a[0]["generated_text"] for a in alone]
    assert all(b[0]["generated_text"].startswith(p) for b, p in zip(batched, prompts, strict=True))
