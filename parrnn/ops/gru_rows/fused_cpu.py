"""A GRU over many independent short rows on CPU, with a hand-written backward: SlicedRNN's fast path.

[parrnn.SlicedRNN][] runs its GRUs over thousands of short rows (every slice of every sequence is one
row). ``torch.nn.GRU`` on CPU records ~15 autograd nodes per step for such a batch, allocates every step's
intermediates anew and stacks the per-step gradients afterwards. `gru_rows` computes exactly the same
function (same equations, same parameters) with fewer passes over memory:

* forward: the input projections of a block of steps in one GEMM into one reused, cache-sized buffer
  (`BLOCK_ELEMENTS`; the biases are added in the step kernel); per step one GEMM ``h @ W_hh^T`` (none for the
  first step's zero state) written into a saved buffer, then one fused C++ pass for the gates and the new
  state (``kernels/gru_rows_cpu.cpp``, OpenMP over rows);
* backward: per step one fused C++ pass writing the gate gradients into one buffer and one GEMM for the
  previous state's gradient; then one GEMM each for the input gradient and both weight gradients over all
  steps.

The C++ step kernels are their own library (``kernels/gru_rows_cpu.cpp``, prebuilt or built lazily by
`parrnn.ops.build.LazyLibrary`: a build failure here never disables the SRU kernels, nor the reverse); where no
compiler is available the same steps run as torch ops (about 10 ops per step instead of one pass; same results up to
rounding).

Layout: a 4-d input ``x4`` ``(S, L, B, F)`` holds ``S * B`` independent rows of ``L`` steps; step ``t`` of row
``(s, b)`` is ``x4[s, t, b]``. A contiguous time-major sequence ``(S * L, B, F)`` cut into ``S`` slices of
``L`` steps is such a view without a copy, and so are rows ``(L, R, F)`` with ``S = 1``.

GRU (gate order r, z, n as in ``torch.nn.GRU``):

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   h' = (1 - z) * n + z * h
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

import torch
from torch import Tensor, nn

from parrnn.ops import build, gemm, registry
from parrnn.ops.launch import dtype_suffix

DTYPES = (torch.float32, torch.float64)  # what gru_rows (and its C++ steps) compute in


def fast_gru_applies(rnn: nn.Module, x: Tensor) -> bool:
    """Whether `gru_rows` may replace ``rnn``: a plain time-major `torch.nn.GRU` on CPU in
    float32/float64, no inter-layer dropout active, outside autocast, eager (no tracing, ``torch.func`` transform
    or forward-mode AD dual tensor: `parrnn.ops.registry.route`)."""
    if type(rnn) is not nn.GRU or rnn.batch_first:
        return False
    if rnn.training and rnn.dropout > 0 and rnn.num_layers > 1:
        return False
    if x.device.type != "cpu" or x.dtype not in DTYPES or x.dtype != rnn.weight_ih_l0.dtype:
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    # eager only: graphs, ONNX export, torch.func transforms and forward-mode AD run nn.GRU
    return registry.hand_written_ok((x, *rnn.parameters()))


def gru_rows(rnn: nn.GRU, x4: Tensor, need_output: bool) -> tuple[Tensor | None, Tensor]:
    """``rnn`` over the ``S * B`` rows of ``x4`` ``(S, L, B, F)`` (see the module docstring), each from a zero
    state. Differentiable with respect to ``x4`` and ``rnn``'s parameters.

    Returns the outputs ``(S, L, B, dirs * H)`` (``None`` unless ``need_output``; for training they are kept
    anyway) and the rows' final states ``(S * B, dirs * H)``, row ``s * B + b``: [forward direction after step
    ``L - 1`` | backward direction after step 0], like ``h_n`` of ``torch.nn.GRU`` for the last layer.

    First-order gradients only (the backward is hand-written): differentiating the gradient again raises an
    error. Inter-layer dropout is not implemented; `fast_gru_applies` sends such GRUs to ``nn.GRU``.
    """
    grad = torch.is_grad_enabled() and (x4.requires_grad or any(p.requires_grad for p in rnn.parameters()))
    hidden, dirs = rnn.hidden_size, 2 if rnn.bidirectional else 1
    num_slices, steps, batch, _ = x4.shape
    layer_in = x4
    for layer in range(rnn.num_layers):
        keep = grad or need_output or layer < rnn.num_layers - 1
        outs, finals = [], []
        for direction in range(dirs):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            w_ih, w_hh = getattr(rnn, "weight_ih" + suffix), getattr(rnn, "weight_hh" + suffix)
            if rnn.bias:
                b_ih, b_hh = getattr(rnn, "bias_ih" + suffix), getattr(rnn, "bias_hh" + suffix)
            else:
                b_ih = b_hh = w_ih.new_zeros(3 * hidden)
            weights = (w_ih, w_hh, b_ih, b_hh)
            reverse = bool(direction)
            if grad:
                out_tm = _GRUDirection.apply(layer_in, *weights, reverse)
                final = out_tm[0 if reverse else steps - 1]
            else:
                out_tm, final = _forward(layer_in, *weights, reverse=reverse, keep_outputs=keep)[:2]
            outs.append(out_tm)
            finals.append(final.reshape(num_slices * batch, hidden))
        if keep:  # next layer's input, logical (S, L, B, dirs * H) over time-major memory
            layer_in = (outs[0] if dirs == 1 else torch.cat(outs, dim=3)).permute(1, 0, 2, 3)
    summary = finals[0] if dirs == 1 else torch.cat(finals, dim=1)
    return (layer_in if need_output else None), summary


class _GRUDirection(torch.autograd.Function):
    """One direction of one layer; returns the time-major outputs ``(L, S, B, H)``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x4: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor, reverse: bool
    ) -> Tensor:
        out_tm, _, gates_h, new = _forward(x4, w_ih, w_hh, b_ih, b_hh, reverse=reverse, keep_outputs=True)
        ctx.save_for_backward(x4, w_ih, w_hh, out_tm)
        ctx.gates_h, ctx.new, ctx.reverse = gates_h, new, reverse
        return out_tm

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x4, w_ih, w_hh, out_tm = ctx.saved_tensors
        with torch.no_grad():
            grads = _backward(grad_out, x4, w_ih, w_hh, out_tm, ctx.gates_h, ctx.new, ctx.reverse,
                              need_input_grad=ctx.needs_input_grad[0])
        needs = ctx.needs_input_grad
        grads = tuple(g if need else None for g, need in zip(grads, needs[:5], strict=True))
        # first-order only: differentiating these again raises registry.DoubleBackwardError (nn.GRU supports it)
        return registry.first_order_only(registry.GRU_ROWS, "sequential", grads, (x4, w_ih, w_hh)) + (None,)


