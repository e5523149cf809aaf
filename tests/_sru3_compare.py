"""Run in a subprocess with `sru` 3.0.0.dev6 first on sys.path (see tests/test_srupp.py): builds `sru.SRUpp`
models for the configurations read as JSON on stdin, converts each with `parrnn.SRUpp.from_sru`, and prints the
largest differences of outputs, final states, memory and input gradients as JSON. A configuration with
`"mode": "init"` compares instead the initial weights of `sru.SRUpp` and `parrnn.SRUpp` built after the same seed.

`sru` 3.0 and `sru` 2.6 register the same C++ operators, so they cannot share one process.
"""

from __future__ import annotations

import json
import sys
import warnings

import torch

import parrnn


def compare(config: dict) -> dict:
    import sru

    torch.manual_seed(config.get("seed", 0))
    options = dict(config["options"])
    length, batch, mem_len = config.get("length", 7), config.get("batch", 3), config.get("memory", 0)
    ref = sru.SRUpp(config["input_size"], config["hidden_size"], config["proj_size"], **options).eval()
    with torch.no_grad():  # alpha starts at 0; make attention count, and the biases non-trivial
        for name, p in ref.named_parameters():
            if name.endswith("alpha") or "layer_norm" in name:
                p.add_(torch.rand_like(p) * 0.5 + 0.5)
    ours = parrnn.SRUpp.from_sru(ref, backend=config.get("backend", "auto")).eval()
    x = torch.randn(length, batch, config["input_size"], requires_grad=True)
    kwargs: dict = {}
    if config.get("causal"):
        kwargs["attn_mask"] = parrnn.srupp.causal_mask(length, mem_len)
    if config.get("mask_pad"):
        lengths = torch.tensor([length] + [max(1, length - 2 - i) for i in range(batch - 1)])
        kwargs["mask_pad"] = torch.arange(length).unsqueeze(1) >= lengths.unsqueeze(0)
    if mem_len:
        sizes = [config["input_size"]] + [ref.output_size] * (ref.num_layers - 1)
        kwargs["memory"] = [torch.randn(mem_len, batch, s) for s in sizes]
        if config.get("memory_mask_pad"):
            mmask = torch.zeros(mem_len, batch, dtype=torch.bool)
            mmask[: mem_len // 2, -1] = True
            kwargs["memory_mask_pad"] = mmask
    c0 = torch.randn(ref.num_layers, batch, ref.output_size) if config.get("c0") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h_ref, c_ref, bank = ref(x, c0, **kwargs)
    (gx_ref,) = torch.autograd.grad(h_ref.square().sum(), x)
    h, c, memory_out = ours(x, c0, **kwargs)
    (gx,) = torch.autograd.grad(h.square().sum(), x)
    valid = ~kwargs["mask_pad"] if "mask_pad" in kwargs else torch.ones(length, batch, dtype=torch.bool)
    return {
        "output": float((h - h_ref).detach().abs()[valid].max()),
        "c_n": float((c - c_ref).detach().abs().max()),
        "memory": max(float((a - b).detach().abs().max())
                      for a, b in zip(memory_out, bank["saved_inputs"], strict=True)),
        "grad_input": float((gx - gx_ref).abs().max()),
        "scale": float(h_ref.detach().abs().max()),
    }


def compare_init(config: dict) -> dict:
    """Same seed, same initial weights: every tensor equal, except each layer's last projection (`P -> K * C`),
    whose rows parrnn draws in its own (matrix, direction, unit) order; that one holds the same values (sorted).
    Also each layer's recurrent dropout (`sru`: none on the last layer)."""
    import sru

    args = (config["input_size"], config["hidden_size"], config["proj_size"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(config.get("seed", 0))
        ref = sru.SRUpp(*args, **config["options"])
    torch.manual_seed(config.get("seed", 0))
    ours = parrnn.SRUpp(*args, **config["options"])
    converted = parrnn.SRUpp.from_sru(ref).state_dict()
    lasts = {f"layers.{i}.transform.{'linear3' if layer.has_attention else 'linear2'}.weight"
             for i, layer in enumerate(ours.layers)}
    exact, permuted = 0.0, 0.0
    for key, value in ours.state_dict().items():
        other = converted[key]
        if key in lasts:
            permuted = max(permuted, float((value.flatten().sort().values - other.flatten().sort().values).abs()
                                           .max()))
        else:
            exact = max(exact, float((value - other).abs().max()))
    return {"exact": exact, "last_projection_sorted": permuted,
            "recurrent_dropout": [float(c.dropout) for c in ref.rnn_lst],
            "ours_recurrent_dropout": [layer.recurrent_dropout for layer in ours.layers],
            "scale": float(max(p.abs().max() for p in ours.parameters()))}


if __name__ == "__main__":
    configs = json.load(sys.stdin)
    results = []
    for c in configs:
        try:
            results.append(compare_init(c) if c.get("mode") == "init" else compare(c))
        except Exception as exc:  # report it for this configuration; go on with the others
            results.append({"error": f"{type(exc).__name__}: {exc}"})
    print(json.dumps(results))
