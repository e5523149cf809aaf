"""SRU++ (parrnn/srupp.py): equivalence with `sru` 3.0.0.dev6, padding, segment memory, incremental decoding,
torch.compile / torch.export, bad input."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import parrnn
from parrnn import SRUpp, SRUppCell
from parrnn.srupp import SRUppState, causal_mask

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["reference", "sequential"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    ok, why = parrnn.available_backends()[f"sru {request.param}"]
    if not ok:
        pytest.skip(f"backend {request.param} unavailable: {why}")
    return request.param


# ---- equivalence with sru 3.0.0.dev6 (run in a subprocess: it cannot share a process with sru 2.6) -----------

def _sru3_path() -> Path | None:
    """Where `sru` 3.0.0.dev6 was installed with `pip install --target` (scripts/bootstrap.sh: .venv/sru3)."""
    candidates = [os.environ.get("PARRNN_SRU3_PATH"), Path(sys.prefix) / "sru3", ROOT / ".venv" / "sru3"]
    for c in candidates:
        if c and (Path(c) / "sru" / "modules.py").is_file():
            return Path(c)
    return None


def _config(input_size=8, hidden_size=8, proj_size=4, **kw) -> dict:
    run = {k: kw.pop(k) for k in ("causal", "memory", "memory_mask_pad", "mask_pad", "c0") if k in kw}
    return {"input_size": input_size, "hidden_size": hidden_size, "proj_size": proj_size, "options": kw, **run}


SRU3_CONFIGS = {
    "default": _config(),
    "one-layer": _config(num_layers=1),
    "three-layers-heads2": _config(num_layers=3, num_heads=2),
    "input!=hidden": _config(input_size=5, num_heads=2),
    "bidirectional": _config(hidden_size=4, bidirectional=True),
    "bidirectional-input!=hidden-mask_pad": _config(input_size=6, hidden_size=5, bidirectional=True, mask_pad=True),
    "layer_norm": _config(layer_norm=True),
    "layer_norm-after": _config(layer_norm=True, normalize_after=True, input_size=6),
    "no-attn-layer-norm": _config(attn_layer_norm=False),
    "every-2": _config(num_layers=4, attention_every_n_layers=2),
    "last-1": _config(num_layers=3, attention_last_n_layers=1, input_size=5),
    "rescale": _config(rescale=True, highway_bias=-1.0),
    "causal": _config(num_heads=2, causal=True),
    "causal-memory": _config(num_layers=3, num_heads=2, causal=True, memory=4),
    "causal-memory-mask-layer_norm": _config(num_heads=2, causal=True, memory=4, memory_mask_pad=True,
                                             mask_pad=True, layer_norm=True, c0=True),
    "memory-bidirectional": _config(hidden_size=4, bidirectional=True, memory=3, input_size=6),
    "mask_pad-c0": _config(num_layers=3, mask_pad=True, c0=True),
}


@pytest.fixture(scope="module")
def sru3_results(request) -> dict:
    path = _sru3_path()
    if path is None:
        pytest.skip("sru 3.0.0.dev6 is not installed (scripts/bootstrap.sh puts it in .venv/sru3; "
                    "or set PARRNN_SRU3_PATH)")
    configs = [dict(c, backend=b) for c in SRU3_CONFIGS.values() for b in BACKENDS]
    # its own JIT-extension folder: sru 2.6 and 3.0 build same-named C++ extensions from different paths, and
    # would rebuild each other's (and race with other test processes) in the shared default folder
    extensions = Path(tempfile.gettempdir()) / "parrnn-sru3-torch-extensions"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), str(ROOT)]), TORCH_EXTENSIONS_DIR=str(extensions))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "_sru3_compare.py")], input=json.dumps(configs),
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    keys = [(name, b) for name in SRU3_CONFIGS for b in BACKENDS]
    return dict(zip(keys, results, strict=True))


@pytest.mark.parametrize("name", list(SRU3_CONFIGS))
def test_from_sru_matches_sru3(sru3_results: dict, name: str, backend: str) -> None:
    result = sru3_results[(name, backend)]
    assert "error" not in result, result["error"]
    assert result["scale"] > 0.1  # the comparison is not vacuous
    for key in ("output", "c_n", "memory"):
        assert result[key] <= 1e-5, (key, result)
    assert result["grad_input"] <= 1e-4, result


# initialisation: dropout > 0 everywhere (it scales the last projection by sqrt(1 - dropout)), both transforms
SRU3_INIT_CONFIGS = {
    "dropout-heads": _config(num_layers=3, num_heads=2, dropout=0.3),
    "every-2-layer_norm-input!=hidden": _config(input_size=5, num_layers=4, attention_every_n_layers=2,
                                                dropout=0.2, layer_norm=True),
    "bidirectional-rescale-last-1": _config(hidden_size=4, num_layers=2, bidirectional=True, rescale=True,
                                            highway_bias=-1.0, attention_last_n_layers=1, dropout=0.1),
}


@pytest.fixture(scope="module")
def sru3_init_results() -> dict:
    path = _sru3_path()
    if path is None:
        pytest.skip("sru 3.0.0.dev6 is not installed (scripts/bootstrap.sh puts it in .venv/sru3; "
                    "or set PARRNN_SRU3_PATH)")
    configs = [dict(c, mode="init", seed=seed) for c in SRU3_INIT_CONFIGS.values() for seed in (0, 1)]
    extensions = Path(tempfile.gettempdir()) / "parrnn-sru3-torch-extensions"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), str(ROOT)]), TORCH_EXTENSIONS_DIR=str(extensions))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "_sru3_compare.py")], input=json.dumps(configs),
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    keys = [(name, seed) for name in SRU3_INIT_CONFIGS for seed in (0, 1)]
    return dict(zip(keys, results, strict=True))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", list(SRU3_INIT_CONFIGS))
def test_initialisation_equals_sru3_with_the_same_seed(sru3_init_results: dict, name: str, seed: int) -> None:
    """The same seed gives sru 3.0.0.dev6's initial weights (the last projection's rows in parrnn's order: the
    same values), and sru's recurrent-dropout rule: every layer but the last."""
    result = sru3_init_results[(name, seed)]
    assert "error" not in result, result["error"]
    assert result["scale"] > 0.1
    assert result["exact"] == 0.0, result
    assert result["last_projection_sorted"] == 0.0, result
    assert result["ours_recurrent_dropout"] == result["recurrent_dropout"]
    assert result["recurrent_dropout"][-1] == 0.0 and result["recurrent_dropout"][0] > 0


