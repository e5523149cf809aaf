"""The one matrix-product engine of parrnn: the fastest implementation measured here, per shape class,
reading the live weight on every call.

Every matrix product parrnn computes (the SRU projection and its backward, ``projection_size``, the SlicedRNN
GRU rows) goes through `matmul` (``x @ weight`` with autograd), `linear` (``x @ weight^T``, no autograd) or
`mm` (any product, no autograd). Which library is fastest depends on the CPU: on an AMD Zen 4, MKL's ``mm``
ran 1.4-2.4x slower than oneDNN on parrnn's shapes, on a Zen 3 they are level. So nothing is assumed: the
engines are timed.

Engines (`ENGINES`):

* ``mm``     -- ``torch.mm`` (torch's BLAS: MKL, OpenBLAS, Accelerate...); always available, every dtype;
* ``onednn`` -- ``torch.ops.mkldnn._linear_pointwise``, Inductor's CPU linear (float32, and bfloat16 where
  the CPU has oneDNN's bfloat16 kernels). It multiplies by an ``(N, K)``
  weight: for `linear` (and the ``dX = dY W^T`` product of `matmul`'s backward) that is the parameter itself;
  for ``x @ weight`` it is ``weight.t().contiguous()``, built from the live weight inside the call
  (0.5 ms for a 512 x 1536 weight, under 0.5 % of an SRU layer's forward at L=256, N=32; the timing below
  includes it, so at one-row products, where it would dominate, ``mm`` is chosen).

**No copy of any parameter is kept.** Every product reads the weight as it is at the moment of the call, so
writes through ``.data``, numpy views, ``set_``, fused or hand-written optimizers, pruning and
parametrizations are always seen. (Earlier versions cached transposed and pre-packed weights; packing
gained 0-11 % on a single product and nothing measurable on a whole layer, see docs/cpu-speed.md, and no
validity check can see every write, so it was removed.)

Choice: per *shape class* ``(layout, M, K, N, dtype, threads)``, M, K, N rounded up to powers of two and
``layout`` ``"nk"`` when the right operand is the transpose of a contiguous ``(N, K)`` tensor (oneDNN
reads it without a copy) else ``"kn"``. M (or K, whichever is longer) is first cut to the rows that make a
product of at most ``PARRNN_GEMM_TIMING_MFLOP`` (default 16) million flops (`timing_dims`): every longer
product with the same weight is one class, so a new sequence length or batch size re-uses the choice. The
first product of a class times every usable engine on the real operands cut to those rows (a few
milliseconds however large the product; a first call each, then 1 to 4 rounds calling every engine once
in turn, as many as fit a ``PARRNN_GEMM_BUDGET_MS`` budget, default 3 ms per engine; the fastest call of each)
and keeps the fastest engine for the process. Only the *choice* is remembered, never an operand.

Determinism: under ``torch.use_deterministic_algorithms(True)`` no timing runs and every product uses
``mm`` (or the pinned engine), so two processes round identically -- also for a shape whose engine was
chosen by timing before the mode was switched on (the per-call memo is keyed by the mode).

Pinning: ``PARRNN_GEMM=<engine>`` (``mm``, ``onednn`` or ``auto``) or `set_engine` (``"auto"`` restores
timing). A pinned engine that cannot run a product (another dtype, a missing op) runs it on ``mm``; every
such fallback is counted (`fallbacks`) and warned about once per engine and shape class, so a test or a user
sees it.

Plain ``@`` (no engine) runs for CUDA and other devices, dtypes no engine but ``mm`` supports (float64,
float16), under CPU autocast, under ``torch.func`` transforms, and while TorchScript scripts,
``torch.compile`` traces or ``torch.onnx`` exports, so those keep seeing ordinary ``aten`` ops.

Disk cache of choices (opt-in): with ``PARRNN_GEMM_CACHE=1`` the choices are also stored in
``$PARRNN_CACHE_DIR/gemm-<id>.json`` (default ``~/.cache/parrnn``), ``<id>`` a hash of the CPU identity and
torch's version and config, so another machine or torch never reads them. Off by default: a choice timed on
a busy machine would otherwise stick.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from parrnn import _cpu
from parrnn.ops.tracing import functorch_active, tracing

ENGINES = ("mm", "onednn")

#: ``timer(engine_name, run) -> seconds per call``; replaceable for tests (`set_timer`).
Timer = Callable[[str, Callable[[], object]], float]
ShapeClass = tuple[str, int, int, int, str, int]

_lock = threading.RLock()
_pinned: str | None = None  # None: read PARRNN_GEMM on first use; "auto": time
_choices: dict[ShapeClass, str] = {}
_exact: dict[tuple, str] = {}  # memo of choose() per exact (layout, M, K, N, dtype, threads): the per-call path
_failed: set[tuple[ShapeClass, str]] = set()
_fallbacks: Counter[tuple[str, ShapeClass]] = Counter()
_timer: Timer | None = None
_disk_loaded = False
_availability: dict[str, tuple[bool, str]] = {}


# ---------------------------------------------------------------- engines


def _has_op(namespace: str, name: str) -> bool:
    try:
        getattr(getattr(torch.ops, namespace), name)
        return True
    except (AttributeError, RuntimeError):
        return False


def _check_engine(name: str) -> tuple[bool, str]:
    if name == "mm":
        return True, "torch.mm (torch's BLAS)"
    if not torch.backends.mkldnn.is_available():
        return False, "torch was built without oneDNN (torch.backends.mkldnn.is_available() is False)"
    if not torch.backends.mkldnn.enabled:
        return False, "oneDNN is disabled (torch.backends.mkldnn.enabled is False)"
    if not _has_op("mkldnn", "_linear_pointwise"):
        return False, "torch.ops.mkldnn._linear_pointwise is missing in this torch"
    return True, "torch.ops.mkldnn._linear_pointwise (oneDNN)"


def engine_available(name: str) -> tuple[bool, str]:
    """Whether engine ``name`` can run on this machine and torch, and why (cached)."""
    _check_name(name)
    if name not in _availability:
        _availability[name] = _check_engine(name)
    return _availability[name]


def engines() -> dict[str, tuple[bool, str]]:
    """Every engine: ``{name: (available_here, reason)}``."""
    return {name: engine_available(name) for name in ENGINES}


def _onednn_bf16() -> bool:
    """Whether oneDNN runs bfloat16 products on this CPU (AVX-512 BF16, AMX or newer; not on e.g. a Zen 3)."""
    if "onednn-bf16" not in _availability:
        try:
            ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            ok = False
        _availability["onednn-bf16"] = (ok, "")
    return _availability["onednn-bf16"][0]


def _supports(name: str, dtype: torch.dtype) -> bool:
    if name == "mm":
        return True
    return dtype == torch.float32 or (dtype == torch.bfloat16 and _onednn_bf16())


def _layout(b: Tensor) -> str:
    """``"nk"`` when ``b`` (K, N) is the transpose of a contiguous (N, K) tensor, else ``"kn"``."""
    return "nk" if b.t().is_contiguous() else "kn"


def _run(name: str, a: Tensor, b: Tensor) -> Tensor:
    """``a (M, K) @ b (K, N)`` on engine ``name``, from the live operands."""
    if name == "mm":
        return torch.mm(a, b)
    a = a if a.is_contiguous() else a.contiguous()
    w_nk = b.t()
    w_nk = w_nk if w_nk.is_contiguous() else w_nk.contiguous()  # (N, K): built inside the call, never kept
    return torch.ops.mkldnn._linear_pointwise(a, w_nk, None, "none", [], "")


# ---------------------------------------------------------------- choice


def _check_name(name: str, *, allow_auto: bool = False, source: str = "engine") -> None:
    valid = ENGINES + (("auto",) if allow_auto else ())
    if name not in valid:
        raise ValueError(f"unknown matrix-product engine {source}={name!r}; expected one of {', '.join(valid)}")


def set_engine(name: str | None) -> None:
    """Pin every product to engine ``name`` (one of `ENGINES`), or ``"auto"`` to choose by timing;
    ``None`` goes back to the ``PARRNN_GEMM`` environment variable. ``ValueError`` for an unknown name,
    ``RuntimeError`` when the engine cannot run here."""
    global _pinned
    if name is not None:
        _check_name(name, allow_auto=True)
        if name != "auto":
            ok, why = engine_available(name)
            if not ok:
                raise RuntimeError(f"matrix-product engine {name!r} is unavailable here: {why}")
    with _lock:
        _pinned = name
        _exact.clear()


def pinned_engine() -> str:
    """The pinned engine, or ``"auto"``."""
    global _pinned
    if _pinned is None:
        env = os.environ.get("PARRNN_GEMM", "").strip() or "auto"
        _check_name(env, allow_auto=True, source="PARRNN_GEMM")  # an error, never silently ignored
        if env != "auto" and not engine_available(env)[0]:
            warnings.warn(f"parrnn: PARRNN_GEMM={env} is unavailable here ({engine_available(env)[1]}); "
                          "choosing by timing instead", RuntimeWarning, stacklevel=3)
            env = "auto"
        _pinned = env
    return _pinned


def set_timer(timer: Timer | None) -> None:
    """Time candidates with ``timer``, called once per engine (``None``: the default, interleaved wall-clock
    rounds); clears the choices."""
    global _timer
    with _lock:
        _timer = timer
        _choices.clear()
        _exact.clear()
        _failed.clear()


def reset() -> None:
    """Forget every choice, fallback count, availability and pin (tests; after changing torch settings)."""
    global _pinned, _disk_loaded
    with _lock:
        _choices.clear()
        _exact.clear()
        _failed.clear()
        _fallbacks.clear()
        _availability.clear()
        _pinned, _disk_loaded = None, False


def _bucket(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def timing_dims(layout: str, m: int, k: int, n: int) -> tuple[int, int]:
    """``(M, K)`` of the product the engines are timed on for an ``(M, K) @ (K, N)`` product: the first rows of M
    (or of K, whichever is longer; never K of an ``"nk"`` operand, whose layout that would change) such that it
    costs at most ``PARRNN_GEMM_TIMING_MFLOP`` million flops (default 16). Timing a new shape class costs
    milliseconds however large the product, and every longer product with the same weight is the same class."""
    limit = float(os.environ.get("PARRNN_GEMM_TIMING_MFLOP", "16")) * 1e6
    if 2.0 * m * k * n <= limit:
        return m, k
    if m >= k:
        return min(m, max(1, int(limit // (2 * k * n)))), k
    if layout == "nk":
        return m, k
    return m, min(k, max(1, int(limit // (2 * m * n))))


def shape_class(layout: str, m: int, k: int, n: int, dtype: torch.dtype, threads: int) -> ShapeClass:
    """The key a choice is remembered under: the `timing_dims` M and K and N rounded up to powers of two."""
    m, k = timing_dims(layout, m, k, n)
    return (layout, _bucket(m), _bucket(k), _bucket(n), str(dtype).removeprefix("torch."), threads)


def _format_class(key: ShapeClass) -> str:
    layout, m, k, n, dtype, threads = key
    return f"{layout} {m}x{k}@{k}x{n} {dtype} t{threads}"


def choices() -> dict[str, str]:
    """The engine chosen per shape class so far, e.g. ``{"kn 8192x512@512x2048 float32 t2": "onednn"}``
    (benchmark metadata)."""
    with _lock:
        return {_format_class(k): v for k, v in sorted(_choices.items())}


def fallbacks() -> dict[str, int]:
    """How many products a pinned or chosen engine could not run and ``mm`` ran instead, per
    ``"<engine> <shape class>"`` (empty when every product ran where it was sent)."""
    with _lock:
        return {f"{name} {_format_class(key)}": count for (name, key), count in sorted(_fallbacks.items())}


def _interleaved_times(runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Seconds per call of each thunk in ``runs``: a first call each (it pays for oneDNN primitive creation and
    page faults, so it rarely is the fastest), then rounds that call every engine once in turn -- 1 to 4
    rounds, as many as fit ``PARRNN_GEMM_BUDGET_MS`` per engine (default 3 ms) -- and the fastest call of each.
    Interleaving means a burst of load from another process slows every engine's samples of that moment, not
    all samples of one engine. An engine whose thunk raises is left out."""
    budget = float(os.environ.get("PARRNN_GEMM_BUDGET_MS", "3")) / 1e3 * max(len(runs), 1)
    live: dict[str, Callable[[], object]] = {}
    best: dict[str, float] = {}
    spent, rounds = 0.0, 0
    for name, run in runs.items():
        start = time.perf_counter()
        try:
            run()
        except Exception:  # this engine cannot run this product here (dtype, shape, build)
            continue
        live[name], best[name] = run, time.perf_counter() - start
        spent += best[name]
    while live and rounds < 4 and (rounds < 1 or spent < budget):
        for name, run in list(live.items()):
            start = time.perf_counter()
            try:
                run()
            except Exception:
                del live[name], best[name]
                continue
            took = time.perf_counter() - start
            best[name], spent = min(best[name], took), spent + took
        rounds += 1
    return best  # the minimum: noise (other processes, page faults) only ever adds time


