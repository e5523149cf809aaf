// Fused SRU recurrence kernels: forward and backward, one thread per column, time loop inside.
//
// A *column* is (batch row, column index) with index in [0, C), C = D * H; index // H is the direction (D = 2 when
// bidirectional; direction 1 runs from t = L-1 down to 0). Every gate, the peephole (v2) or not (v1), the
// highway/skip term (scale_x * x, or the 4th projection u3, or none), tanh, the padding mask, the dropout mask
// on the highway branch and c0 are fused; the per-step math is parrnn::sru_forward_step / sru_backward_step from
// sru_step.cuh (the single source of the formulas, shared with the CPU backend).
//
// Layouts (row-major, contiguous; L sequence length, N batch, K = 3 or 4):
//   u (L, N, K, C)  x, h, grad_h (L, N, C)  c_all (L, N, C) in the accumulation type A
//   weight_c, bias (2, C) in A     c0, drop_mask, grad_c_n, grad_c0 (N, C) in A     mask_pad (L, N) bytes (1 = pad)
//   c_n (N, C) in the storage type T
//   grad_wc_part, grad_bias_part (2, N, C) in A: per-(row, column) partial gradients, summed over N by the caller.
// Neighbouring threads own neighbouring columns, so every global access of a warp is one coalesced segment.
// Indices are 64-bit throughout (tensors may exceed 2^31 elements). Null pointers mean "absent" (x, weight_c,
// mask_pad, drop_mask; grad_x and grad_wc_part are null exactly when x / weight_c are).
//
// Storage types float, double, __half, __nv_bfloat16; arithmetic in float (double for double). Each instantiation
// is an extern "C" kernel named sru_{forward,backward}_{f32,f64,f16,bf16} so CuPy's RawModule fetches it by name.
//
// The same file compiles as plain C++ behind host_shim.h (CPU tests run these kernels through ctypes; see
// parrnn/ops/host_launcher.py). Keep it free of shared memory, barriers and warp intrinsics, or extend the shim
// faithfully.

#include "sru_storage.cuh"
#include "sru_step.cuh"

