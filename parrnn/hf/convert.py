"""A `parrnn.SRUpp` stack (for example one converted from ``sru`` 3.0.0.dev6 with ``parrnn.SRUpp.from_sru``) as a
`ParrnnForCausalLM`, ready for ``save_pretrained``/``from_pretrained`` and ``generate``.

The stack's layers become plain blocks (``norm="none"``, ``residual=False``, no MLP: each block is just the
layer, as in ``sru``'s own stacks), so the model's hidden states are exactly the stack's output on the embedded
tokens, with a causal attention mask.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import parrnn
from parrnn.hf.configuration import ParrnnConfig
from parrnn.hf.modeling import ParrnnForCausalLM


def causal_lm_from_srupp(stack: parrnn.SRUpp, embedding: nn.Embedding | Tensor, lm_head: Tensor | None = None,
                         **config: object) -> ParrnnForCausalLM:
    """A causal LM whose blocks are the layers of ``stack``.

    Args:
        stack: a unidirectional `parrnn.SRUpp` with ``input_size == hidden_size``.
        embedding: the token embedding, ``nn.Embedding`` or a weight ``(vocab_size, hidden_size)``.
        lm_head: the output projection ``(vocab_size, hidden_size)``; None ties it to the embedding.
        **config: further `ParrnnConfig` fields (``bos_token_id``, ``eos_token_id``, ...).
    """
    if not isinstance(stack, parrnn.SRUpp):
        raise TypeError(f"stack must be a parrnn.SRUpp (convert an sru.SRUpp with parrnn.SRUpp.from_sru), got "
                        f"{type(stack).__name__}")
    if stack.bidirectional:
        raise ValueError("a causal LM needs a unidirectional SRUpp (bidirectional=False)")
    if stack.input_size != stack.hidden_size:
        raise ValueError(f"the stack's input_size ({stack.input_size}) must equal its hidden_size "
                         f"({stack.hidden_size}): the embedding feeds the first layer and every layer the next")
    weight = embedding.weight if isinstance(embedding, nn.Embedding) else embedding
    if weight.dim() != 2 or weight.size(1) != stack.hidden_size:
        raise ValueError(f"embedding must be (vocab_size, hidden_size) = (V, {stack.hidden_size}), got "
                         f"{tuple(weight.shape)}")
    if lm_head is not None and lm_head.shape != weight.shape:
        raise ValueError(f"lm_head must have the embedding's shape {tuple(weight.shape)}, got {tuple(lm_head.shape)}")
    first = stack.layers[0]
    attention = [bool(layer.has_attention) for layer in stack.layers]
    placement: dict[str, int] = {}
    if not all(attention):
        last = sum(attention)
        placement = ({"attention_last_n_layers": last} if attention == [i >= len(attention) - last
                                                                          for i in range(len(attention))]
                     else {"attention_every_n_layers": stack.attention_every_n_layers})
    options = {
        "proj_size": stack.proj_size, "num_heads": stack.num_heads, "layer_norm": first.layer_norm is not None,
        "normalize_after": bool(first.normalize_after), "attn_layer_norm": first.transform.layer_norm is not None,
        "highway_bias": float(first.highway_bias), "rescale": bool(first.rescale), **placement}
    settings = {"norm": "none", "residual": False, "intermediate_size": 0, "backend": stack.backend} | config
    hf_config = ParrnnConfig(cell="srupp", vocab_size=weight.size(0), hidden_size=stack.hidden_size,
                             num_layers=stack.num_layers, cell_options=options,
                             tie_word_embeddings=lm_head is None, **settings)
    model = ParrnnForCausalLM(hf_config).to(dtype=weight.dtype)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(weight)
        if lm_head is not None:
            model.lm_head.weight.copy_(lm_head)
        for block, layer in zip(model.model.layers, stack.layers, strict=True):
            target = block.mixer.layer.layers[0]
            if target.has_attention != layer.has_attention:
                raise ValueError("the attention placement of the stack could not be expressed in cell_options")
            target.load_state_dict(layer.state_dict())
            target.scale_x = layer.scale_x
    return model.eval()