def test_last_layer_runs_without_recurrent_dropout(monkeypatch: pytest.MonkeyPatch) -> None:
    """In training, every layer's recurrence but the last gets a dropout mask (sru's rule)."""
    from parrnn.ops.sru import dispatch

    masks = []
    original = dispatch.sru_recurrence

    def recording(u, x, weight_c, bias, c0, mask_pad, drop_mask, *args, **kwargs):
        masks.append(drop_mask)
        return original(u, x, weight_c, bias, c0, mask_pad, drop_mask, *args, **kwargs)

    monkeypatch.setattr(dispatch, "sru_recurrence", recording)
    model = SRUpp(6, 6, 4, num_layers=3, dropout=0.4).train()
    model(torch.randn(5, 2, 6))
    assert [m is not None for m in masks] == [True, True, False]
    masks.clear()
    model.eval()(torch.randn(5, 2, 6))
    assert masks == [None, None, None]


@pytest.mark.parametrize("backend_name", ["reference", "sequential"])
def test_eval_mode_applies_no_attention_dropout(backend_name: str) -> None:
    """attn_dropout > 0 with a non-zero alpha (the default alpha = 0 hides attention): eval is deterministic and
    equals the model without attention dropout; training does drop (so the check is not vacuous)."""
    if not parrnn.available_backends()[f"sru {backend_name}"][0]:
        pytest.skip(f"backend {backend_name} unavailable")
    torch.manual_seed(0)
    model = SRUpp(6, 6, 4, num_layers=2, num_heads=2, attn_dropout=0.5, backend=backend_name)
    with torch.no_grad():
        for layer in model.layers:
            layer.transform.alpha.fill_(1.0)
    x = torch.randn(7, 3, 6)
    without = copy.deepcopy(model)
    for layer in without.layers:
        layer.transform.attn_dropout = 0.0
    with torch.no_grad():
        model.eval()
        first, second = model(x, attn_mask="causal")[0], model(x, attn_mask="causal")[0]
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        torch.testing.assert_close(first, without.eval()(x, attn_mask="causal")[0], rtol=0, atol=0)
        model.train()
        assert not torch.allclose(model(x, attn_mask="causal")[0], first)


