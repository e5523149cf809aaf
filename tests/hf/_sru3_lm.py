"""Run with sru 3.0.0.dev6 first on sys.path (tests/hf/test_convert.py): an ``sru.SRUpp`` stack converted with
``parrnn.SRUpp.from_sru`` and `parrnn.hf.convert.causal_lm_from_srupp`, saved with ``save_pretrained`` and loaded
back with ``AutoModel``/``AutoModelForCausalLM.from_pretrained``; prints the largest difference between sru's
output and the loaded model's hidden states, and whether cached and uncached generation agree, as JSON."""

from __future__ import annotations

import json
import sys
import warnings

import torch


def main(path: str) -> dict:
    import sru
    from transformers import AutoModel, AutoModelForCausalLM

    import parrnn
    import parrnn.hf
    from parrnn.hf.convert import causal_lm_from_srupp

    torch.manual_seed(0)
    stack = sru.SRUpp(32, 32, 16, num_layers=3, num_heads=2, attention_every_n_layers=2).eval()
    with torch.no_grad():  # alpha starts at 0: make the attention count
        for name, p in stack.named_parameters():
            if name.endswith("alpha"):
                p.fill_(0.7)
    embedding = torch.nn.Embedding(40, 32)
    model = causal_lm_from_srupp(parrnn.SRUpp.from_sru(stack), embedding)
    model.save_pretrained(path)

    ids = torch.randint(0, 40, (2, 9))
    x = embedding(ids).transpose(0, 1)  # (L, N, H)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference, _, _ = stack(x, attn_mask=parrnn.srupp.causal_mask(9))
        hidden = AutoModel.from_pretrained(path)(ids).last_hidden_state.transpose(0, 1)
    lm = AutoModelForCausalLM.from_pretrained(path).eval()
    cached = lm.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    uncached = lm.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0, use_cache=False)
    return {"hidden": float((hidden - reference).abs().max()), "scale": float(reference.abs().max()),
            "generate_equal": bool(torch.equal(cached, uncached)), "type": type(lm).__name__}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