def choose(layout: str, m: int, k: int, n: int, dtype: torch.dtype, threads: int | None = None,
           measure: Callable[[str], Callable[[], object]] | None = None) -> str:
    """The engine for a product ``(M, K) @ (K, N)`` whose right operand has ``layout`` ``"kn"`` or ``"nk"``.

    A pinned engine wins (``mm`` where it does not support ``dtype``). Under deterministic algorithms,
    ``mm``. Otherwise the remembered choice of the shape class, or, the first time, the fastest of the
    usable engines: ``measure(name)`` returns a thunk running the product on that engine, timed by the timer
    (`set_timer`). Without ``measure`` nothing can be timed and ``mm`` is returned (not remembered).
    """
    if layout not in ("kn", "nk"):
        raise ValueError(f"layout must be 'kn' or 'nk', got {layout!r}")
    pinned = pinned_engine()
    if pinned != "auto":
        return pinned if _supports(pinned, dtype) else "mm"
    if torch.are_deterministic_algorithms_enabled():
        return "mm"  # a choice made by timing could differ between processes, and so would the rounding
    threads = torch.get_num_threads() if threads is None else threads
    key = shape_class(layout, m, k, n, dtype, threads)
    _load_disk()
    hit = _choices.get(key)
    if hit is not None:
        return hit
    candidates = [name for name in ENGINES if engine_available(name)[0] and _supports(name, dtype)]
    if len(candidates) == 1 or measure is None:
        return candidates[0] if len(candidates) == 1 else "mm"
    usable = [name for name in candidates if (key, name) not in _failed]
    times: dict[str, float] = {}
    if _timer is None:  # all engines timed in interleaved rounds
        runs = {}
        for name in usable:
            try:
                runs[name] = measure(name)
            except Exception:
                _failed.add((key, name))
        times = _interleaved_times(runs)
        _failed.update((key, name) for name in runs if name not in times)
    else:  # an injected timer, one call per engine
        for name in usable:
            try:
                times[name] = _timer(name, measure(name))
            except Exception:  # this engine cannot run this product here (dtype, shape, build): skip it
                _failed.add((key, name))
    best = min(times, key=times.__getitem__) if times else "mm"
    with _lock:
        _choices[key] = best
    _save_disk()
    return best


