"""The one matrix-product engine of parrnn: the fastest implementation measured here, per shape class.

Every matrix product parrnn computes (the SRU projection and its backward, ``projection_size``, the SlicedRNN
GRU rows) goes through `matmul` (``x @ weight`` with autograd) or `mm` (any product, no autograd).
Which library is fastest depends on the CPU: on an AMD Zen 4, MKL's ``mm`` ran 1.4-2.4x slower than oneDNN on
parrnn's shapes (issue 14), elsewhere MKL wins. So nothing is assumed; the engines are timed.

Engines (`ENGINES`):

* ``mm``            -- ``torch.mm`` (torch's BLAS: MKL, OpenBLAS, Accelerate...); always available, every dtype;
* ``onednn``        -- ``torch.ops.mkldnn._linear_pointwise``, Inductor's CPU linear, with the weight kept
  transposed ``(N, K)`` (cached, never copied again while the weight is unchanged);
* ``onednn-packed`` -- the same with the weight reordered into oneDNN's blocked layout
  (``torch.ops.mkldnn._reorder_linear_weight``, cached);
* ``mkl-packed``    -- MKL's packed GEMM (``torch.ops.mkl._mkl_linear`` over
  ``torch.ops.mkl._mkl_reorder_linear_weight``, cached per row count), float32 only.

Choice: per *shape class* -- ``(kind, M, K, N, dtype, threads)`` with M, K, N rounded up to powers of two and
``kind`` ``"weight"`` (the right operand is a parameter: the packed engines may cache its layout) or ``"any"``
(both operands are activations, e.g. ``dW = X^T dY``: only ``mm`` and ``onednn``) -- the first product of a
class times every usable engine on the real operands (one warm-up call each, then 2 to 5 rounds calling
every engine once in turn, as many as fit a ``PARRNN_GEMM_BUDGET_MS`` budget, default 20 ms per engine; the
fastest call of each) and keeps the fastest engine for the process. An engine that raises is skipped for that class.

Pinning: ``PARRNN_GEMM=<engine>`` or `set_engine` (``"auto"`` restores timing). A pinned engine that
cannot run a product (another dtype, a missing op) falls back to ``mm`` for it.

Plain ``@`` (no engine) runs for CUDA and other devices, dtypes no engine but ``mm`` supports (float64,
float16), under CPU autocast, and while TorchScript scripts, ``torch.compile`` traces or ``torch.onnx``
exports, so those keep seeing ordinary ``aten`` ops.

Disk cache (opt-in): with ``PARRNN_GEMM_CACHE=1`` the choices are also stored in
``$PARRNN_CACHE_DIR/gemm-<id>.json`` (default ``~/.cache/parrnn``), ``<id>`` a hash of the CPU identity,
the ISA flags, torch's version and config, so another machine or torch never reads them. Off by default:
a choice timed on a busy machine would otherwise stick.

Packed weights are cached per weight tensor (weakly: they go with the tensor). A cached layout is reused
only while all of these are unchanged: the tensor's ``_version`` (bumped by in-place ops and
``load_state_dict``), its ``data_ptr``, shape and dtype, the count of ``torch.optim`` steps taken in this
process (fused optimizers such as ``AdamW(fused=True)`` update parameters *without* bumping ``_version``:
a global optimizer-step hook counts them), and a fingerprint of `FINGERPRINT_SIZE` evenly spaced elements
(catches writes through ``.data``, which bypass the version counter). A write through ``.data`` that changes
none of those elements, with no optimizer step since the last product, is the one change not seen: call
`forget_prepared` after such a write.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

ENGINES = ("mm", "onednn", "onednn-packed", "mkl-packed")
#: Engines that reuse a prepared (transposed / packed) right operand, so only for ``kind="weight"``.
_WEIGHT_ONLY = ("onednn-packed", "mkl-packed")

#: ``timer(engine_name, run) -> seconds per call``; replaceable for tests (`set_timer`).
Timer = Callable[[str, Callable[[], object]], float]
ShapeClass = tuple[str, int, int, int, str, int]

_lock = threading.RLock()
_pinned: str | None = None  # None: read PARRNN_GEMM on first use; "auto": time
_pinned_from_env = False
_choices: dict[ShapeClass, str] = {}
_exact: dict[tuple, str] = {}  # memo of choose() per exact (kind, M, K, N, dtype, threads): the per-call path
_failed: set[tuple[ShapeClass, str]] = set()
_prepared: WeakIdKeyDictionary = WeakIdKeyDictionary()  # weight -> {(engine, transposed, rows): (ver, ptr, obj)}
_timer: Timer | None = None
_disk_loaded = False
_availability: dict[str, tuple[bool, str]] = {}
_MAX_PREPARED = 8  # prepared layouts kept per weight
#: Elements of a weight compared (exactly) before a cached layout of it is reused.
FINGERPRINT_SIZE = 32
_optimizer_steps = 0  # torch.optim steps taken in this process (counted once a layout has been cached)
_step_hook: Any = None


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
    if name == "onednn":
        return True, "torch.ops.mkldnn._linear_pointwise (oneDNN)"
    if name == "onednn-packed":
        if not _has_op("mkldnn", "_reorder_linear_weight"):
            return False, "torch.ops.mkldnn._reorder_linear_weight is missing in this torch"
        return True, "oneDNN with a pre-packed weight (torch.ops.mkldnn._reorder_linear_weight)"
    if not (torch.backends.mkl.is_available() and _has_op("mkl", "_mkl_linear")
            and _has_op("mkl", "_mkl_reorder_linear_weight")):
        return False, "torch has no MKL packed GEMM (torch.ops.mkl._mkl_linear)"
    return True, "MKL packed GEMM (torch.ops.mkl._mkl_linear), float32"


def engine_available(name: str) -> tuple[bool, str]:
    """Whether engine ``name`` can run on this machine and torch, and why (cached)."""
    _check_name(name)
    if name not in _availability:
        _availability[name] = _check_engine(name)
    return _availability[name]


def engines() -> dict[str, tuple[bool, str]]:
    """Every engine: ``{name: (available_here, reason)}``."""
    return {name: engine_available(name) for name in ENGINES}


def _supports(name: str, dtype: torch.dtype) -> bool:
    if name == "mm":
        return True
    if name == "mkl-packed":
        return dtype == torch.float32
    return dtype in (torch.float32, torch.bfloat16)


class _Operand(NamedTuple):  # a NamedTuple: built on every product, several times cheaper than a dataclass
    """The right operand ``b`` (K, N) of a product; ``owner`` is the parameter it comes from (``b`` is
    ``owner`` or ``owner.t()``, ``transposed`` says which) or ``None`` for an activation."""

    b: Tensor
    owner: Tensor | None = None
    transposed: bool = False


def _prepare(name: str, b: Tensor, rows: int) -> Any:
    """``b`` (K, N) in the layout engine ``name`` multiplies with."""
    if name == "mm":
        return b
    w_nk = b.t().contiguous()  # (N, K): the (out, in) layout of a linear layer's weight
    if name == "onednn":
        return w_nk
    if name == "onednn-packed":
        return torch.ops.mkldnn._reorder_linear_weight(w_nk, rows)
    return torch.ops.mkl._mkl_reorder_linear_weight(w_nk, rows), w_nk


def _run(name: str, a: Tensor, prepared: Any) -> Tensor:
    if name == "mm":
        return torch.mm(a, prepared)
    a = a if a.is_contiguous() else a.contiguous()
    if name in ("onednn", "onednn-packed"):
        return torch.ops.mkldnn._linear_pointwise(a, prepared, None, "none", [], "")
    packed, w_nk = prepared
    return torch.ops.mkl._mkl_linear(a, packed, w_nk, None, a.size(0))


def _count_optimizer_step(*_: object) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


def _watch_optimizer_steps() -> None:
    """Count every ``torch.optim`` step from now on (fused optimizers leave ``_version`` alone)."""
    global _step_hook
    if _step_hook is None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        _step_hook = register_optimizer_step_post_hook(_count_optimizer_step)


def _sample(weight: Tensor) -> Tensor:
    """A view of `FINGERPRINT_SIZE` evenly spaced elements spanning ``weight``, from the first (all of
    them when there are fewer)."""
    flat = weight.detach().reshape(-1)
    n = flat.numel()
    if n <= FINGERPRINT_SIZE:
        return flat
    return flat.as_strided((FINGERPRINT_SIZE,), ((n - 1) // (FINGERPRINT_SIZE - 1),))


def _fingerprint(weight: Tensor) -> Tensor:
    """A copy of `_sample`, kept with a cached layout of ``weight``."""
    return _sample(weight).clone()


def _same_fingerprint(weight: Tensor, saved: Tensor) -> bool:
    return bool(torch.equal(_sample(weight), saved))


def _cached_prepare(name: str, operand: _Operand, rows: int) -> Any:
    """`_prepare` of a parameter, reused while the parameter is unchanged (see the module docstring)."""
    owner = operand.owner
    if owner is None or name == "mm" or owner.is_inference():
        return _prepare(name, operand.b, rows)
    key = (name, operand.transposed, rows if name == "mkl-packed" or name == "onednn-packed" else 0)
    stamp = (owner._version, owner.data_ptr(), tuple(owner.shape), owner.dtype, _optimizer_steps)
    with _lock:
        per_weight = _prepared.get(owner)
        if per_weight is None:
            per_weight = _prepared[owner] = {}
        hit = per_weight.get(key)
    if hit is not None and hit[0] == stamp and _same_fingerprint(owner, hit[1]):
        return hit[2]
    _watch_optimizer_steps()
    with torch.no_grad():
        obj = _prepare(name, operand.b.detach(), rows)
    with _lock:
        if key not in per_weight and len(per_weight) >= _MAX_PREPARED:  # e.g. mkl-packed, many row counts
            per_weight.pop(next(iter(per_weight)))
        per_weight[key] = (stamp, _fingerprint(owner), obj)
    return obj


def forget_prepared() -> None:
    """Drop every cached weight layout: call after writing a weight through ``.data`` (which bypasses the
    version counter) outside an optimizer step, if the write may leave the fingerprint's elements unchanged."""
    with _lock:
        _prepared.clear()