def test_sru3_subprocess_does_not_shadow_sru26() -> None:
    sru = pytest.importorskip("sru")
    assert sru.__version__.startswith("2.6"), sru.__version__


# ---- semantics ------------------------------------------------------------------------------------------------

def _model(backend="reference", **kw) -> SRUpp:
    torch.manual_seed(kw.pop("seed", 0))
    kw.setdefault("num_heads", 2)
    model = SRUpp(kw.pop("input_size", 6), kw.pop("hidden_size", 6), kw.pop("proj_size", 4),
                  kw.pop("num_layers", 2), backend=backend, **kw).double()
    with torch.no_grad():
        for layer in model.layers:
            if layer.has_attention:
                layer.transform.alpha.fill_(0.7)  # alpha = 0 at init would hide the attention
    return model


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_a_sequence(causal: bool, bidirectional: bool, backend: str) -> None:
    model = _model(backend, bidirectional=bidirectional, hidden_size=3 if bidirectional else 6, layer_norm=True)
    x = torch.randn(8, 3, 6, dtype=torch.float64)
    lengths = torch.tensor([8, 5, 2])
    mask = "causal" if causal else None
    out, c_n, _ = model(x, lengths=lengths, attn_mask=mask)
    noisy = x.clone()
    noisy[5:, 1] = 1e3
    noisy[2:, 2] = -7.0
    out2, c_n2, _ = model(noisy, lengths=lengths, attn_mask=mask)
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(c_n, c_n2)
    for n, length in enumerate(lengths.tolist()):
        alone, c_alone, _ = model(x[:length, n:n + 1], attn_mask=mask)
        torch.testing.assert_close(out[:length, n:n + 1], alone)
        torch.testing.assert_close(c_n[:, n:n + 1], c_alone)
        assert length == 8 or out[length:, n].abs().max() == 0


def test_mask_equals_lengths_and_batch_first() -> None:
    model = _model()
    x = torch.randn(6, 2, 6, dtype=torch.float64)
    lengths = torch.tensor([6, 3])
    mask = torch.arange(6).unsqueeze(1) >= lengths.unsqueeze(0)
    out_l, c_l, mem_l = model(x, lengths=lengths, attn_mask="causal")
    out_m, c_m, _ = model(x, mask=mask, attn_mask="causal")
    torch.testing.assert_close(out_l, out_m)
    torch.testing.assert_close(c_l, c_m)
    model.batch_first = True
    out_b, c_b, mem_b = model(x.transpose(0, 1), mask=mask.t(), attn_mask="causal")
    torch.testing.assert_close(out_b.transpose(0, 1), out_l)
    torch.testing.assert_close(c_b, c_l)
    for a, b in zip(mem_b, mem_l, strict=True):
        torch.testing.assert_close(a.transpose(0, 1), b)


def test_causal_string_equals_explicit_mask_and_sdpa_causal_path() -> None:
    model = _model(num_layers=3, attention_every_n_layers=1)
    x = torch.randn(9, 2, 6, dtype=torch.float64)
    out_s, c_s, _ = model(x, attn_mask="causal")
    out_t, c_t, _ = model(x, attn_mask=causal_mask(9, dtype=torch.float64))
    out_b, _, _ = model(x, attn_mask=causal_mask(9, dtype=torch.float64) == 0)  # bool: True = may attend
    torch.testing.assert_close(out_s, out_t)
    torch.testing.assert_close(c_s, c_t)
    torch.testing.assert_close(out_b, out_t)
    out_full, _, _ = model(x)
    assert (out_full - out_s).abs().max() > 1e-3  # the mask matters
    # causal: a later step never changes an earlier output
    x2 = x.clone()
    x2[6:] = 5.0
    torch.testing.assert_close(model(x2, attn_mask="causal")[0][:6], out_s[:6])


