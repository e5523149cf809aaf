"""The SRU elementwise recurrence in plain PyTorch: the definition of correct.

Every other backend (``cpu``, ``cuda``, ``scan``) implements [sru_recurrence][parrnn.ops.sru.reference.sru_recurrence]
with its arguments as one `parrnn.ops.sru.contract.RecurrenceArgs` and is tested against this function, values and
gradients (tests/ops/sru/test_backends.py). Autograd differentiates
through the Python time loop, so this is slow; it exists to be obviously right.

Shapes (``L`` sequence length, ``N`` batch, ``D`` directions (1 or 2), ``H`` hidden size, ``C = D * H``):

* ``u``         ``(L, N, K, C)`` projections of the input, ``K = 3`` (candidate, forget, reset) or ``K = 4``
  (a 4th projection used as the highway input). Column ``col`` belongs to direction ``col // H``.
* ``x``         ``(L, N, C)`` highway input for ``K = 3`` (multiplied by ``scale_x``), or ``None``.
  With ``K = 3`` and ``x=None`` the layer has no highway (skip) term. With ``K = 4``, ``x`` must be ``None``.
* ``weight_c``  ``(2, C)`` peephole weights ``(v_f, v_r)``, or ``None`` for the linear (v1) SRU.
* ``bias``      ``(2, C)`` gate biases ``(b_f, b_r)``.
* ``c0``        ``(N, C)`` initial cell state.
* ``mask_pad``  ``(L, N)`` bool, ``True`` marks padding (c is carried unchanged, h = 0), or ``None``.
* ``drop_mask`` ``(N, C)`` multiplicative dropout mask on the highway branch (already scaled by 1/(1-p)), or ``None``.

Per column, with direction 1 running from ``t = L-1`` down to ``0``:

    f_t = sigmoid(u1_t + v_f * c_{t-1} + b_f)
    r_t = sigmoid(u2_t + v_r * c_{t-1} + b_r)
    c_t = f_t * c_{t-1} + (1 - f_t) * u0_t
    h_t = r_t * m * g(c_t) + (1 - r_t * m) * xp_t      g = identity or tanh, xp_t = scale_x * x_t or u3_t

Returns ``(h, c_n)``: ``h`` ``(L, N, C)`` in ``u``'s dtype and ``c_n`` ``(N, C)`` the last state of each
direction, in ``c0``'s dtype (the state dtype).

Mixed precision: ``weight_c``, ``bias``, ``c0`` and ``drop_mask`` may be float32 while ``u`` (and ``x``) are
float16/bfloat16 (autocast); the recurrence then runs in float32 and every backend returns each gradient in its
input's dtype.

>>> import torch
>>> L, N, H = 5, 2, 3
>>> u = torch.randn(L, N, 3, H)
>>> h, c = sru_recurrence(u, None, None, torch.zeros(2, H), torch.zeros(N, H), None, None)
>>> h.shape, c.shape
(torch.Size([5, 2, 3]), torch.Size([2, 3]))
"""

from __future__ import annotations

import torch
from torch import Tensor


def sru_step(c: Tensor, u0: Tensor, u1: Tensor, u2: Tensor, b_f: Tensor, b_r: Tensor, v_f: Tensor | None,
             v_r: Tensor | None, skip: Tensor | None, drop: Tensor | None, pad: Tensor | None,
             use_tanh: bool) -> tuple[Tensor, Tensor]:
    """One time step of the equations above, for a set of columns: ``(c_t, h_t)``, each ``(N, C')``.

    ``c`` is ``c_{t-1}`` and ``u0``/``u1``/``u2`` the projections at ``t``, ``(N, C')``; ``b_f``, ``b_r``,
    ``v_f``, ``v_r`` ``(C')`` (``v`` ``None`` for v1); ``skip`` ``xp_t`` ``(N, C')`` or ``None`` (no highway);
    ``drop`` the dropout mask ``m`` or ``None``; ``pad`` bool, broadcastable to ``(N, C')``, ``True`` on padding
    (``c`` carried, ``h = 0``) or ``None``. Shared by this loop and the ONNX export's scan body.
    """
    zf, zr = u1 + b_f, u2 + b_r
    if v_f is not None and v_r is not None:
        zf = zf + v_f * c
        zr = zr + v_r * c
    f, r = torch.sigmoid(zf), torch.sigmoid(zr)
    c_new = u0 + (c - u0) * f
    g = torch.tanh(c_new) if use_tanh else c_new
    gated = g if skip is None else g - skip
    if drop is not None:
        gated = gated * drop
    gated = gated * r
    h = gated if skip is None else skip + gated
    if pad is not None:
        c_new = torch.where(pad, c, c_new)
        h = torch.where(pad, torch.zeros_like(h), h)
    return c_new, h


def sru_recurrence(
    u: Tensor,
    x: Tensor | None,
    weight_c: Tensor | None,
    bias: Tensor,
    c0: Tensor,
    mask_pad: Tensor | None,
    drop_mask: Tensor | None,
    *,
    bidirectional: bool = False,
    use_tanh: bool = False,
    scale_x: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Run the SRU recurrence with a Python loop over time (see the module docstring for shapes)."""
    length, _, k, cols = u.shape
    dirs = 2 if bidirectional else 1
    hidden = cols // dirs
    out_dtype, state_dtype = u.dtype, c0.dtype
    compute_dtype = torch.promote_types(u.dtype, torch.float32)  # fp32 math for half/bf16 storage
    u = u.to(compute_dtype)
    c_prev_all = c0.to(compute_dtype)

    if k == 4:
        skip = u[:, :, 3]
    elif x is not None:
        skip = x.to(compute_dtype) * scale_x
    else:
        skip = None
    v_f, v_r = (None, None) if weight_c is None else weight_c.to(compute_dtype).unbind(0)
    b_f, b_r = bias.to(compute_dtype).unbind(0)
    m = None if drop_mask is None else drop_mask.to(compute_dtype)

    outputs, finals = [], []
    for d in range(dirs):
        cols_d = slice(d * hidden, (d + 1) * hidden)
        c = c_prev_all[:, cols_d]
        m_d = None if m is None else m[:, cols_d]
        v_f_d = None if v_f is None else v_f[cols_d]
        v_r_d = None if v_r is None else v_r[cols_d]
        h_steps: list[Tensor | None] = [None] * length
        steps = range(length) if d == 0 else range(length - 1, -1, -1)
        for t in steps:
            c, h_steps[t] = sru_step(
                c, u[t, :, 0, cols_d], u[t, :, 1, cols_d], u[t, :, 2, cols_d], b_f[cols_d], b_r[cols_d], v_f_d,
                v_r_d, None if skip is None else skip[t, :, cols_d], m_d,
                None if mask_pad is None else mask_pad[t].unsqueeze(1), use_tanh)
        outputs.append(torch.stack(h_steps))  # type: ignore[arg-type]
        finals.append(c)
    h_all = torch.cat(outputs, dim=2) if dirs == 2 else outputs[0]
    c_n = torch.cat(finals, dim=1) if dirs == 2 else finals[0]
    return h_all.to(out_dtype), c_n.to(state_dtype)
