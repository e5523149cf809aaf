"""The diagonal linear recurrence ``h_t = a_t * h_{t-1} + b_t`` over ``(L, N, C)`` tensors.

[linear_recurrence][parrnn.ops.linear_recurrence.linear_recurrence] is the public op (backend choice, custom op,
autograd); `reference` is its definition of correct. See docs/linear-recurrence.md.
"""

from parrnn.ops.linear_recurrence.contract import BACKENDS
from parrnn.ops.linear_recurrence.op import linear_recurrence

__all__ = ["BACKENDS", "linear_recurrence"]