# ---------------------------------------------------------------- disk cache of choices (opt-in)


def _cache_file() -> Path | None:
    if os.environ.get("PARRNN_GEMM_CACHE", "0") not in ("1", "true", "yes"):
        return None
    identity = json.dumps([_cpu.cpu_tag(), torch.__version__, torch.__config__.show()])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    root = Path(os.environ.get("PARRNN_CACHE_DIR") or Path.home() / ".cache" / "parrnn")
    return root / f"gemm-{digest}.json"


def _load_disk() -> None:
    global _disk_loaded
    if _disk_loaded:
        return
    _disk_loaded = True
    path = _cache_file()
    if path is None or not path.is_file():
        return
    try:
        stored = json.loads(path.read_text())
        with _lock:
            for item in stored:
                key, name = tuple(item[0]), item[1]
                if name in ENGINES and engine_available(name)[0]:
                    _choices.setdefault(key, name)  # type: ignore[arg-type]
    except (OSError, ValueError, TypeError, IndexError):
        pass  # a broken cache only costs a re-timing


def _save_disk() -> None:
    path = _cache_file()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with _lock:
            tmp.write_text(json.dumps([[list(k), v] for k, v in _choices.items()]))
        tmp.replace(path)
    except OSError:
        pass


# ---------------------------------------------------------------- products


