"""The linear recurrence written for ONNX export: one ``scan`` over time that exports as an ONNX ``Scan`` node.

[linear_recurrence][parrnn.ops.linear_recurrence.linear_recurrence] routes here while ``torch.onnx.export(...,
dynamo=True)`` traces a model: no ONNX runtime knows the custom op ``parrnn::linear_recurrence``, and a Python loop
would be unrolled for one fixed length, while ``torch._higher_order_ops.scan`` becomes a ``Scan`` whose body is one
step ([reference.step][parrnn.ops.linear_recurrence.reference.step], the reference loop's own step), so the
exported model takes any sequence length and batch. Same contract as the reference; inference only (detached).
``reverse`` flips the inputs in time before the scan and the outputs after: padded steps are identity steps, so
each sequence still starts at its own last valid step.
"""

from __future__ import annotations

from torch import Tensor
from torch._higher_order_ops.scan import scan

from parrnn._validation import lengths_to_mask
from parrnn.ops.linear_recurrence import reference
from parrnn.ops.linear_recurrence.contract import Operands, state_dtype_for


def run(ops: Operands, reverse: bool) -> tuple[Tensor, Tensor]:
    """``(h (L, N, C), h_n (N, C))`` of validated `Operands` as one ``scan``."""
    a, b, h0, lengths, state_dtype = ops
    length, batch, cols = a.shape
    acc = state_dtype_for(a.dtype)
    xs = [a.detach().to(acc), b.detach().to(acc)]
    if lengths is not None:
        xs.append(lengths_to_mask(lengths, length).unsqueeze(2).expand(length, batch, cols))
    if reverse:
        xs = [t.flip(0) for t in xs]
    # a fresh initial carry (a view of a model input fails to trace with a dynamic batch)
    init = a.new_zeros((batch, cols), dtype=acc) if h0 is None else h0.detach().to(acc).clone()

    def step(h: Tensor, xs_t: list[Tensor]) -> tuple[Tensor, Tensor]:
        h, out = reference.step(h, xs_t[0], xs_t[1], xs_t[2] if len(xs_t) > 2 else None)
        return h, out.clone()  # scan outputs must not alias the carry

    h_n, h = scan(step, init, xs)
    if reverse:
        h = h.flip(0)
    return h.to(a.dtype), h_n.to(state_dtype)