@pytest.mark.parametrize("layer_norm", [False, "after"])
def test_segments_with_memory_equal_one_causal_pass(layer_norm, backend: str) -> None:
    """Transformer-XL-style segments: memory_out and c_n of segment 1 carried into segment 2 equal the causal
    forward over both segments at once (keys of memory are the layers' inputs, as in the single pass)."""
    model = _model(backend, num_layers=3, attention_every_n_layers=2, layer_norm=bool(layer_norm),
                   normalize_after=layer_norm == "after")
    x = torch.randn(10, 2, 6, dtype=torch.float64)
    whole, c_whole, _ = model(x, attn_mask="causal")
    first, c1, memory = model(x[:4], attn_mask="causal")
    second, c2, _ = model(x[4:], c1, attn_mask="causal", memory=memory)
    torch.testing.assert_close(torch.cat([first, second]), whole)
    torch.testing.assert_close(c2, c_whole)


@pytest.mark.parametrize("options", [
    {}, {"layer_norm": True}, {"layer_norm": True, "normalize_after": True}, {"attention_every_n_layers": 2},
    {"attention_last_n_layers": 1, "input_size": 5}, {"num_heads": 1},
], ids=str)
@pytest.mark.parametrize("with_memory", [False, True])
def test_incremental_decoding_equals_causal_forward(options: dict, with_memory: bool, backend: str) -> None:
    model = _model(backend, num_layers=3, **options)
    batch, length, mem_len = 2, 7, 3
    x = torch.randn(length, batch, model.input_size, dtype=torch.float64)
    kwargs: dict = {}
    if with_memory:
        sizes = [layer.input_size for layer in model.layers]
        kwargs["memory"] = [torch.randn(mem_len, batch, s, dtype=torch.float64) for s in sizes]
        kwargs["memory_mask_pad"] = torch.tensor([[True, False], [False, False], [False, True]])
    c0 = torch.randn(3, batch, model.output_size, dtype=torch.float64)
    full, c_full, _ = model(x, c0, attn_mask="causal", **kwargs)
    state = model.init_state(batch, c0=c0, **kwargs)
    steps = []
    for t in range(length):
        out, state = model.step(x[t], state)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps), full)
    torch.testing.assert_close(state.c, c_full)
    attention_layers = [k for k in state.keys if k is not None]
    assert attention_layers and all(k.size(2) == length + (mem_len if with_memory else 0) for k in attention_layers)


def test_reference_and_cpu_backends_agree_with_gradients() -> None:
    if not parrnn.available_backends()["sru sequential"][0]:
        pytest.skip("cpu backend unavailable")
    ref = _model("reference", num_layers=2, layer_norm=True, dropout=0.0).float()
    fast = _model("sequential", num_layers=2, layer_norm=True, dropout=0.0).float()
    x = torch.randn(11, 3, 6, requires_grad=True)
    lengths = torch.tensor([11, 4, 8])
    outs = [m(x, lengths=lengths, attn_mask="causal") for m in (ref, fast)]
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-5)
    grads = [torch.autograd.grad(o.square().sum() + c.sum(), [x, *m.parameters()])
             for (o, c, _), m in zip(outs, (ref, fast), strict=True)]
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradcheck_float64(bidirectional: bool, backend: str) -> None:
    model = _model(backend, num_layers=2, hidden_size=2 if bidirectional else 4, bidirectional=bidirectional,
                   layer_norm=True, input_size=3, proj_size=4)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    memory = [torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True),
              torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)]

    def f(x, m0, m1):
        out, c_n, _ = model(x, lengths=torch.tensor([4, 3]), attn_mask="causal", memory=[m0, m1])
        return out, c_n
    assert torch.autograd.gradcheck(f, (x, *memory), fast_mode=True)
    params = [p for p in model.parameters()]
    assert torch.autograd.gradcheck(lambda *ps: torch.func.functional_call(
        model, dict(zip([n for n, _ in model.named_parameters()], ps, strict=True)), (x.detach(),),
        {"attn_mask": "causal"})[0], params, fast_mode=True)


def test_cell_contract_and_dropout() -> None:
    torch.manual_seed(5)
    cell = SRUppCell(6, 6, 4, num_heads=2, dropout=0.3, attn_dropout=0.2)
    x = torch.randn(5, 2, 6)
    out, c_n, memory_out = cell(x, attn_mask="causal")
    assert out.shape == (5, 2, 6) and c_n.shape == (2, 6) and memory_out is x
    cell.eval()
    torch.testing.assert_close(cell(x)[0], cell(x)[0])
    cell.train()
    assert not torch.equal(cell(x)[0], cell(x)[0])
    one = SRUpp(6, 6, 4, 1, num_heads=2)
    one.layers[0].load_state_dict(cell.state_dict())
    one.eval(), cell.eval()
    torch.testing.assert_close(one(x, attn_mask="causal")[0], cell(x, attn_mask="causal")[0])