#: Elements of one block of input projections (6 MB in float32). `_forward` computes ``W_ih x`` for a block of
#: steps at a time into one reused buffer that stays in cache, instead of for all steps at once (at T=32768 that
#: is 50 MB: fresh pages on every call and a round trip through DRAM).
BLOCK_ELEMENTS = 1 << 21


class _InputProjection:
    """``W_ih x`` of ``x4`` ``(S, L, B, F)`` in blocks of steps, each one GEMM into one reused buffer.

    ``step(t)`` returns step ``t``'s ``(S, B, 3H)`` projection (no bias), computing its block first if needed;
    rows ``(s, b)`` are ``step(t)[s, b]`` with a slice stride that need not be ``B * 3H``. When every step fits
    one block the projection is one GEMM over ``x4`` in its own memory order (no copy); otherwise each block's
    inputs are read time-major, copied into one reused buffer first unless they are contiguous already."""

    def __init__(self, x4: Tensor, weight: Tensor) -> None:
        num_slices, steps, batch, feat = x4.shape
        width = weight.shape[0]
        self.weight = weight
        self.block = max(1, min(steps, BLOCK_ELEMENTS // max(num_slices * batch * width, 1)))
        self.x_tm = x4.permute(1, 0, 2, 3)  # (L, S, B, F)
        self.current = -1
        if self.block == steps:  # one GEMM, in x4's memory order
            self.whole = _whole_projection(x4, weight)
            return
        self.out = x4.new_empty(self.block, num_slices, batch, width)
        self.copy = None if self.x_tm.is_contiguous() else x4.new_empty(self.block, num_slices, batch, feat)

    def step(self, t: int) -> Tensor:
        if self.block == self.x_tm.shape[0]:
            return self.whole[:, t]
        index, start = t // self.block, t - t % self.block
        if index != self.current:
            part = self.x_tm[start:start + self.block]
            if self.copy is not None:
                part = self.copy[:part.shape[0]].copy_(part)
            count = part.shape[0]
            gemm.linear(part.reshape(-1, part.shape[3]), self.weight, out=self.out[:count].view(-1, self.out.shape[3]))
            self.current = index
        return self.out[t - start]


def _whole_projection(x4: Tensor, weight: Tensor) -> Tensor:
    """``x4 @ weight^T`` as a logical ``(S, L, B, 3H)`` tensor in ``x4``'s memory order (one GEMM)."""
    num_slices, steps, batch, feat = x4.shape
    x_tm = x4.permute(1, 0, 2, 3)
    if x_tm.is_contiguous():
        return gemm.linear(x_tm.reshape(-1, feat), weight).view(steps, num_slices, batch, -1).permute(1, 0, 2, 3)
    return gemm.linear(x4.reshape(-1, feat), weight).view(num_slices, steps, batch, -1)


def _configure(lib: ctypes.CDLL) -> None:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for suffix in ("f32", "f64"):
        fwd = getattr(lib, f"parrnn_gru_forward_step_{suffix}")
        fwd.argtypes, fwd.restype = [i64] * 3 + [p, i64] + [p] * 6 + [i32], None
        bwd = getattr(lib, f"parrnn_gru_backward_step_{suffix}")
        bwd.argtypes, bwd.restype = [i64] * 2 + [p] * 7 + [i32], None


_LIBRARY = build.LazyLibrary("gru_rows_cpu", _configure)


def availability() -> tuple[bool, str]:
    """``(True, description)`` when the fused GRU step library builds and loads here, else ``(False, why)``
    (then the steps run as torch ops)."""
    try:
        _LIBRARY.load()
    except Exception as exc:
        return False, f"C++ build failed: {_LIBRARY.failure_summary(str(exc))}"
    return True, f"fused C++ GRU step, flags {' '.join(_LIBRARY.flags_used)}"


def step_kernels(dtype: torch.dtype) -> tuple[Callable[..., None], Callable[..., None]] | None:
    """The fused C++ forward/backward step functions for ``dtype`` (``kernels/gru_rows_cpu.cpp``), or ``None``
    when that library cannot be built here (then torch ops do the steps; `availability` says why).
    ``PARRNN_GRU_KERNELS=0`` forces the torch ops."""
    if dtype not in DTYPES or os.environ.get("PARRNN_GRU_KERNELS", "1") == "0":
        return None
    try:
        lib = _LIBRARY.load()
    except Exception:  # no compiler / build failed: availability() reports why
        return None
    suffix = dtype_suffix(dtype)
    return getattr(lib, f"parrnn_gru_forward_step_{suffix}"), getattr(lib, f"parrnn_gru_backward_step_{suffix}")


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _forward(
    x4: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor, *, reverse: bool, keep_outputs: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One direction over all rows. Returns ``(out_tm, final, gates_h, new)``: the time-major outputs
    ``(L, S, B, H)`` (only the last two steps' buffer unless ``keep_outputs``), the final state ``(S, B, H)``
    and, with ``keep_outputs``, the saved activations for `_backward`: ``gates_h`` ``(L, S, B, 3H)``
    holding ``[r, z, W_hn h + b_hn]`` and ``new`` ``(L, S, B, H)`` holding ``n``."""
    num_slices, steps, batch, _ = x4.shape
    hidden = w_hh.shape[1]
    rows, h2 = num_slices * batch, 2 * hidden
    gates_x = _InputProjection(x4, w_ih)  # bias b_x added in the steps
    b_x = torch.cat([b_ih[:h2] + b_hh[:h2], b_ih[h2:]])
    b_hn = b_hh[h2:].contiguous()
    kernels = step_kernels(x4.dtype)
    threads = torch.get_num_threads()
    saved = steps if keep_outputs else 1  # inference: one reused buffer each
    gates_h = x4.new_empty(saved, num_slices, batch, 3 * hidden)
    new = x4.new_empty(saved, num_slices, batch, hidden)
    out_tm = x4.new_empty(steps if keep_outputs else 2, num_slices, batch, hidden)
    h: Tensor | None = None  # the zero state
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for i, t in enumerate(order):
        k = t if keep_outputs else 0
        g_x, g_h, target = gates_x.step(t), gates_h[k], out_tm[t if keep_outputs else i % 2]
        if h is not None:
            gemm.linear(h.view(rows, hidden), w_hh, out=g_h.view(rows, 3 * hidden))
        if kernels is not None:
            assert g_x.stride(1) == 3 * hidden and g_x.stride(2) == 1
            kernels[0](num_slices, batch, hidden, g_x.data_ptr(), g_x.stride(0), b_x.data_ptr(), g_h.data_ptr(),
                       b_hn.data_ptr(), new[k].data_ptr(), _ptr(h), target.data_ptr(), threads)
        else:
            g_x = g_x + b_x
            if h is None:
                g_h.zero_()
            g_h[..., h2:].add_(b_hn)
            r_z = g_h[..., :h2].add_(g_x[..., :h2]).sigmoid_()
            n = torch.addcmul(g_x[..., h2:], r_z[..., :hidden], g_h[..., h2:], out=new[k]).tanh_()
            torch.lerp(n, n.new_zeros(()) if h is None else h, r_z[..., hidden:], out=target)
        h = target
    assert h is not None
    return out_tm, h, gates_h, new


def _backward(
    grad_out: Tensor, x4: Tensor, w_ih: Tensor, w_hh: Tensor, out_tm: Tensor, gates_h: Tensor, new: Tensor,
    reverse: bool, need_input_grad: bool = True,
) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(x4, w_ih, w_hh, b_ih, b_hh)`` from ``grad_out`` ``(L, S, B, H)`` (see `_forward`);
    the first is ``None`` unless ``need_input_grad``.

    Per step the gate gradients go to one buffer ``d_gates`` ``(L, S, B, 4H)`` = ``[dn * r, dr, dz, dn]``:
    columns ``0:3H`` are the gradient of ``W_hh h + b_hh`` in the gate order (n, r, z), columns ``H:4H`` that
    of ``W_ih x + b_ih`` in the order (r, z, n), so every product below is one GEMM on a strided view."""
    steps, num_slices, batch, hidden = out_tm.shape
    rows, h2, h3 = num_slices * batch, 2 * hidden, 3 * hidden
    grad_out = grad_out.contiguous()
    kernels = step_kernels(out_tm.dtype)
    threads = torch.get_num_threads()
    w_hh_nrz = torch.cat([w_hh[h2:], w_hh[:h2]])  # W_hh's rows in the order (n, r, z)
    d_gates = out_tm.new_empty(steps, num_slices, batch, 4 * hidden)
    d_h = torch.empty_like(out_tm[0])  # gradient of the state after the step being processed
    d_h_next = torch.empty_like(d_h)
    order = range(steps) if reverse else range(steps - 1, -1, -1)
    for i, t in enumerate(order):
        prev = t + 1 if reverse else t - 1  # the step whose state this step read
        h_prev = out_tm[prev] if 0 <= prev < steps else None
        dg = d_gates[t]
        d_h, d_h_next = d_h_next, d_h  # d_h_next: the gradient arriving from step t + 1 (or t - 1, reverse)
        if kernels is not None:
            kernels[1](rows, hidden, _ptr(d_h_next) if i else None, grad_out[t].data_ptr(), gates_h[t].data_ptr(),
                       new[t].data_ptr(), _ptr(h_prev), dg.data_ptr(), d_h.data_ptr(), threads)
        else:
            dh = grad_out[t] + d_h_next if i else grad_out[t]
            r, z, h_n = gates_h[t, ..., :hidden], gates_h[t, ..., hidden:h2], gates_h[t, ..., h2:]
            n = new[t]
            d_n = torch.ops.aten.tanh_backward.grad_input(  # dh * (1 - z) * (1 - n^2)
                torch.addcmul(dh, dh, z, value=-1), n, grad_input=dg[..., h3:]
            )
            torch.mul(d_n, r, out=dg[..., :hidden])
            torch.ops.aten.sigmoid_backward.grad_input(d_n * h_n, r, grad_input=dg[..., hidden:h2])
            h_prev_minus_n = h_prev - n if h_prev is not None else -n
            torch.ops.aten.sigmoid_backward.grad_input(dh * h_prev_minus_n, z, grad_input=dg[..., h2:h3])
            torch.mul(dh, z, out=d_h)
        if h_prev is not None:  # the first step's state is the constant zero
            gemm.mm(dg.view(rows, 4 * hidden)[:, :h3], w_hh_nrz, out=d_h.view(rows, hidden), accumulate=True)
    flat = d_gates.view(-1, 4 * hidden)
    d_input = flat[:, hidden:]  # gradient of W_ih x + b_ih, gate order (r, z, n)
    d_x = gemm.matmul(d_input, w_ih).view(steps, num_slices, batch, -1).permute(1, 0, 2, 3) if need_input_grad else None
    x_rows = x4.permute(1, 0, 2, 3).reshape(-1, x4.shape[3])  # time-major like d_input (a view when it can be)
    d_w_ih = gemm.mm(d_input.t(), x_rows)
    sums = flat.sum(0)
    d_b_ih = sums[hidden:]
    # W_hh saw the previous state: steps 1.. (forward) or ..L-2 (reverse) against outputs 0..L-2 / 1..
    later, earlier = (slice(0, steps - 1), slice(1, steps)) if reverse else (slice(1, steps), slice(0, steps - 1))
    d_w_hh_nrz = gemm.mm(d_gates[later].reshape(-1, 4 * hidden)[:, :h3].t(), out_tm[earlier].reshape(-1, hidden))
    d_w_hh = torch.cat([d_w_hh_nrz[hidden:], d_w_hh_nrz[:hidden]])
    d_b_hh = torch.cat([sums[hidden:h3], sums[:hidden]])
    return d_x, d_w_ih, d_w_hh, d_b_ih, d_b_hh
