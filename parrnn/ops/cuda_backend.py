"""The CuPy glue shared by CUDA backend modules of one kernel file each (`KernelFile`): launch on torch's
current stream, availability, the CPU host launcher of the tests, and running a ``*_with(launch, ...)`` function
on the tensors' device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from parrnn.ops import cuda_runtime, host_launcher
from parrnn.ops.launch import Arg, require_device


class KernelFile:
    """The CuPy glue a CUDA backend module of one kernel file needs: launch on torch's current stream,
    availability (compiled and loaded per device and dtype), the CPU host launcher of the tests, and running a
    ``*_with(launch, ...)`` function on the tensors' device.

    ``kernel_file`` is a file of ``kernels/``, ``kernels`` its kernel names without the dtype suffix, ``label``
    the backend's name in errors (e.g. ``"linear_recurrence scan (cuda)"``).
    """

    def __init__(self, kernel_file: str, kernels: Sequence[str], label: str) -> None:
        self.kernel_file, self.kernels, self.label = kernel_file, tuple(kernels), label

    def launch(self, name: str, total: int, args: Sequence[Arg], device: torch.device) -> None:
        """Launch ``name`` with CuPy on torch's current stream of ``device`` (`parrnn.ops.cuda_runtime.cupy_launch`)."""
        cuda_runtime.cupy_launch(self.kernel_file, name, total, args, device)

    def availability(self, device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> tuple[bool, str]:
        """``(True, description)`` when the kernels are compiled and loaded for ``device`` and ``dtype``."""
        return cuda_runtime.kernel_availability(device, dtype, self.kernel_file, self.kernels)

    def host_launcher(self, block: int = 32, max_grid: int = 2**31 - 1) -> Any:
        """The kernels on CPU tensors through ``kernels/host_shim.h`` (tests); ``max_grid`` caps the grid to
        exercise the grid-stride loops."""
        return host_launcher.make_host_launcher(self.kernel_file, block, max_grid)

    def on_device(self, function: Any) -> Any:
        """``function(launch, *tensors)`` as ``f(*tensors)`` run with CuPy's launcher on the first tensor's
        (CUDA) device, made current: a backend module's ``forward``/``backward`` from its ``*_with``."""
        def run(*args: Any) -> Any:
            require_device(args[0].device, ("cuda",), self.label)
            with torch.cuda.device(args[0].device):
                return function(self.launch, *args)

        run.__doc__ = f"{function.__name__} on the tensors' CUDA device ({self.label})."
        return run