def test_attention_placement() -> None:
    assert [l.has_attention for l in SRUpp(4, 4, 4, 4, attention_every_n_layers=2).layers] == [
        False, True, False, True]
    assert [l.has_attention for l in SRUpp(4, 4, 4, 3, attention_last_n_layers=1).layers] == [False, False, True]


# ---- ecosystem ------------------------------------------------------------------------------------------------

def test_torch_compile_fullgraph_matches_eager() -> None:
    if not parrnn.available_backends()["sru sequential"][0]:
        pytest.skip("cpu backend unavailable")
    torch.manual_seed(0)
    model = SRUpp(8, 8, 4, 2, num_heads=2, layer_norm=True, backend="sequential")
    x = torch.randn(6, 3, 8, requires_grad=True)
    lengths = torch.tensor([6, 4, 2])
    out, c_n, _ = model(x, lengths=lengths, attn_mask="causal")
    grads = torch.autograd.grad(out.square().sum() + c_n.sum(), [x, *model.parameters()])
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out_c, c_n_c, _ = compiled(x, lengths=lengths, attn_mask="causal")
    grads_c = torch.autograd.grad(out_c.square().sum() + c_n_c.sum(), [x, *model.parameters()])
    torch.testing.assert_close(out_c, out)
    torch.testing.assert_close(c_n_c, c_n)
    for got, expected in zip(grads_c, grads, strict=True):
        torch.testing.assert_close(got, expected)


def test_torch_export_with_memory() -> None:
    if not parrnn.available_backends()["sru sequential"][0]:
        pytest.skip("cpu backend unavailable")
    torch.manual_seed(1)
    model = SRUpp(6, 6, 4, 2, num_heads=2, backend="sequential").eval()

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x, m0, m1):
            out, c_n, _ = self.model(x, attn_mask="causal", memory=[m0, m1])
            return out, c_n

    args = (torch.randn(5, 2, 6), torch.randn(3, 2, 6), torch.randn(3, 2, 6))
    exported = torch.export.export(Wrapper(), args)
    assert "parrnn.sru_forward" in str(exported.graph)
    torch.testing.assert_close(exported.module()(*args)[0], Wrapper()(*args)[0])