namespace parrnn {
namespace kernels {

typedef long long i64;

using storage::load;   // storage <-> arithmetic conversions (sru_storage.cuh)
using storage::store;

// Per-column constants of one launch.
template <typename A>
struct Column {
    i64 row, index;               // batch row, column index in [0, C)
    i64 state_offset, u_offset;   // offsets of (t = 0, row, index) in (L, N, C), of (t = 0, row, 0, index) in u
    i64 state_step, u_step;       // strides of one time step in (L, N, C) and in u (L, N, K, C)
    bool reverse;     // direction 1 of a bidirectional layer
    A vf, vr, bf, br; // peephole weights (0 for v1) and biases
    A m;              // highway dropout mask (1 without dropout)
};

template <typename A>
__device__ __forceinline__ Column<A> column_setup(i64 idx, i64 batch, i64 cols, int k, int bidirectional,
                                                  const A* weight_c, const A* bias, const A* drop_mask) {
    Column<A> c;
    c.row = idx / cols;
    c.index = idx - c.row * cols;
    c.reverse = bidirectional && c.index >= cols / 2;
    c.state_offset = idx;  // = row * cols + index
    c.u_offset = c.row * k * cols + c.index;
    c.state_step = batch * cols;
    c.u_step = batch * k * cols;
    c.vf = weight_c ? weight_c[c.index] : A(0);
    c.vr = weight_c ? weight_c[cols + c.index] : A(0);
    c.bf = bias[c.index];
    c.br = bias[cols + c.index];
    c.m = drop_mask ? drop_mask[idx] : A(1);
    return c;
}

// Inputs of one time step of one column.
template <typename A>
struct StepIn {
    A u0, u1, u2, xp;  // values: the step's three projections and its highway input
    bool pad;
};

template <typename T, typename A>
__device__ __forceinline__ StepIn<A> load_step(const T* u, const T* x, const unsigned char* mask_pad, i64 t,
                                               i64 batch, i64 cols, int k, A scale_x, const Column<A>& c) {
    StepIn<A> s;
    const i64 ub = t * c.u_step + c.u_offset;
    s.u0 = load<T, A>(u, ub);
    s.u1 = load<T, A>(u, ub + cols);
    s.u2 = load<T, A>(u, ub + 2 * cols);
    s.xp = k == 4 ? load<T, A>(u, ub + 3 * cols)
           : x    ? scale_x * load<T, A>(x, t * c.state_step + c.state_offset)
                  : A(0);
    s.pad = mask_pad ? mask_pad[t * batch + c.row] != 0 : false;
    return s;
}

// The step functions with the peephole chosen at run time: v1 (no weight_c) drops the v * c terms instead of
// multiplying them by 0, so an infinite c stays inf (not NaN), as in the reference.
template <typename A, typename... Args>
__device__ __forceinline__ A forward_step(bool peephole, Args&&... args) {
    return peephole ? sru_forward_step<A, true>(args...) : sru_forward_step<A, false>(args...);
}

template <typename A, typename... Args>
__device__ __forceinline__ SruStepGrads<A> backward_step(bool peephole, Args&&... args) {
    return peephole ? sru_backward_step<A, true>(args...) : sru_backward_step<A, false>(args...);
}

// Steps whose loads are in flight ahead of the math (a register ring buffer; the time loop is unrolled by this
// factor so the ring's indices are compile-time constants). Hides global-memory latency when there are too few
// columns to fill the GPU with warps (small N * C, long L).
#ifndef PARRNN_PREFETCH
#define PARRNN_PREFETCH 2
#endif

// ---- forward ---------------------------------------------------------------------------------------------------

template <typename T, typename A>
__device__ __forceinline__ void sru_forward(const T* __restrict__ u, const T* __restrict__ x,
                                            const A* __restrict__ weight_c, const A* __restrict__ bias,
                                            const A* __restrict__ c0, const unsigned char* __restrict__ mask_pad,
                                            const A* __restrict__ drop_mask, T* __restrict__ h,
                                            T* __restrict__ c_n, A* __restrict__ c_all, i64 length, i64 batch,
                                            i64 cols, int k, int bidirectional, int use_tanh, A scale_x) {
    constexpr int D = PARRNN_PREFETCH;
    const i64 total = batch * cols;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    const bool has_skip = k == 4 || x != nullptr;
    for (i64 idx = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); idx < total; idx += stride) {
        const Column<A> column = column_setup<A>(idx, batch, cols, k, bidirectional, weight_c, bias, drop_mask);
        // step s (0 = first in this column's own time order) is time index t(s)
        const i64 t0 = column.reverse ? length - 1 : 0, dt = column.reverse ? -1 : 1;
        A c = c0[idx];
        StepIn<A> ring[D];
#pragma unroll
        for (int j = 0; j < D; ++j) {
            if (j < length) ring[j] = load_step<T, A>(u, x, mask_pad, t0 + j * dt, batch, cols, k, scale_x, column);
        }
        for (i64 s0 = 0; s0 < length; s0 += D) {
#pragma unroll
            for (int j = 0; j < D; ++j) {
                const i64 s = s0 + j;
                if (s >= length) break;
                const i64 t = t0 + s * dt;
                const StepIn<A> cur = ring[j];
                if (s + D < length) {
                    ring[j] = load_step<T, A>(u, x, mask_pad, t + D * dt, batch, cols, k, scale_x, column);
                }
                const i64 o = t * column.state_step + column.state_offset;  // (t, row, index) in (L, N, C)
                if (cur.pad) {  // padding: c carried unchanged, h = 0
                    store<T, A>(h, o, A(0));
                } else {
                    const A hv = forward_step<A>(weight_c != nullptr, cur.u0, cur.u1, cur.u2, cur.xp, column.vf,
                                                 column.vr, column.bf, column.br, column.m, has_skip, use_tanh != 0, c);
                    store<T, A>(h, o, hv);
                }
                c_all[o] = c;
            }
        }
        store<T, A>(c_n, idx, c);
    }
}

// ---- backward --------------------------------------------------------------------------------------------------

// Inputs of one backward step: the forward inputs, dL/dh_t and c_{t-1} (c0 before the column's first step).
template <typename A>
struct BackIn {
    StepIn<A> in;
    A gh, c_prev;
};

template <typename T, typename A>
__device__ __forceinline__ BackIn<A> load_back(const T* grad_h, const T* u, const T* x, const A* c0,
                                               const A* c_all, const unsigned char* mask_pad, i64 s, i64 t, i64 dt,
                                               i64 idx, i64 batch, i64 cols, int k, A scale_x,
                                               const Column<A>& column) {
    BackIn<A> r;
    r.in = load_step<T, A>(u, x, mask_pad, t, batch, cols, k, scale_x, column);
    r.gh = load<T, A>(grad_h, t * column.state_step + column.state_offset);
    r.c_prev = s == 0 ? c0[idx] : c_all[(t - dt) * column.state_step + column.state_offset];
    return r;
}

template <typename T, typename A>
__device__ __forceinline__ void sru_backward(
    const T* __restrict__ grad_h, const A* __restrict__ grad_c_n, const T* __restrict__ u,
    const T* __restrict__ x, const A* __restrict__ weight_c, const A* __restrict__ bias, const A* __restrict__ c0,
    const unsigned char* __restrict__ mask_pad, const A* __restrict__ drop_mask, const A* __restrict__ c_all,
    T* __restrict__ grad_u, T* __restrict__ grad_x, A* __restrict__ grad_wc_part, A* __restrict__ grad_bias_part,
    A* __restrict__ grad_c0, i64 length, i64 batch, i64 cols, int k, int bidirectional, int use_tanh,
    A scale_x) {
    constexpr int D = PARRNN_PREFETCH;
    const i64 total = batch * cols;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    const bool has_skip = k == 4 || x != nullptr;
    for (i64 idx = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); idx < total; idx += stride) {
        const Column<A> column = column_setup<A>(idx, batch, cols, k, bidirectional, weight_c, bias, drop_mask);
        const i64 t0 = column.reverse ? length - 1 : 0, dt = column.reverse ? -1 : 1;
        A gc = grad_c_n[idx];
        A gvf = A(0), gvr = A(0), gbf = A(0), gbr = A(0);
        // walk the column's own time order backwards: step s = length-1 ... 0 is time index t0 + s * dt;
        // r = length-1-s counts the backward steps done
        BackIn<A> ring[D];
#pragma unroll
        for (int j = 0; j < D; ++j) {
            const i64 s = length - 1 - j;
            if (s >= 0) {
                ring[j] = load_back<T, A>(grad_h, u, x, c0, c_all, mask_pad, s, t0 + s * dt, dt, idx, batch, cols,
                                          k, scale_x, column);
            }
        }
        for (i64 r0 = 0; r0 < length; r0 += D) {
#pragma unroll
            for (int j = 0; j < D; ++j) {
                const i64 s = length - 1 - (r0 + j);
                if (s < 0) break;
                const i64 t = t0 + s * dt;
                const BackIn<A> cur = ring[j];
                if (s - D >= 0) {
                    ring[j] = load_back<T, A>(grad_h, u, x, c0, c_all, mask_pad, s - D, t - D * dt, dt, idx, batch,
                                              cols, k, scale_x, column);
                }
                const i64 o = t * column.state_step + column.state_offset;
                const i64 ub = t * column.u_step + column.u_offset;
                if (cur.in.pad) {  // c_t = c_{t-1}, h_t = 0: the state gradient passes through, inputs get none
                    for (int q = 0; q < k; ++q) store<T, A>(grad_u, ub + q * cols, A(0));
                    if (grad_x) store<T, A>(grad_x, o, A(0));
                    continue;
                }
                const SruStepGrads<A> g = backward_step<A>(
                    weight_c != nullptr, cur.in.u0, cur.in.u1, cur.in.u2, cur.in.xp, column.vf, column.vr, column.bf,
                    column.br, column.m, has_skip, use_tanh != 0, cur.c_prev, cur.gh, gc, gvf, gvr, gbf, gbr);
                store<T, A>(grad_u, ub, g.u0);
                store<T, A>(grad_u, ub + cols, g.u1);
                store<T, A>(grad_u, ub + 2 * cols, g.u2);
                if (k == 4) store<T, A>(grad_u, ub + 3 * cols, g.xp);
                if (grad_x) store<T, A>(grad_x, o, scale_x * g.xp);
            }
        }
        grad_c0[idx] = gc;
        if (grad_wc_part) {
            grad_wc_part[idx] = gvf;
            grad_wc_part[total + idx] = gvr;
        }
        grad_bias_part[idx] = gbf;
        grad_bias_part[total + idx] = gbr;
    }
}

}  // namespace kernels
}  // namespace parrnn

