"""The SRU recurrence written for ONNX export: one ``scan`` over time that exports as an ONNX ``Scan`` node.

[parrnn.ops.sru_recurrence][] routes here while ``torch.onnx.export(..., dynamo=True)`` traces a
model (``torch.onnx.is_in_onnx_export()``). The fused backends are a custom op (``parrnn::sru_forward``) that
no ONNX runtime knows, and the reference's Python loop would be unrolled for one fixed length; a
``torch._higher_order_ops.scan`` instead becomes an ONNX ``Scan`` whose body is one time step, so the exported
model takes any sequence length and batch size.

Same contract as [parrnn.ops.sru.reference.sru_recurrence][] (shapes and equations are in that module's
docstring), its arguments as one `parrnn.ops.sru.contract.RecurrenceArgs`; tests/ops/sru/test_sru_onnx.py checks
the values against it. The reverse direction of a bidirectional layer runs in the same scan: its columns are
flipped in time before the scan and its outputs flipped back after, so both directions advance together and
``c_n`` is the final carry.

Inference only: the inputs are detached (no gradients). Called eagerly (as the tests do), ``scan`` compiles
its step with ``torch.compile`` first, so it is slow; the layers never take this path outside an export.
`parrnn.ops.gru_rows.onnx.gru` does the same for the ``torch.nn.GRU`` levels of [SlicedRNN][parrnn.SlicedRNN].
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch._higher_order_ops.scan import scan

from parrnn.ops import registry
from parrnn.ops.sru import reference
from parrnn.ops.sru.contract import RecurrenceArgs

#: The clear error under the TorchScript-based exporter, shared by every op (`parrnn.ops.registry`).
check_exporter = registry.check_onnx_exporter


def _flip_second_half(t: Tensor, hidden: int) -> Tensor:
    """Reverse ``t`` ``(L, ..., 2 * hidden)`` in time on its last ``hidden`` columns (the reverse direction)."""
    return torch.cat([t[..., :hidden], t[..., hidden:].flip(0)], dim=-1)


def recurrence(args: RecurrenceArgs) -> tuple[Tensor, Tensor]:
    """Run the SRU recurrence as one ``scan`` over time (shapes as in
    [sru_recurrence][parrnn.ops.sru.reference.sru_recurrence]): ``h`` ``(L, N, C)`` and ``c_n`` ``(N, C)``."""
    u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, scale_x = args
    length, batch, k, cols = u.shape
    hidden = cols // 2 if bidirectional else cols
    out_dtype = u.dtype
    compute_dtype = torch.promote_types(u.dtype, torch.float32)  # fp32 math for half/bf16 storage
    # inference only: detached inputs keep the exporter from tracing scan's autograd (which fails on
    # symbolic shapes in torch 2.13's ONNX type-promotion pass)
    u, bias, c0 = u.detach(), bias.detach(), c0.detach()
    weight_c = None if weight_c is None else weight_c.detach()
    x = None if x is None else x.detach()
    drop_mask = None if drop_mask is None else drop_mask.detach()
    u = u.to(compute_dtype)
    # every tensor the step reads is whole (no two views of one tensor: scan rejects aliased inputs)
    bias = bias.to(compute_dtype)
    weight_c = None if weight_c is None else weight_c.to(compute_dtype)
    m = None if drop_mask is None else drop_mask.to(compute_dtype)
    skip = x.to(compute_dtype) * scale_x if k == 3 and x is not None else None
    pad = None if mask_pad is None else mask_pad.unsqueeze(2).expand(length, batch, cols)
    xs = [u] + ([] if skip is None else [skip]) + ([] if pad is None else [pad])
    if bidirectional:
        xs = [_flip_second_half(t, hidden) for t in xs]

    def step(c: Tensor, xs_t: list[Tensor]) -> tuple[Tensor, Tensor]:
        u_t = xs_t[0]  # (N, K, C)
        xp = u_t[:, 3] if k == 4 else xs_t[1] if skip is not None else None
        return reference.sru_step(c, u_t[:, 0], u_t[:, 1], u_t[:, 2], bias[0], bias[1],
                                  None if weight_c is None else weight_c[0], None if weight_c is None else weight_c[1],
                                  xp, m, None if pad is None else xs_t[-1], use_tanh)

    # a fresh initial carry: a view of a model input (c0[i]) fails to trace with a dynamic batch (torch 2.13)
    c_n, h = scan(step, c0.to(compute_dtype).clone(), xs)
    if bidirectional:
        h = _flip_second_half(h, hidden)
    return h.to(out_dtype), c_n.to(c0.dtype)
