"""parrnn/experiments/machine.py: the CPU and library identity every result carries."""

from __future__ import annotations

from parrnn.experiments import machine

ZEN4 = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 17
model name	: AMD EPYC 9B14
physical id	: 0
core id		: 0
cpu cores	: 1
flags		: fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16 avx512_vnni

processor	: 1
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 17
model name	: AMD EPYC 9B14
physical id	: 0
core id		: 0
cpu cores	: 1
flags		: fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16 avx512_vnni
"""

SAPPHIRE_RAPIDS = """processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 143
model name	: Intel(R) Xeon(R) Platinum 8481C
flags		: avx avx2 avx512f amx_bf16 amx_tile amx_int8
"""

GRAVITON = """processor	: 0
BogoMIPS	: 243.75
Features	: fp asimd evtstrm sve
CPU implementer	: 0x41
CPU architecture: 8
CPU part	: 0xd40
"""

CONFIG = """PyTorch built with:
  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R) 64
  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71049cd69a3df32adcccb623b12cd7baa22)
  - CPU capability usage: AVX512
  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release
"""


def test_parse_cpuinfo_x86():
    info = machine.parse_cpuinfo(ZEN4)
    assert (info["vendor"], info["family"], info["model"], info["model_name"]) == (
        "AuthenticAMD", "25", "17", "AMD EPYC 9B14")
    assert info["flags"] == ["avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"]
    assert (info["logical_cpus"], info["physical_cores"]) == (2, 1)  # one core, two hyper-threads
    amx = machine.parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert {"amx_bf16", "amx_tile", "amx_int8"} <= set(amx["flags"]) and amx["vendor"] == "GenuineIntel"


def test_parse_cpuinfo_arm_and_empty():
    info = machine.parse_cpuinfo(GRAVITON)
    assert (info["vendor"], info["model"], info["flags"]) == ("0x41", "0xd40", ["asimd", "sve"])
    assert machine.parse_cpuinfo("")["flags"] == []


def test_parse_torch_config():
    assert machine.parse_torch_config(CONFIG) == {"blas": "MKL 2024.2", "onednn": "3.12.0",
                                                  "cpu_capability": "AVX512"}
    openblas = machine.parse_torch_config("  - Build settings: BLAS_INFO=open, LAPACK_INFO=open\n")
    assert openblas == {"blas": "open", "onednn": None, "cpu_capability": None}


def test_describe_and_summary_name_the_machine():
    info = machine.describe()
    for key in ("cpu", "torch", "blas", "onednn", "onednn_available", "cpu_capability", "threads",
                "gemm_engines", "gemm_choices", "gemm_pinned"):
        assert key in info
    assert "mm" in info["gemm_engines"]
    fake = {**info, "cpu": machine.parse_cpuinfo(ZEN4), **machine.parse_torch_config(CONFIG)}
    line = machine.summary(fake)
    assert line.startswith("AMD EPYC 9B14 (AuthenticAMD family 25 model 17), AVX2, AVX512F, AVX512_BF16")
    assert "MKL 2024.2" in line and "oneDNN 3.12.0" in line and "1 cores / 2 threads" in line