# ---- bad input ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"proj_size": 6, "num_heads": 4}, "num_heads must divide proj_size"),
    ({"attention_every_n_layers": 2, "attention_last_n_layers": 1}, "not both"),
    ({"dropout": 1.0}, "dropout"),
    ({"backend": "scan"}, "scan"),
])
def test_bad_constructor_arguments(kwargs: dict, message: str) -> None:
    args = {"input_size": 4, "hidden_size": 4, "proj_size": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        SRUpp(**args)


def test_bad_input_is_named() -> None:
    model = SRUpp(4, 4, 4, 2)
    x = torch.randn(5, 2, 4)
    mem = [torch.randn(3, 2, 4), torch.randn(3, 2, 4)]
    cases = [
        (lambda: model(x, memory=mem[:1]), ValueError, "one tensor per layer"),
        (lambda: model(x, memory=mem[0]), TypeError, "list of tensors"),
        (lambda: model(x, memory=[mem[0], torch.randn(3, 2, 5)]), ValueError, r"memory\[1\] must be 3-D"),
        (lambda: model(x, memory=[mem[0], torch.randn(3, 3, 4)]), ValueError, r"memory\[1\].*N = 2"),
        (lambda: model(x, memory=[mem[0], torch.randn(2, 2, 4)]), ValueError, "same length M"),
        (lambda: model(x, attn_mask=torch.zeros(5, 5), memory=mem), ValueError, r"attn_mask must have shape"),
        (lambda: model(x, attn_mask=torch.zeros(5, 4)), ValueError, r"\(L, M \+ L\) = \(5, 5\)"),
        (lambda: model(x, attn_mask="future"), ValueError, "'causal'"),
        (lambda: model(x, mask=torch.zeros(2, 5)), ValueError, "mask must have shape"),
        (lambda: model(x, memory=mem, memory_mask_pad=torch.zeros(2, 3)), ValueError, "memory_mask_pad must"),
        (lambda: model(x, memory_mask_pad=torch.zeros(3, 2)), ValueError, "without memory"),
        (lambda: model(x, torch.zeros(2, 4)), ValueError, "state must have shape"),
        (lambda: model(x, lengths=[None, 2]), TypeError, "lengths must be a 1-D integer tensor"),
        (lambda: model.step(x[0, :0]), ValueError, "empty batch"),
        (lambda: model(x, model.init_state(2), memory=mem), ValueError, "carries the cached keys"),
        (lambda: model(torch.randn(5, 2, 3)), ValueError, "input_size"),
        (lambda: model.step(x, model.init_state(2)), ValueError, r"\(N, input_size\)"),
        (lambda: model.step(x[0], model.init_state(3)), ValueError, r"state.c must have shape \(2, 2, 4\)"),
        # a float64 input on a float32 model: the input is to blame, not the state built for the model
        (lambda: model.step(x[0].double(), model.init_state(2)), TypeError,
         "input dtype must match the layer's parameters. Expected torch.float32, got torch.float64"),
        (lambda: model.step(x[0], model.init_state(2).c), TypeError, "SRUppState"),
        (lambda: SRUpp(4, 2, 4, bidirectional=True).init_state(2), ValueError, "unidirectional"),
        (lambda: setattr(model, "backend", "scan"), ValueError, "peephole"),
        (lambda: setattr(model, "backend", "tpu"), ValueError, "backend must be one of"),
    ]
    for call, exc, message in cases:
        with pytest.raises(exc, match=message):
            call()


def _state_with(model: SRUpp, batch: int = 2, **changes) -> SRUppState:
    state = model.init_state(batch)
    for name, value in changes.items():
        setattr(state, name, value)
    return state


def test_malformed_decoding_state_is_named() -> None:
    """SRUpp.step with a state that does not fit (issue 21: IndexError, "Sizes of tensors must match", a kernel
    code 2 or a raw torch error before) and init_state with a batch size that is not a positive int."""
    torch.manual_seed(0)
    model = SRUpp(4, 4, 4, 2, num_heads=2)
    x = torch.randn(2, 4)
    fresh = model.init_state(2)
    keys, values = fresh.keys, fresh.values
    cases = [
        (lambda: model.step(x, SRUppState(c=torch.zeros(2, 2, 4))), ValueError,
         r"state.keys must be a list with one entry per layer \(2\), got 0"),
        # a state for another batch size (its c fits the new batch, its cache does not)
        (lambda: model.step(torch.randn(3, 4), _state_with(model, 2, c=torch.zeros(2, 3, 4))), ValueError,
         r"state.keys\[0\] must have shape \(N, heads, S, proj_size / heads\) = \(3, 2, S, 2\), got \(2, 2, 0, 2\)"),
        (lambda: model.step(x, _state_with(model, keys=[torch.zeros(2, 2, 0, 3), keys[1]])), ValueError,
         r"state.keys\[0\] must have shape .* = \(2, 2, S, 2\), got \(2, 2, 0, 3\)"),
        (lambda: model.step(x, _state_with(model, keys=[keys[0], torch.zeros(2, 2, 1, 2)])), ValueError,
         r"state.keys\[1\] must have shape .* = \(2, 2, 0, 2\), got \(2, 2, 1, 2\)"),
        (lambda: model.step(x, _state_with(model, values=[torch.zeros(2, 2, 3, 2), values[1]])), ValueError,
         r"state.values\[0\]"),
        (lambda: model.step(x, _state_with(model, key_padding=torch.zeros(2, 3, dtype=torch.bool))), ValueError,
         r"state.key_padding must be None or a bool tensor \(N, S\) = \(2, 0\)"),
        (lambda: model.init_state(0), ValueError, "batch_size must be >= 1, got 0"),
        (lambda: model.init_state(-1), ValueError, "batch_size must be >= 1, got -1"),
        (lambda: model.init_state(2.5), TypeError, "batch_size must be an int, got float"),
    ]
    for call, exc, message in cases:
        with pytest.raises(exc, match=message):
            call()
    no_attention = SRUpp(4, 4, 4, 2, attention_last_n_layers=1)
    with pytest.raises(ValueError, match=r"state.keys\[0\] must be None \(layer 0 has no attention\)"):
        no_attention.step(x, _state_with(no_attention, keys=[torch.zeros(2, 1, 0, 4), None]))


# ---- the layer protocol (docs/protocol.md) ---------------------------------------------------------------------

@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
def test_packed_sequence_in_packed_out_in_the_input_order(enforce_sorted: bool) -> None:
    model = _model(num_layers=2)
    lengths = torch.tensor([3] * 8 + [2] * 16 + [1] * 8)
    x = torch.randn(3, 32, 6, dtype=torch.float64)
    if not enforce_sorted:
        perm = torch.randperm(32)
        x, lengths = x[:, perm], lengths[perm]
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    out, c_n, memory = model(packed, attn_mask="causal")
    padded, c_ref, _ = model(x, lengths=lengths, attn_mask="causal")
    assert isinstance(out, PackedSequence) and torch.equal(out.batch_sizes, packed.batch_sizes)
    for name in ("sorted_indices", "unsorted_indices"):
        want, got = getattr(packed, name), getattr(out, name)
        assert (want is None and got is None) or torch.equal(want, got)
    order = torch.arange(32) if packed.sorted_indices is None else packed.sorted_indices
    steps = torch.cat([torch.full((int(n),), t) for t, n in enumerate(packed.batch_sizes)])
    seqs = torch.cat([order[:int(n)] for n in packed.batch_sizes])
    torch.testing.assert_close(out.data, padded[steps, seqs])
    torch.testing.assert_close(c_n, c_ref)
    with pytest.raises(ValueError, match="do not pass lengths"):
        model(packed, lengths=lengths)


def test_forward_from_a_decoding_state_equals_one_causal_pass() -> None:
    """forward(x, state=SRUppState) continues from the state's cells and cached keys/values: a prefill by
    forward from init_state, then step, then forward again equal one causal pass."""
    model = _model(num_layers=3, attention_every_n_layers=2)
    x = torch.randn(9, 2, 6, dtype=torch.float64)
    whole, c_whole, _ = model(x, attn_mask="causal")
    first, c1, _ = model(x[:4], model.init_state(2), attn_mask="causal")
    state = model.init_state(2)
    for t in range(4):
        _, state = model.step(x[t], state)
    torch.testing.assert_close(state.c, c1)
    out5, state = model.step(x[4], state)
    rest, c_n, _ = model(x[5:], state, attn_mask="causal")
    torch.testing.assert_close(torch.cat([first, out5.unsqueeze(0), rest]), whole)
    torch.testing.assert_close(c_n, c_whole)


@pytest.mark.parametrize("batch_first", [False, True])
def test_cell_step_equals_forward(batch_first: bool) -> None:
    torch.manual_seed(0)
    cell = SRUppCell(6, 6, 4, num_heads=2, batch_first=batch_first).double()
    x = torch.randn(5, 2, 6, dtype=torch.float64)
    c0 = torch.randn(2, 6, dtype=torch.float64)
    full, c_full, _ = cell(x.transpose(0, 1) if batch_first else x, c0, attn_mask="causal")
    full = full.transpose(0, 1) if batch_first else full
    state, outs = cell.init_state(2, c0=c0), []
    for t in range(5):
        out, state = cell.step(x[t], state)
        outs.append(out)
    torch.testing.assert_close(torch.stack(outs), full)
    torch.testing.assert_close(state.c[0], c_full)
    first, _ = cell.step(x[0])  # a fresh zero state when None
    torch.testing.assert_close(first, cell(x[:1].transpose(0, 1) if batch_first else x[:1])[0].reshape(2, 6))


def test_deprecated_spellings_and_num_layers_default() -> None:
    model = _model(num_layers=2)
    x = torch.randn(5, 2, 6, dtype=torch.float64)
    c0 = torch.randn(2, 2, model.output_size, dtype=torch.float64)
    mask = torch.zeros(5, 2, dtype=torch.bool)
    mask[3:, 0] = True
    expected = model(x, c0, mask=mask, attn_mask="causal")
    with pytest.warns(DeprecationWarning, match="write state= instead"):
        got = model(x, c0=c0, mask=mask, attn_mask="causal")
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match="write mask= instead"):
        got = model(x, c0, mask_pad=mask, attn_mask="causal")
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)
    with pytest.warns(FutureWarning, match="pass num_layers=2"):
        assert SRUpp(4, 4, 4).num_layers == 2