# ---------------------------------------------------------------- choice


def _check_name(name: str, *, allow_auto: bool = False) -> None:
    valid = ENGINES + (("auto",) if allow_auto else ())
    if name not in valid:
        raise ValueError(f"unknown matrix-product engine {name!r}; expected one of {', '.join(valid)}")


def set_engine(name: str | None) -> None:
    """Pin every product to engine ``name`` (one of `ENGINES`), or ``"auto"`` to choose by timing;
    ``None`` goes back to the ``PARRNN_GEMM`` environment variable. ``ValueError`` for an unknown name,
    ``RuntimeError`` when the engine cannot run here."""
    global _pinned, _pinned_from_env
    if name is not None:
        _check_name(name, allow_auto=True)
        if name != "auto":
            ok, why = engine_available(name)
            if not ok:
                raise RuntimeError(f"matrix-product engine {name!r} is unavailable here: {why}")
    with _lock:
        _pinned, _pinned_from_env = name, False
        _exact.clear()


def pinned_engine() -> str:
    """The pinned engine, or ``"auto"``."""
    global _pinned, _pinned_from_env
    if _pinned is None:
        env = os.environ.get("PARRNN_GEMM", "").strip() or "auto"
        _check_name(env, allow_auto=True)  # an unknown name in PARRNN_GEMM is an error, not silently ignored
        if env != "auto" and not engine_available(env)[0]:
            warnings.warn(f"parrnn: PARRNN_GEMM={env} is unavailable here ({engine_available(env)[1]}); "
                          "choosing by timing instead", RuntimeWarning, stacklevel=3)
            env = "auto"
        _pinned, _pinned_from_env = env, True
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
    """Forget every choice, packed weight, availability and pin (tests; after changing torch settings)."""
    global _pinned, _disk_loaded
    with _lock:
        _choices.clear()
        _exact.clear()
        _failed.clear()
        _prepared.clear()
        _availability.clear()
        _pinned, _disk_loaded = None, False