def _plain() -> bool:
    """True while torch.compile / torch.export or ``torch.jit.trace`` trace, or a ``torch.func`` transform
    (grad, vmap, jacrev...) runs: they must see plain ``@``. ONNX export is one of the first two (the dynamo
    exporter compiles, the TorchScript one traces). TorchScript never compiles the engine: `matmul` returns
    ``@`` under ``is_scripting``."""
    return tracing() or functorch_active()


def timing_operands(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Views of ``a (M, K)`` and ``b (K, N)`` cut to `timing_dims` (same layouts and strides): what the engines
    are timed on."""
    (m, k), n = a.shape, b.shape[1]
    tm, tk = timing_dims(_layout(b), m, k, n)
    return a[:tm, :tk], b[:tk]


def _product(a: Tensor, b: Tensor, out: Tensor | None = None, accumulate: bool = False) -> Tensor:
    """``a (M, K) @ b (K, N)`` on the chosen engine (no autograd); into ``out`` (added to it with
    ``accumulate``)."""
    (m, k), n = a.shape, b.shape[1]
    # keyed by deterministic mode: a choice timed before torch.use_deterministic_algorithms(True) never runs after
    exact = (_layout(b), m, k, n, a.dtype, torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    name = _exact.get(exact)  # the per-call path: one dict read
    if name is None:
        ta, tb = timing_operands(a, b)
        name = choose(exact[0], m, k, n, a.dtype, exact[5], measure=lambda engine: lambda: _run(engine, ta, tb))
        _exact[exact] = name
    result = None
    if name != "mm":
        try:
            result = _run(name, a, b)
        except RuntimeError:  # e.g. a pinned engine meeting a shape it cannot run: mm is always right
            _note_fallback(name, exact)
    if result is None:
        if out is None:
            return torch.mm(a, b)
        return out.addmm_(a, b) if accumulate else torch.mm(a, b, out=out)
    if out is None:
        return result
    return out.add_(result) if accumulate else out.copy_(result)


def _note_fallback(name: str, exact: tuple) -> None:
    key = shape_class(*exact[:6])
    with _lock:
        _fallbacks[(name, key)] += 1
        first = _fallbacks[(name, key)] == 1
    if first:
        warnings.warn(f"parrnn.ops.gemm: engine {name!r} could not run a {_format_class(key)} product; "
                      "torch.mm ran it (counted in parrnn.ops.gemm.fallbacks())", RuntimeWarning, stacklevel=4)


def _engine_applies(a: Tensor, b: Tensor) -> bool:
    # the cheap tensor checks first: this runs for every product
    return (a.is_cpu and a.dtype == b.dtype and a.dtype in (torch.float32, torch.bfloat16) and a.dim() == 2
            and b.dim() == 2 and not _plain() and not torch.is_autocast_enabled("cpu"))


def mm(a: Tensor, b: Tensor, *, out: Tensor | None = None, accumulate: bool = False) -> Tensor:
    """``a @ b`` for ``a`` ``(M, K)`` and ``b`` ``(K, N)`` on the engine chosen for the shape; no autograd
    (use `matmul`). With ``out`` (M, N) the product is written into it, or added to it with ``accumulate``.
    Plain ``torch.mm`` where no engine applies."""
    if not _engine_applies(a, b):
        if out is None:
            return torch.mm(a, b)
        return out.addmm_(a, b) if accumulate else torch.mm(a, b, out=out)
    return _product(a, b, out, accumulate)


def linear(x: Tensor, weight: Tensor, *, out: Tensor | None = None) -> Tensor:
    """``x @ weight^T`` for ``x`` ``(M, K)`` and ``weight`` ``(N, K)`` (a linear layer's layout), no autograd
    (for hand-written backwards; `matmul` has autograd). With ``out`` (M, N) the product is written into it."""
    return mm(x, weight.t(), out=out)


class _MatMul(torch.autograd.Function):
    """``x @ weight`` with ``dX = dY W^T`` and ``dW = X^T dY``, each product on its chosen engine."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor) -> Tensor:  # type: ignore[override]
        return _product(x, weight)

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:  # type: ignore[override]
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        if torch.is_grad_enabled() or _plain():  # create_graph=True or a transform: differentiable plain products
            return (grad @ weight.t() if ctx.needs_input_grad[0] else None,
                    x.t() @ grad if ctx.needs_input_grad[1] else None)
        grad = grad.contiguous()
        grad_x = _product(grad, weight.t()) if ctx.needs_input_grad[0] else None
        grad_w = _product(x.t(), grad) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


def matmul(x: Tensor, weight: Tensor) -> Tensor:
    """``x @ weight`` with autograd: ``x`` ``(M, K)``, ``weight`` ``(K, N)`` -> ``(M, N)``.

    Float32 and bfloat16 CPU tensors use the chosen engine for the product and both gradients; everything
    else is plain ``x @ weight``. The weight is read as it is now: nothing about it is remembered.
    """
    if not torch.jit.is_scripting():  # noqa: SIM102 (alone, so TorchScript compiles only the `@` below)
        if _engine_applies(x, weight):
            if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
                return _MatMul.apply(x, weight)
            return _product(x, weight)
    return x @ weight
