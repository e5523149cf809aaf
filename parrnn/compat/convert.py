"""Converting models of the `sru` package into parrnn's layers: `sru.SRU` 2.6 into `parrnn.SRU` and `sru.SRUpp`
3.0.0.dev6 into `parrnn.SRUpp`, with their weights (``SRU.from_sru`` / ``SRUpp.from_sru`` and the
``load_sru_state_dict`` methods call these). `sru` stores each layer's projection columns as (direction, unit,
matrix); parrnn's recurrence wants (matrix, direction, unit), so they are permuted here.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn


def sru_from_sru(cls: type[nn.Module], module: nn.Module, *, backend: str = "auto",
                 batch_first: bool = False) -> nn.Module:
    """Build a parrnn ``SRU`` with the same configuration and weights as an ``sru.SRU`` (2.6) module.

    Every module ``sru`` 2.6 builds converts exactly, including its per-layer projection rule (``sru`` drops
    the projection on layers where ``projection_size`` is not smaller than the layer's sizes). Raises
    ``ValueError`` for what parrnn cannot reproduce exactly: ``custom_m``, ``proj_input_to_hidden_first``,
    and a ``v1`` module whose ``weight_c`` is not zero (``sru`` would use it; parrnn's v1 has none).
    """
    cells = list(module.rnn_lst)
    first = cells[0]
    if getattr(module, "input_to_hidden", None) is not None:
        raise ValueError("sru.SRU(proj_input_to_hidden_first=True) is not supported by parrnn.SRU "
                         "(parrnn.compat.sru.SRU supports it)")
    if any(getattr(c, "custom_m", None) is not None for c in cells):
        raise ValueError("sru.SRU(custom_m=...) is not supported by parrnn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = cls(
            module.input_size, module.hidden_size, module.num_layers, bidirectional=module.bidirectional,
            dropout=first.dropout, rnn_dropout=first.rnn_dropout, layer_norm=first.layer_norm is not None,
            normalize_after=first.normalize_after, highway_bias=first.highway_bias, rescale=first.rescale,
            use_tanh=first.activation_type == 1, projection_size=[c.projection_size for c in cells],
            version="v1" if first.v1 else "v2", has_skip_term=first.has_skip_term, batch_first=batch_first,
            backend=backend)
    new.to(device=first.weight.device, dtype=first.weight.dtype)
    new.load_sru_state_dict(module.state_dict())
    return new


def load_sru_state_dict(self: nn.Module, state_dict: dict[str, Tensor], scale_x: list[float] | None = None) -> None:
    """Load an ``sru.SRU`` 2.6 ``state_dict`` (keys ``rnn_lst.{i}.weight``, ``weight_c``, ``bias``, ...).

    ``sru`` stores the projection columns interleaved as (direction, unit, matrix); parrnn stores them as
    (matrix, direction, unit), so they are permuted here. Each layer's highway scale comes from ``scale_x``
    if given, else from the state_dict's ``rnn_lst.{i}.scale_x`` buffer (what ``sru`` uses), else it is
    recomputed from the configuration. A v1 layer's ``weight_c`` must be zero (``ValueError`` otherwise).
    """
    for i, layer in enumerate(self.layers):
        prefix = f"rnn_lst.{i}."
        weight = _require(state_dict, prefix + "weight")
        fan_in, k, c = layer.weight.size(0), layer.num_matrices, layer.output_size
        if tuple(weight.shape) != (fan_in, k * c):
            raise ValueError(f"{prefix}weight has shape {tuple(weight.shape)}, expected {(fan_in, k * c)}")
        if layer.weight_c is None and prefix + "weight_c" in state_dict and state_dict[prefix + "weight_c"].any():
            raise ValueError(f"{prefix}weight_c is not zero, but this layer is v1 (no peephole): sru would use "
                             "those weights, parrnn's v1 cannot; load it into a version='v2' layer")
        dirs, hidden = layer.num_directions, layer.hidden_size
        permuted = weight.view(fan_in, dirs, hidden, k).permute(0, 3, 1, 2).reshape(fan_in, k * c)
        with torch.no_grad():
            layer.weight.copy_(permuted)
            layer.bias.copy_(_require(state_dict, prefix + "bias").view(2, c))
            if layer.weight_c is not None:
                layer.weight_c.copy_(_require(state_dict, prefix + "weight_c").view(2, c))
            if layer.weight_proj is not None:
                layer.weight_proj.copy_(_require(state_dict, prefix + "weight_proj"))
            if layer.layer_norm is not None:
                layer.layer_norm.weight.copy_(_require(state_dict, prefix + "layer_norm.weight"))
                layer.layer_norm.bias.copy_(_require(state_dict, prefix + "layer_norm.bias"))
        if layer.rescale and layer.has_skip_term:
            if scale_x is not None:
                layer.scale_x = float(scale_x[i])
            elif prefix + "scale_x" in state_dict:
                layer.scale_x = float(state_dict[prefix + "scale_x"])


def srupp_from_sru(cls: type[nn.Module], module: nn.Module, *, backend: str = "auto",
                   batch_first: bool = False) -> nn.Module:
    """Build an `SRUpp` with the configuration and weights of an `sru.SRUpp` (`sru` 3.0.0.dev6) module.

    `sru` orders the columns of each layer's last projection as (direction, unit, matrix); parrnn's
    recurrence wants (matrix, direction, unit), so those rows are permuted.
    """
    if getattr(module, "input_to_hidden", None) is not None:
        raise ValueError("sru.SRUpp(proj_input_to_hidden_first=True) is not supported by parrnn")
    if getattr(module, "nn_rnn_compatible_return", False):
        raise ValueError("sru.SRUpp(nn_rnn_compatible_return=True) is not supported by parrnn")
    cells = list(module.rnn_lst)
    first = cells[0]
    transforms = [c.transform_module for c in cells]
    attention = [type(t).__name__ == "SRUppAttention" for t in transforms]
    if any(a and not getattr(t, "normalize_after", True) for t, a in zip(transforms, attention, strict=True)):
        raise ValueError("sru SRUppAttention(normalize_after=False) is not supported by parrnn")
    att = next((t for t, a in zip(transforms, attention, strict=True) if a), None)
    new = cls(module.input_size, module.hidden_size, module.proj_size, module.num_layers,
              dropout=float(module.dropout), attn_dropout=float(att.attn_dropout) if att is not None else 0.0,
              num_heads=module.num_heads, bidirectional=module.bidirectional,
              layer_norm=first.layer_norm is not None, normalize_after=first.normalize_after,
              attn_layer_norm=transforms[0].layer_norm is not None, highway_bias=float(first.highway_bias),
              rescale=first.rescale, batch_first=batch_first, backend=backend,
              **_placement(attention))
    for layer, cell in zip(new.layers, cells, strict=True):
        if cell.rescale and cell.has_skip_term:
            layer.scale_x = float(cell.scale_x)
    new.to(device=first.bias.device, dtype=first.bias.dtype)
    new.load_sru_state_dict(module.state_dict())
    return new


def load_srupp_state_dict(self: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Load an `sru.SRUpp` (3.0.0.dev6) `state_dict` (keys `rnn_lst.{i}.transform_module.linear1.weight`,
    `rnn_lst.{i}.weight_c`, ...) into this model of the same configuration."""
    own = self.state_dict()
    for i, layer in enumerate(self.layers):
        src, dst = f"rnn_lst.{i}.", f"layers.{i}."
        k, c = layer.num_matrices, layer.output_size
        dirs, hidden = layer.num_directions, layer.hidden_size
        pairs = {"weight_c": "weight_c", "bias": "bias"}
        if layer.layer_norm is not None:
            pairs.update({"layer_norm.weight": "layer_norm.weight", "layer_norm.bias": "layer_norm.bias"})
        last = "linear3.weight" if layer.has_attention else "linear2.weight"  # P -> K * C
        names = ["linear1.weight", last] + (["linear2.weight", "alpha"] if layer.has_attention else [])
        if layer.transform.layer_norm is not None:
            names += ["layer_norm.weight", "layer_norm.bias"]
        pairs.update({f"transform_module.{n}": f"transform.{n}" for n in names})
        for s, d in pairs.items():
            if src + s not in state_dict:
                raise KeyError(f"sru state_dict has no {src + s!r}; keys: {sorted(state_dict)[:8]}...")
            value = state_dict[src + s]
            target = own[dst + d]
            if s == "transform_module." + last:
                # rows (direction, unit, matrix) -> (matrix, direction, unit)
                value = value.reshape(dirs, hidden, k, -1).permute(2, 0, 1, 3).reshape(k * c, -1)
            if value.numel() != target.numel():
                raise ValueError(f"{src + s} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(value.reshape(target.shape))


def _placement(attention: list[bool]) -> dict[str, int]:
    """The `attention_every_n_layers` / `attention_last_n_layers` option giving this per-layer pattern."""
    layers = len(attention)
    for n in range(1, layers + 2):
        if attention == [(i + 1) % n == 0 for i in range(layers)]:
            return {"attention_every_n_layers": n}
    for n in range(layers + 1):
        if attention == [layers - i <= n for i in range(layers)]:
            return {"attention_last_n_layers": n}
    raise ValueError(f"attention layers {attention} match neither attention_every_n_layers nor "
                     "attention_last_n_layers")


def _require(state_dict: dict[str, Tensor], key: str) -> Tensor:
    if key not in state_dict:
        raise KeyError(f"sru state_dict has no {key!r}; keys: {sorted(state_dict)[:8]}...")
    return state_dict[key]
