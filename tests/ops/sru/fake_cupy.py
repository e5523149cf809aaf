"""A recording fake of the part of the CuPy API that ``parrnn.ops.cuda_runtime`` uses, for CPU tests of the CuPy
glue.

It records every module compilation (code, options, current device), every stream wrapper created and every
kernel launch (name, grid, block, arguments, current stream, current device). ``fail_compile`` makes every
``get_function`` raise like a failed NVRTC compilation, with a log.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Launch:
    kernel: str
    grid: tuple
    block: tuple
    args: tuple
    stream: Any
    device: int


class FakeCompileError(Exception):
    pass


@dataclass
class FakeCupy:
    """Call ``module()`` to get the fake ``cupy`` module object."""

    nvrtc_version: tuple[int, int] = (13, 0)
    fail_compile: bool = False
    compile_log: str = 'sru_step.cuh(12): error: identifier "bogus" is undefined'
    compiles: list[dict] = field(default_factory=list)
    streams: list[tuple[int, int]] = field(default_factory=list)
    launches: list[Launch] = field(default_factory=list)
    device_stack: list[int] = field(default_factory=lambda: [0])
    stream_stack: list[Any] = field(default_factory=lambda: [None])

    def module(self) -> Any:
        fake = self

        class Device:
            def __init__(self, index: int) -> None:
                self.index = index

            def __enter__(self) -> Device:
                fake.device_stack.append(self.index)
                return self

            def __exit__(self, *exc: Any) -> None:
                fake.device_stack.pop()

        class ExternalStream:
            def __init__(self, handle: int, device_id: int) -> None:
                self.handle, self.device_id = handle, device_id
                fake.streams.append((handle, device_id))

            def __enter__(self) -> ExternalStream:
                fake.stream_stack.append(self)
                return self

            def __exit__(self, *exc: Any) -> None:
                fake.stream_stack.pop()

        class RawKernel:
            def __init__(self, name: str) -> None:
                self.name = name

            def __call__(self, grid: tuple, block: tuple, args: tuple, **kw: Any) -> None:
                fake.launches.append(Launch(self.name, grid, block, args, fake.stream_stack[-1],
                                            fake.device_stack[-1]))

        class RawModule:
            def __init__(self, code: str, options: tuple = ()) -> None:
                self.code, self.options = code, options

            def get_function(self, name: str) -> RawKernel:
                fake.compiles.append({"options": self.options, "device": fake.device_stack[-1], "name": name,
                                      "code": self.code})
                if fake.fail_compile:
                    raise FakeCompileError(f"nvrtc: error: failed to compile\n{fake.compile_log}")
                return RawKernel(name)

        runtime = types.SimpleNamespace(getDeviceCount=lambda: 2)
        nvrtc = types.SimpleNamespace(getVersion=lambda: fake.nvrtc_version)
        cuda = types.SimpleNamespace(Device=Device, ExternalStream=ExternalStream, runtime=runtime, nvrtc=nvrtc)
        return types.SimpleNamespace(__version__="13.6.0-fake", cuda=cuda, RawModule=RawModule)
