"""Whether something other than plain eager execution is running the ops: a tracer (``torch.compile``,
``torch.export``, ``torch.jit.trace``, so the ONNX exporters too) or a ``torch.func`` transform (grad, vmap,
jacrev...). The fused paths step aside for them: tracers must see ordinary or registered ops, and transforms
need ops they can differentiate or batch.
"""

from __future__ import annotations

import torch


def tracing() -> bool:
    """True while ``torch.compile`` / ``torch.export`` or ``torch.jit.trace`` trace."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def functorch_active() -> bool:
    """True inside a ``torch.func`` transform (``grad``, ``vmap``, ``jacrev``, ``functional_call`` alone is not
    one). The fused kernels have no functorch rules, so under a transform the recurrences run the reference (pure
    torch ops; `parrnn.ops.registry.route`) and products run plain ``@``. Dynamo answers True while it traces, so
    ask `tracing` first."""
    return torch._C._functorch.peek_interpreter_stack() is not None
