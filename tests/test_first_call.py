"""A first call as cheap as torch's: in a new process with a warm kernel cache, the first training-mode forward and
backward of SRU and of each cell imports none of ``torch._dynamo``, ``sympy``, ``torch.onnx`` or
``torch.distributed`` (beyond what ``import torch`` itself loads) and takes well under a second.

The eager path calls the fused kernels without ``torch.library`` dispatch (whose first kernel call imports
``torch._dynamo``, about 800 modules and 3-5 s) and checks for an ONNX export only where ``torch.onnx`` is
already imported (`parrnn.ops.registry`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import parrnn

#: What only compiling, exporting or distributing may import.
HEAVY = ("torch._dynamo", "sympy", "torch.onnx", "torch.distributed")
#: Generous for a loaded 2-core CI machine (about 0.15 s on an idle one; 3-5 s before the registry).
LIMIT_S = 1.5
LAYERS = [name for name in ("SRU", "SRUpp", "QRNN", "MinGRU", "MinLSTM", "HGRN", "RGLRU") if hasattr(parrnn, name)]

SCRIPT = textwrap.dedent("""
    import json, sys, time
    import torch
    loaded_by_torch = set(sys.modules)
    import parrnn

    def make(name):
        if name == "SRU":
            return parrnn.SRU(16, 16, num_layers=2)
        if name == "SRUpp":
            return parrnn.SRUpp(16, 16, 8, num_layers=1, num_heads=2)
        return getattr(parrnn, name)(16, 16)

    report = {}
    for name in sys.argv[1:]:
        model = make(name).train()
        x = torch.randn(20, 4, 16)
        start = time.perf_counter()
        model(x)[0].sum().backward()
        report[name] = {"seconds": time.perf_counter() - start,
                        "heavy": [m for m in HEAVY_MODULES if m in sys.modules and m not in loaded_by_torch]}
    print(json.dumps(report))
""").replace("HEAVY_MODULES", repr(HEAVY))


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_first_forward_backward_imports_nothing_heavy_and_is_quick() -> None:
    _run("-c", "import parrnn; parrnn.precompile('cpu')")  # a warm kernel cache (a no-op when it already is)
    report = json.loads(_run("-c", SCRIPT, *LAYERS).strip().splitlines()[-1])
    assert set(report) == set(LAYERS)
    for name, entry in report.items():
        assert entry["heavy"] == [], f"{name}'s first call imported {entry['heavy']}"
    slow = {name: round(entry["seconds"], 2) for name, entry in report.items() if entry["seconds"] > LIMIT_S}
    assert not slow, f"first forward+backward slower than {LIMIT_S} s: {slow}"