// ---- extern "C" instantiations (one per storage type) ------------------------------------------------------------

#define PARRNN_FWD_PARAMS(T, A)                                                                               \
    const T *u, const T *x, const A *weight_c, const A *bias, const A *c0, const unsigned char *mask_pad,      \
        const A *drop_mask, T *h, T *c_n, A *c_all, long long length, long long batch, long long cols, int k, \
        int bidirectional, int use_tanh, A scale_x
#define PARRNN_FWD_ARGS \
    u, x, weight_c, bias, c0, mask_pad, drop_mask, h, c_n, c_all, length, batch, cols, k, bidirectional, use_tanh, scale_x

#define PARRNN_BWD_PARAMS(T, A)                                                                               \
    const T *grad_h, const A *grad_c_n, const T *u, const T *x, const A *weight_c, const A *bias, const A *c0, \
        const unsigned char *mask_pad, const A *drop_mask, const A *c_all, T *grad_u, T *grad_x,              \
        A *grad_wc_part, A *grad_bias_part, A *grad_c0, long long length, long long batch, long long cols,    \
        int k, int bidirectional, int use_tanh, A scale_x
#define PARRNN_BWD_ARGS                                                                                     \
    grad_h, grad_c_n, u, x, weight_c, bias, c0, mask_pad, drop_mask, c_all, grad_u, grad_x, grad_wc_part,   \
        grad_bias_part, grad_c0, length, batch, cols, k, bidirectional, use_tanh, scale_x

#define PARRNN_INSTANTIATE(SUFFIX, T, A)                                                                      \
    extern "C" __global__ void __launch_bounds__(256) sru_forward_##SUFFIX(PARRNN_FWD_PARAMS(T, A)) {       \
        parrnn::kernels::sru_forward<T, A>(PARRNN_FWD_ARGS);                                                  \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(256) sru_backward_##SUFFIX(PARRNN_BWD_PARAMS(T, A)) {      \
        parrnn::kernels::sru_backward<T, A>(PARRNN_BWD_ARGS);                                                 \
    }                                                                                                         \
    PARRNN_HOST_ENTRY(sru_forward_##SUFFIX, (PARRNN_FWD_PARAMS(T, A)), (PARRNN_FWD_ARGS))                    \
    PARRNN_HOST_ENTRY(sru_backward_##SUFFIX, (PARRNN_BWD_PARAMS(T, A)), (PARRNN_BWD_ARGS))

// All storage types, or the one named by -DPARRNN_ONLY_<SUFFIX> (sru_storage.cuh).
PARRNN_FOR_EACH_STORAGE_TYPE(PARRNN_INSTANTIATE)
