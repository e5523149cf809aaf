"""The recurrent state is the cache: prefix + cached steps equal the full forward for every cell; generate's
cached and uncached decodes agree (greedy, sampling, beam search); the state does not grow with the context;
padding in the prompt never touches the state."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import subprocess  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM  # noqa: E402

import parrnn.hf  # noqa: E402
from parrnn.hf.mixers import Mixer  # noqa: E402
from tests.hf._models import CELLS, tiny_model  # noqa: E402


def test_import_parrnn_does_not_import_transformers() -> None:
    code = "import sys, parrnn; assert 'transformers' not in sys.modules, 'transformers imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("cell", CELLS)
def test_auto_classes_build_every_cell(cell: str) -> None:
    config = AutoConfig.for_model("parrnn", cell=cell, vocab_size=11, hidden_size=8, num_layers=2)
    assert isinstance(config, parrnn.hf.ParrnnConfig) and config.num_hidden_layers == 2
    model = AutoModelForCausalLM.from_config(config)
    assert isinstance(model, parrnn.hf.ParrnnForCausalLM)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied
    assert isinstance(AutoModel.from_config(config), parrnn.hf.ParrnnModel)
    logits = model(torch.randint(0, 11, (2, 5))).logits
    assert logits.shape == (2, 5, 11) and torch.isfinite(logits).all()


def test_config_errors_are_named() -> None:
    with pytest.raises(ValueError, match="cell must be one of"):
        parrnn.hf.ParrnnConfig(cell="lstm")
    with pytest.raises(ValueError, match=r"cell_options \['pooling'\] are not options of MinGRU"):
        parrnn.hf.ParrnnForCausalLM(parrnn.hf.ParrnnConfig(cell="mingru", cell_options={"pooling": "fo"}))
    with pytest.raises(ValueError, match="must not set"):
        parrnn.hf.ParrnnForCausalLM(parrnn.hf.ParrnnConfig(cell="sru", cell_options={"bidirectional": True}))


class _Calls:
    """Counts the mixers' parallel forwards and steps."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.forward = self.step = self.inside = 0
        for cls in (Mixer, *Mixer.__subclasses__()):
            if "forward" in cls.__dict__:
                monkeypatch.setattr(cls, "forward", self._counted(cls.forward, "forward"))
            if "step" in cls.__dict__:
                monkeypatch.setattr(cls, "step", self._counted(cls.step, "step"))

    def _counted(self, method, name: str):
        def counted(mixer, *args, **kwargs):
            if not self.inside:  # a subclass calling super() counts once
                setattr(self, name, getattr(self, name) + 1)
            self.inside += 1
            try:
                return method(mixer, *args, **kwargs)
            finally:
                self.inside -= 1
        return counted