def _bucket(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def shape_class(kind: str, m: int, k: int, n: int, dtype: torch.dtype, threads: int) -> ShapeClass:
    """The key a choice is cached under: M, K, N rounded up to powers of two."""
    return (kind, _bucket(m), _bucket(k), _bucket(n), str(dtype).removeprefix("torch."), threads)


def _format_class(key: ShapeClass) -> str:
    kind, m, k, n, dtype, threads = key
    return f"{kind} {m}x{k}@{k}x{n} {dtype} t{threads}"


def choices() -> dict[str, str]:
    """The engine chosen per shape class so far, e.g. ``{"weight 8192x512@512x2048 float32 t2": "onednn"}``
    (benchmark metadata)."""
    with _lock:
        return {_format_class(k): v for k, v in sorted(_choices.items())}


def _interleaved_times(runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Seconds per call of each thunk in ``runs``: one warm-up call each (first calls pay for oneDNN primitive
    creation, packing, page faults), then rounds that call every engine once in turn -- 2 to 5 rounds, as many
    as fit ``PARRNN_GEMM_BUDGET_MS`` per engine (default 20 ms) -- and the fastest call of each. Interleaving
    means a burst of load from another process slows every engine's samples of that moment, not all samples
    of one engine (timed one engine after another, a busy moment once made oneDNN win a 1-row product it ran
    10x slower than ``mm``). An engine whose thunk raises is left out."""
    budget = float(os.environ.get("PARRNN_GEMM_BUDGET_MS", "20")) / 1e3 * max(len(runs), 1)
    live: dict[str, Callable[[], object]] = {}
    for name, run in runs.items():
        try:
            run()
            live[name] = run
        except Exception:  # this engine cannot run this product here (dtype, shape, build)
            continue
    best = {name: float("inf") for name in live}
    spent, rounds = 0.0, 0
    while live and rounds < 5 and (rounds < 2 or spent < budget):
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


def choose(kind: str, m: int, k: int, n: int, dtype: torch.dtype, threads: int | None = None,
           measure: Callable[[str], Callable[[], object]] | None = None) -> str:
    """The engine for a product ``(M, K) @ (K, N)`` of ``kind`` ``"weight"`` or ``"any"``.

    A pinned engine wins (``mm`` where it does not support ``dtype``). Otherwise the cached choice of the
    shape class, or, the first time, the fastest of the usable engines: ``measure(name)`` returns a thunk
    running the product on that engine, timed by the timer (`set_timer`). Without ``measure`` nothing
    can be timed and ``mm`` is returned (not cached).
    """
    if kind not in ("weight", "any"):
        raise ValueError(f"kind must be 'weight' or 'any', got {kind!r}")
    pinned = pinned_engine()
    if pinned != "auto":
        return pinned if _supports(pinned, dtype) and (kind == "weight" or pinned not in _WEIGHT_ONLY) else "mm"
    threads = torch.get_num_threads() if threads is None else threads
    key = shape_class(kind, m, k, n, dtype, threads)
    _load_disk()
    hit = _choices.get(key)
    if hit is not None:
        return hit
    candidates = _candidates(kind, dtype)
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


def _candidates(kind: str, dtype: torch.dtype) -> list[str]:
    return [name for name in ENGINES if engine_available(name)[0] and _supports(name, dtype)
            and (kind == "weight" or name not in _WEIGHT_ONLY)]


# ---------------------------------------------------------------- disk cache (opt-in)


def _cache_file() -> Path | None:
    if os.environ.get("PARRNN_GEMM_CACHE", "0") not in ("1", "true", "yes"):
        return None
    from parrnn import machine

    cpu = machine.cpu_info()
    identity = json.dumps([cpu["vendor"], cpu["family"], cpu["model"], cpu["model_name"], cpu["flags"],
                           torch.__version__, torch.__config__.show()])
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
    """True while torch.compile / torch.export or ``torch.jit.trace`` trace: they must see plain ``@``. ONNX
    export is one of the two (the dynamo exporter compiles, the TorchScript one traces), so
    ``torch.onnx.is_in_onnx_export()`` (slower, on the per-call path) is not asked. TorchScript never compiles
    the engine: `matmul` returns ``@`` under ``is_scripting``."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def _engine_dtype(t: Tensor) -> bool:
    return t.dtype in (torch.float32, torch.bfloat16)


def _product(a: Tensor, operand: _Operand, out: Tensor | None = None, accumulate: bool = False) -> Tensor:
    """``a @ operand.b`` on the chosen engine (no autograd); into ``out`` (added to it with ``accumulate``)."""
    b = operand.b
    kind = "weight" if operand.owner is not None else "any"
    (m, k), n = a.shape, b.shape[1]
    exact = (kind, m, k, n, a.dtype, torch.get_num_threads())
    name = _exact.get(exact)  # the per-call path: one dict read
    if name is None:

        def measure(name: str) -> Callable[[], object]:
            if operand.owner is not None:  # weights: time the call, the (cached) preparation is paid once
                prepared = _prepare(name, b, m)
                return lambda: _run(name, a, prepared)
            return lambda: _run(name, a, _prepare(name, b, m))

        name = choose(kind, m, k, n, a.dtype, exact[5], measure=measure)
        _exact[exact] = name
    result = None
    if name != "mm":
        try:
            result = _run(name, a, _cached_prepare(name, operand, m))
        except RuntimeError:  # e.g. a pinned engine meeting a shape it cannot run: mm is always right
            result = None
    if result is None:
        if out is None:
            return torch.mm(a, b)
        return out.addmm_(a, b) if accumulate else torch.mm(a, b, out=out)
    if out is None:
        return result
    return out.add_(result) if accumulate else out.copy_(result)


def _engine_applies(a: Tensor, b: Tensor) -> bool:
    # the cheap tensor checks first: this runs for every product
    return (a.is_cpu and a.dtype == b.dtype and _engine_dtype(a) and a.dim() == 2 and b.dim() == 2
            and not _plain() and not torch.is_autocast_enabled("cpu"))


def mm(a: Tensor, b: Tensor, *, out: Tensor | None = None, accumulate: bool = False) -> Tensor:
    """``a @ b`` for ``a`` ``(M, K)`` and ``b`` ``(K, N)``, both activations (nothing is cached), on the engine
    chosen for the shape; no autograd (use `matmul`). With ``out`` (M, N) the product is written into it,
    or added to it with ``accumulate``. Plain ``torch.mm`` where no engine applies."""
    if not _engine_applies(a, b):
        if out is None:
            return torch.mm(a, b)
        return out.addmm_(a, b) if accumulate else torch.mm(a, b, out=out)
    return _product(a, _Operand(b), out, accumulate)


def linear(x: Tensor, weight: Tensor, *, out: Tensor | None = None) -> Tensor:
    """``x @ weight^T`` for ``x`` ``(M, K)`` and a parameter ``weight`` ``(N, K)`` (a linear layer's layout),
    no autograd (for hand-written backwards; `matmul` has autograd). The engine's layout of ``weight``
    is cached while ``weight`` is unchanged. With ``out`` (M, N) the product is written into it."""
    if not _engine_applies(x, weight):
        return torch.mm(x, weight.t(), out=out) if out is not None else torch.mm(x, weight.t())
    return _product(x, _Operand(weight.t(), weight, transposed=True), out)


class _MatMul(torch.autograd.Function):
    """``x @ weight`` with ``dX = dY W^T`` and ``dW = X^T dY``, each product on its chosen engine."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        return _product(x, _Operand(weight, weight))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiable plain products (double backward works)
            return (grad @ weight.t() if ctx.needs_input_grad[0] else None,
                    x.t() @ grad if ctx.needs_input_grad[1] else None)
        grad = grad.contiguous()
        grad_x = _product(grad, _Operand(weight.t(), weight, transposed=True)) if ctx.needs_input_grad[0] else None
        grad_w = _product(x.t(), _Operand(grad)) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


def matmul(x: Tensor, weight: Tensor) -> Tensor:
    """``x @ weight`` with autograd: ``x`` ``(M, K)``, ``weight`` ``(K, N)`` -> ``(M, N)``.

    ``weight`` should be a parameter (or any tensor that stays the same across calls): the engines that
    transpose or pack it cache the result until it changes. Float32 and bfloat16 CPU tensors use the
    chosen engine for the product and both gradients; everything else is plain ``x @ weight``.
    """
    if not torch.jit.is_scripting():  # noqa: SIM102 (alone, so TorchScript compiles only the `@` below)
        if _engine_applies(x, weight):
            if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
                return _MatMul.apply(x, weight)
            return _product(x, _Operand(weight, weight))
    return x @ weight