@pytest.mark.parametrize("cell", CELLS)
def test_prefix_and_cached_steps_equal_the_full_forward(cell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model(cell, dtype=torch.float64)
    ids = torch.randint(0, 29, (3, 12))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        calls = _Calls(monkeypatch)
        out = model(ids[:, :9], use_cache=True)
        assert (calls.forward, calls.step) == (2, 0)  # the prefill is the parallel forward of each block
        cache = out.past_key_values
        assert cache.get_seq_length() == 9
        torch.testing.assert_close(out.logits, full[:, :9])
        for t in range(9, 12):
            out = model(ids[:, t:t + 1], past_key_values=cache, use_cache=True)
            torch.testing.assert_close(out.logits[:, -1], full[:, t], rtol=1e-9, atol=1e-9)
        assert (calls.forward, calls.step) == (2, 6)  # then one step() per block and token
        # a multi-token chunk continuing from the cache also equals the full forward
        out = model(ids[:, :5], use_cache=True)
        out = model(ids[:, 5:], past_key_values=out.past_key_values, use_cache=True)
        torch.testing.assert_close(out.logits, full[:, 5:], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cell", CELLS)
def test_generate_cached_equals_uncached(cell: str) -> None:
    model = tiny_model(cell, dtype=torch.float64)
    ids = torch.randint(0, 29, (2, 6))
    options = {"max_new_tokens": 6, "pad_token_id": 0}
    greedy = model.generate(ids, do_sample=False, **options)
    assert torch.equal(greedy, model.generate(ids, do_sample=False, use_cache=False, **options))
    assert greedy.shape == (2, 12)
    torch.manual_seed(3)
    sampled = model.generate(ids, do_sample=True, top_k=0, **options)
    torch.manual_seed(3)
    assert torch.equal(sampled, model.generate(ids, do_sample=True, top_k=0, use_cache=False, **options))
    beams = model.generate(ids, do_sample=False, num_beams=3, num_return_sequences=2, **options)
    assert beams.shape == (4, 12)
    assert torch.equal(beams, model.generate(ids, do_sample=False, num_beams=3, num_return_sequences=2,
                                             use_cache=False, **options))


def test_beam_search_reorders_the_state() -> None:
    """Without reordering, beams would continue from other beams' states: their scores would differ from a
    re-scoring of the returned sequences by the full forward."""
    model = tiny_model("mingru", dtype=torch.float64)
    ids = torch.randint(0, 29, (1, 5))
    out = model.generate(ids, do_sample=False, num_beams=4, num_return_sequences=4, max_new_tokens=6,
                         output_scores=True, return_dict_in_generate=True, length_penalty=0.0, pad_token_id=0)
    with torch.no_grad():
        logp = model(out.sequences, use_cache=False).logits.log_softmax(-1)
    new = out.sequences[:, 5:]
    rescored = logp[:, 4:-1].gather(-1, new.unsqueeze(-1)).squeeze(-1).sum(-1)
    torch.testing.assert_close(out.sequences_scores, rescored.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_state_memory_does_not_grow_with_the_context(cell: str) -> None:
    model = tiny_model(cell)
    with torch.no_grad():
        short = model(torch.randint(0, 29, (2, 8)), use_cache=True).past_key_values.nbytes()
        cache = model(torch.randint(0, 29, (2, 200)), use_cache=True).past_key_values
        long = cache.nbytes()
        model(torch.randint(0, 29, (2, 1)), past_key_values=cache, use_cache=True)  # updates the cache in place
        stepped = cache.nbytes()
    if cell != "srupp":
        assert short == long == stepped > 0
        if cell != "rglru":  # (RG-LRU also keeps its convolution's last inputs)
            assert short == model.config.num_layers * 2 * 16 * 4 * (2 if cell == "qrnn" else 1)  # N=2, H=16, fp32
    else:  # SRU++ attention caches a key and a value of proj_size (8) per token, layer and row
        per_token = model.config.num_layers * 2 * 2 * 8 * 4
        assert long - short == 192 * per_token
        assert stepped - long == per_token


def test_srupp_without_attention_has_a_constant_state() -> None:
    model = tiny_model("srupp", cell_options={"proj_size": 8, "attention_every_n_layers": 3})
    with torch.no_grad():
        short = model(torch.randint(0, 29, (2, 8)), use_cache=True).past_key_values.nbytes()
        long = model(torch.randint(0, 29, (2, 100)), use_cache=True).past_key_values.nbytes()
    assert short == long


@pytest.mark.parametrize("cell", CELLS)
def test_left_padding_decodes_as_the_prompt_alone(cell: str) -> None:
    model = tiny_model(cell, dtype=torch.float64)
    long, short = torch.randint(1, 29, (1, 9)), torch.randint(1, 29, (1, 4))
    batch = torch.cat([long, torch.cat([torch.zeros(1, 5, dtype=torch.long), short], 1)])
    mask = torch.cat([torch.ones(1, 9, dtype=torch.long), torch.tensor([[0] * 5 + [1] * 4])])
    options = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    both = model.generate(batch, attention_mask=mask, **options)
    assert torch.equal(both[0, 9:], model.generate(long, **options)[0, 9:])
    assert torch.equal(both[1, 9:], model.generate(short, **options)[0, 4:])
    assert torch.equal(both, model.generate(batch, attention_mask=mask, use_cache=False, **options))
    # what the padded positions hold never matters
    noisy = batch.clone()
    noisy[1, :5] = torch.randint(1, 29, (5,))
    assert torch.equal(both[:, 9:], model.generate(noisy, attention_mask=mask, **options)[:, 9:])


def test_a_mask_with_holes_skips_those_tokens() -> None:
    model = tiny_model("sru", dtype=torch.float64)
    ids = torch.randint(1, 29, (1, 8))
    mask = torch.tensor([[1, 1, 0, 1, 0, 0, 1, 1]])
    with torch.no_grad():
        holes = model(ids, attention_mask=mask).logits
        alone = model(ids[:, mask[0].bool()]).logits
    torch.testing.assert_close(holes[0, mask[0].bool()], alone[0])
    assert (holes[0, ~mask[0].bool()] == 0).all()  # padded positions: hidden state 0, bias-free head
    with pytest.raises(ValueError, match="without any valid token"):
        model(ids, attention_mask=torch.zeros_like(ids))


def test_chunked_prefill_with_a_cache_given_to_generate() -> None:
    model = tiny_model("mingru", dtype=torch.float64)
    ids = torch.randint(1, 29, (2, 10))
    options = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0}
    expected = model.generate(ids, **options)
    cache = parrnn.hf.ParrnnCache(model.config.num_layers)
    chunked = model.generate(ids, past_key_values=cache, prefill_chunk_size=3, **options)
    assert torch.equal(chunked, expected)
    assert cache.get_seq_length() == 13  # the prompt and the three tokens fed back (the last is not)


def test_inputs_embeds_and_hidden_states() -> None:
    model = tiny_model("sru", dtype=torch.float64)
    ids = torch.randint(1, 29, (2, 7))
    with torch.no_grad():
        by_ids = model(ids, output_hidden_states=True)
        by_embeds = model(inputs_embeds=model.model.embed_tokens(ids))
    torch.testing.assert_close(by_embeds.logits, by_ids.logits)
    assert len(by_ids.hidden_states) == model.config.num_layers + 1
    assert all(h.shape == (2, 7, 16) for h in by_ids.hidden_states)
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        model(ids, inputs_embeds=model.model.embed_tokens(ids))
    with pytest.raises(TypeError, match="must be a ParrnnCache"):
        model(ids, past_key_values=object())


def test_hgrn_lower_bounds_rise_with_depth_across_blocks() -> None:
    """HGRN's lower bound: block k's decay floor is that of layer k of one multi-layer parrnn.HGRN."""
    model = tiny_model("hgrn", dtype=torch.float64, num_layers=3)
    with torch.no_grad():
        model.model.lower_bounds.normal_()
    stack = parrnn.HGRN(16, 16, num_layers=3).double()
    with torch.no_grad():
        stack.lower_bounds.copy_(model.model.lower_bounds)
    floors = model.model.floors()
    assert torch.equal(floors[0], torch.zeros(16, dtype=torch.float64))
    for ours, theirs in zip(floors[1:], stack.floors()[1:], strict=True):
        torch.testing.assert_close(ours, theirs)
    ids = torch.randint(0, 29, (2, 9))
    with torch.no_grad():  # the floors reach the recurrence, in the parallel forward and in step
        full = model(ids).logits
        cache = model(ids[:, :8], use_cache=True).past_key_values
        torch.testing.assert_close(model(ids[:, 8:], past_key_values=cache).logits[:, -1], full[:, -1])
        model.model.lower_bounds.zero_()
        assert not torch.allclose(model(ids).logits, full)
    flat = tiny_model("hgrn", cell_options={"lower_bound": False})
    assert flat.model.lower_bounds is None and flat.model.floors() == [None, None]


@pytest.mark.parametrize("cell", ["srupp", "mingru", "sru"])
def test_a_padded_chunk_continuing_a_cache_keeps_each_rows_state(cell: str) -> None:
    model = tiny_model(cell, dtype=torch.float64)
    ids = torch.randint(1, 29, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 8:] = 0  # row 1 ends its second chunk after 3 tokens
    nxt = torch.tensor([[3], [4]])
    with torch.no_grad():
        cache = model(ids[:, :5], use_cache=True).past_key_values
        cache = model(ids[:, 5:], attention_mask=mask, past_key_values=cache, use_cache=True).past_key_values
        step = model(nxt, past_key_values=cache).logits[:, -1]
        alone = [model(torch.cat([ids[0:1], nxt[0:1]], 1)).logits[0, -1],
                 model(torch.cat([ids[1:2, :8], nxt[1:2]], 1)).logits[0, -1]]
    torch.testing.assert_close(step, torch.stack(alone))
