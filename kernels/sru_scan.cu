// Time-parallel chunked scan for the linear (v1) SRU: forward and backward, three kernels each.
//
// A *column* is (batch row b, column col), idx = b * C + col, C = D * H; columns with col >= C/2 of a
// bidirectional layer run reversed in time. Each column's L steps, in the column's own time order s = 0..L-1
// (t = s, or t = L-1-s when reversed), are cut into n_chunks chunks of chunk_len steps. With (A_k, B_k) the
// composition of the affine step maps of chunk k (see sru_scan.cuh):
//
//   forward   1. reduce : (A_k, B_k) for k = 0 .. n-2                      one thread per (chunk, column)
//             2. carry  : carry_0 = c0, carry_{k+1} = A_k carry_k + B_k    one thread per column, loop over chunks
//             3. apply  : from carry_k, run sru_forward_step over chunk k: h, c_all (and c_n from the last chunk)
//                                                                          one thread per (chunk, column)
//   backward  the same in reverse: reduce chunks 1 .. n-1 walking s downwards, carry_{n-1} = grad_c_n,
//             carry_{k-1} = A_k carry_k + B_k, then apply sru_backward_step over each chunk from carry_k
//             (grad_u, grad_x, per-(chunk, column) partial bias gradients, and grad_c0 from chunk 0).
//
// Work O(L) per column (reduce + apply ~ 2 passes), depth O(chunk_len + n_chunks). The thread index maps to
// (chunk, column) with the column fastest, so a warp reads consecutive columns of one time step (coalesced).
// There is no shared memory, no barrier and no warp intrinsic: each thread of each kernel is independent and the
// phases are ordered by the launches on one stream. Hence, like kernels/sru_recurrence.cu, this file also
// compiles as plain C++ behind host_shim.h, and the CPU test suite runs these very kernels (parrnn/ops/host_launcher.py
// through parrnn/ops/sru/scan_cuda.py `make_host_launcher`, tests/ops/sru/test_scan.py). Keep it that way, or add a faithful CPU model of any phase that stops being independent.
//
// Layouts (row-major, contiguous; L sequence length, N batch, K = 3 or 4):
//   u (L, N, K, C)   x, h, grad_h, grad_x (L, N, C)   c_all (L, N, C) in A     mask_pad (L, N) bytes (1 = pad)
//   bias (2, C), c0, drop_mask, grad_c_n, grad_c0 (N, C) in A    c_n (N, C) in T
//   agg_a, agg_b, carry (n_chunks, N, C) in A (scratch)    grad_bias_part (2, n_chunks, N, C) in A
// Storage T in {float, double, __half, __nv_bfloat16}; arithmetic A = float (double for double). 64-bit indices.
// Kernels are extern "C" named sru_scan_{fwd,bwd}_{reduce,carry,apply}_{f32,f64,f16,bf16}.

#include "sru_storage.cuh"
#include "sru_scan.cuh"

namespace parrnn {
namespace scan_kernels {

typedef long long i64;
using scan::Affine;

using storage::load;  // storage <-> arithmetic conversions (sru_storage.cuh)
using storage::store_as;

// Launch-wide constants.
struct Shape {
    i64 length, batch, cols, chunk_len, n_chunks;
    int k, bidirectional;
};

// One column's view of one time step.
template <typename A>
struct Step {
    A u0, u1, u2, xp;
    bool pad;
    i64 o;   // (t, b, col) offset in (L, N, C)
    i64 ub;  // offset of u0 in (L, N, K, C)
};

template <typename T, typename A>
__device__ __forceinline__ Step<A> load_step(const T* u, const T* x, const unsigned char* mask_pad, i64 t, i64 b,
                                             i64 col, const Shape& sh, A scale_x) {
    Step<A> s;
    const i64 row = t * sh.batch + b;
    s.o = row * sh.cols + col;
    s.ub = row * sh.k * sh.cols + col;
    s.u0 = load<T, A>(u, s.ub);
    s.u1 = load<T, A>(u, s.ub + sh.cols);
    s.u2 = load<T, A>(u, s.ub + 2 * sh.cols);
    s.xp = sh.k == 4 ? load<T, A>(u, s.ub + 3 * sh.cols) : x ? scale_x * load<T, A>(x, s.o) : A(0);
    s.pad = mask_pad ? mask_pad[row] != 0 : false;
    return s;
}

__device__ __forceinline__ i64 time_of(i64 s, bool reverse, i64 length) { return reverse ? length - 1 - s : s; }

// ---- forward -----------------------------------------------------------------------------------------------------

// Phase 1: (A_k, B_k) of chunks k = 0 .. n_chunks-2 (the last chunk's map is never needed).
template <typename T, typename A>
__device__ __forceinline__ void fwd_reduce(const T* __restrict__ u, const unsigned char* __restrict__ mask_pad,
                                           const A* __restrict__ bias, A* __restrict__ agg_a,
                                           A* __restrict__ agg_b, const Shape sh) {
    const i64 nc = sh.batch * sh.cols;
    const i64 total = (sh.n_chunks - 1) * nc;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    for (i64 i = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); i < total; i += stride) {
        const i64 chunk = i / nc, idx = i - chunk * nc;
        const i64 b = idx / sh.cols, col = idx - b * sh.cols;
        const bool reverse = sh.bidirectional && col >= sh.cols / 2;
        const A bf = bias[col];
        Affine<A> acc = scan::identity<A>();
        const i64 end = scan::chunk_end(chunk, sh.chunk_len, sh.length);
        for (i64 s = scan::chunk_begin(chunk, sh.chunk_len); s < end; ++s) {
            const i64 row = time_of(s, reverse, sh.length) * sh.batch + b;
            if (mask_pad && mask_pad[row]) continue;  // identity map
            const i64 ub = row * sh.k * sh.cols + col;
            acc = scan::compose(scan::forward_coeffs<A>(load<T, A>(u, ub), load<T, A>(u, ub + sh.cols), bf), acc);
        }
        agg_a[i] = acc.a;
        agg_b[i] = acc.b;
    }
}

// Phase 2: carry-in state of every chunk, per column (a sequential scan over the chunks' maps).
template <typename A>
__device__ __forceinline__ void fwd_carry(const A* __restrict__ c0, const A* __restrict__ agg_a,
                                          const A* __restrict__ agg_b, A* __restrict__ carry, const Shape sh) {
    const i64 nc = sh.batch * sh.cols;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    for (i64 idx = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); idx < nc; idx += stride) {
        A c = c0[idx];
        for (i64 chunk = 0; chunk < sh.n_chunks; ++chunk) {
            carry[chunk * nc + idx] = c;
            if (chunk + 1 < sh.n_chunks) c = scan::apply(Affine<A>{agg_a[chunk * nc + idx], agg_b[chunk * nc + idx]}, c);
        }
    }
}

// Phase 3: rerun each chunk from its carry-in with the fused step: h, c_all, and c_n from the last chunk.
template <typename T, typename A>
__device__ __forceinline__ void fwd_apply(const T* __restrict__ u, const T* __restrict__ x,
                                          const A* __restrict__ bias, const A* __restrict__ carry,
                                          const unsigned char* __restrict__ mask_pad,
                                          const A* __restrict__ drop_mask, T* __restrict__ h, T* __restrict__ c_n,
                                          A* __restrict__ c_all, const Shape sh, int use_tanh, A scale_x) {
    const i64 nc = sh.batch * sh.cols;
    const i64 total = sh.n_chunks * nc;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    const bool has_skip = sh.k == 4 || x != nullptr;
    for (i64 i = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); i < total; i += stride) {
        const i64 chunk = i / nc, idx = i - chunk * nc;
        const i64 b = idx / sh.cols, col = idx - b * sh.cols;
        const bool reverse = sh.bidirectional && col >= sh.cols / 2;
        const A bf = bias[col], br = bias[sh.cols + col];
        const A m = drop_mask ? drop_mask[idx] : A(1);
        A c = carry[i];
        const i64 end = scan::chunk_end(chunk, sh.chunk_len, sh.length);
        for (i64 s = scan::chunk_begin(chunk, sh.chunk_len); s < end; ++s) {
            const Step<A> st = load_step<T, A>(u, x, mask_pad, time_of(s, reverse, sh.length), b, col, sh, scale_x);
            if (st.pad) {  // c carried unchanged, h = 0
                store_as(h + st.o, A(0));
            } else {
                store_as(h + st.o, sru_forward_step<A, false>(st.u0, st.u1, st.u2, st.xp, A(0), A(0), bf, br, m,
                                                              has_skip, use_tanh != 0, c));
            }
            c_all[st.o] = c;
        }
        if (chunk == sh.n_chunks - 1) store_as(c_n + idx, c);
    }
}

// ---- backward ----------------------------------------------------------------------------------------------------

// c_{t-1} of step s of a column: c0 at s == 0, else c_all at the previous step of the column's time order.
template <typename A>
__device__ __forceinline__ A c_before(const A* c0, const A* c_all, i64 s, bool reverse, i64 b, i64 col, i64 idx,
                                      const Shape& sh) {
    if (s == 0) return c0[idx];
    return c_all[(time_of(s - 1, reverse, sh.length) * sh.batch + b) * sh.cols + col];
}

// Phase 1: maps of chunks k = 1 .. n_chunks-1, composed walking s downwards (chunk 0's map is never needed).
template <typename T, typename A>
__device__ __forceinline__ void bwd_reduce(const T* __restrict__ grad_h, const T* __restrict__ u,
                                           const T* __restrict__ x, const A* __restrict__ bias,
                                           const A* __restrict__ c0, const unsigned char* __restrict__ mask_pad,
                                           const A* __restrict__ drop_mask, const A* __restrict__ c_all,
                                           A* __restrict__ agg_a, A* __restrict__ agg_b, const Shape sh,
                                           int use_tanh, A scale_x) {
    const i64 nc = sh.batch * sh.cols;
    const i64 total = (sh.n_chunks - 1) * nc;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    const bool has_skip = sh.k == 4 || x != nullptr;
    for (i64 i = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); i < total; i += stride) {
        const i64 chunk = 1 + i / nc, idx = i % nc;
        const i64 b = idx / sh.cols, col = idx - b * sh.cols;
        const bool reverse = sh.bidirectional && col >= sh.cols / 2;
        const A bf = bias[col], br = bias[sh.cols + col];
        const A m = drop_mask ? drop_mask[idx] : A(1);
        Affine<A> acc = scan::identity<A>();
        const i64 begin = scan::chunk_begin(chunk, sh.chunk_len);
        for (i64 s = scan::chunk_end(chunk, sh.chunk_len, sh.length) - 1; s >= begin; --s) {
            const Step<A> st = load_step<T, A>(u, x, mask_pad, time_of(s, reverse, sh.length), b, col, sh, scale_x);
            if (st.pad) continue;  // identity map
            const A c_prev = c_before<A>(c0, c_all, s, reverse, b, col, idx, sh);
            acc = scan::compose(scan::backward_coeffs<A>(st.u0, st.u1, st.u2, st.xp, bf, br, m, has_skip,
                                                         use_tanh != 0, c_prev, load<T, A>(grad_h, st.o)),
                                acc);
        }
        agg_a[chunk * nc + idx] = acc.a;
        agg_b[chunk * nc + idx] = acc.b;
    }
}

// Phase 2: the gradient dL/dc arriving at the end of every chunk, per column, scanning chunks downwards.
template <typename A>
__device__ __forceinline__ void bwd_carry(const A* __restrict__ grad_c_n, const A* __restrict__ agg_a,
                                          const A* __restrict__ agg_b, A* __restrict__ carry, const Shape sh) {
    const i64 nc = sh.batch * sh.cols;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    for (i64 idx = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); idx < nc; idx += stride) {
        A g = grad_c_n[idx];
        for (i64 chunk = sh.n_chunks - 1; chunk >= 0; --chunk) {
            carry[chunk * nc + idx] = g;
            if (chunk > 0) g = scan::apply(Affine<A>{agg_a[chunk * nc + idx], agg_b[chunk * nc + idx]}, g);
        }
    }
}

// Phase 3: rerun each chunk's backward steps from its carry: grad_u, grad_x, partial bias grads, grad_c0.
template <typename T, typename A>
__device__ __forceinline__ void bwd_apply(const T* __restrict__ grad_h, const T* __restrict__ u,
                                          const T* __restrict__ x, const A* __restrict__ bias,
                                          const A* __restrict__ c0, const unsigned char* __restrict__ mask_pad,
                                          const A* __restrict__ drop_mask, const A* __restrict__ c_all,
                                          const A* __restrict__ carry, T* __restrict__ grad_u,
                                          T* __restrict__ grad_x, A* __restrict__ grad_bias_part,
                                          A* __restrict__ grad_c0, const Shape sh, int use_tanh, A scale_x) {
    const i64 nc = sh.batch * sh.cols;
    const i64 total = sh.n_chunks * nc;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    const bool has_skip = sh.k == 4 || x != nullptr;
    for (i64 i = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); i < total; i += stride) {
        const i64 chunk = i / nc, idx = i - chunk * nc;
        const i64 b = idx / sh.cols, col = idx - b * sh.cols;
        const bool reverse = sh.bidirectional && col >= sh.cols / 2;
        const A bf = bias[col], br = bias[sh.cols + col];
        const A m = drop_mask ? drop_mask[idx] : A(1);
        A gc = carry[i];
        A gvf = A(0), gvr = A(0), gbf = A(0), gbr = A(0);
        const i64 begin = scan::chunk_begin(chunk, sh.chunk_len);
        for (i64 s = scan::chunk_end(chunk, sh.chunk_len, sh.length) - 1; s >= begin; --s) {
            const Step<A> st = load_step<T, A>(u, x, mask_pad, time_of(s, reverse, sh.length), b, col, sh, scale_x);
            if (st.pad) {  // the state gradient passes through, inputs get none
                for (int j = 0; j < sh.k; ++j) store_as(grad_u + st.ub + j * sh.cols, A(0));
                if (grad_x) store_as(grad_x + st.o, A(0));
                continue;
            }
            const A c_prev = c_before<A>(c0, c_all, s, reverse, b, col, idx, sh);
            const SruStepGrads<A> g =
                sru_backward_step<A, false>(st.u0, st.u1, st.u2, st.xp, A(0), A(0), bf, br, m, has_skip,
                                            use_tanh != 0, c_prev, load<T, A>(grad_h, st.o), gc, gvf, gvr, gbf, gbr);
            store_as(grad_u + st.ub, g.u0);
            store_as(grad_u + st.ub + sh.cols, g.u1);
            store_as(grad_u + st.ub + 2 * sh.cols, g.u2);
            if (sh.k == 4) store_as(grad_u + st.ub + 3 * sh.cols, g.xp);
            if (grad_x) store_as(grad_x + st.o, scale_x * g.xp);
        }
        grad_bias_part[i] = gbf;
        grad_bias_part[total + i] = gbr;
        if (chunk == 0) grad_c0[idx] = gc;
    }
}

}  // namespace scan_kernels
}  // namespace parrnn

// ---- extern "C" instantiations (one set per storage type) ---------------------------------------------------------

#define PARRNN_SCAN_SHAPE_PARAMS \
    long long length, long long batch, long long cols, int k, int bidirectional, long long chunk_len, long long n_chunks
#define PARRNN_SCAN_SHAPE_ARGS length, batch, cols, k, bidirectional, chunk_len, n_chunks
#define PARRNN_SCAN_SHAPE parrnn::scan_kernels::Shape{length, batch, cols, chunk_len, n_chunks, k, bidirectional}

#define PARRNN_SCAN_FWD_REDUCE_PARAMS(T, A) \
    const T *u, const unsigned char *mask_pad, const A *bias, A *agg_a, A *agg_b, PARRNN_SCAN_SHAPE_PARAMS
#define PARRNN_SCAN_FWD_REDUCE_ARGS u, mask_pad, bias, agg_a, agg_b, PARRNN_SCAN_SHAPE_ARGS

#define PARRNN_SCAN_CARRY_PARAMS(A) const A *init, const A *agg_a, const A *agg_b, A *carry, PARRNN_SCAN_SHAPE_PARAMS
#define PARRNN_SCAN_CARRY_ARGS init, agg_a, agg_b, carry, PARRNN_SCAN_SHAPE_ARGS

#define PARRNN_SCAN_FWD_APPLY_PARAMS(T, A)                                                                    \
    const T *u, const T *x, const A *bias, const A *carry, const unsigned char *mask_pad, const A *drop_mask, \
        T *h, T *c_n, A *c_all, PARRNN_SCAN_SHAPE_PARAMS, int use_tanh, A scale_x
#define PARRNN_SCAN_FWD_APPLY_ARGS \
    u, x, bias, carry, mask_pad, drop_mask, h, c_n, c_all, PARRNN_SCAN_SHAPE_ARGS, use_tanh, scale_x

#define PARRNN_SCAN_BWD_REDUCE_PARAMS(T, A)                                                                     \
    const T *grad_h, const T *u, const T *x, const A *bias, const A *c0, const unsigned char *mask_pad,         \
        const A *drop_mask, const A *c_all, A *agg_a, A *agg_b, PARRNN_SCAN_SHAPE_PARAMS, int use_tanh, A scale_x
#define PARRNN_SCAN_BWD_REDUCE_ARGS \
    grad_h, u, x, bias, c0, mask_pad, drop_mask, c_all, agg_a, agg_b, PARRNN_SCAN_SHAPE_ARGS, use_tanh, scale_x

#define PARRNN_SCAN_BWD_APPLY_PARAMS(T, A)                                                                       \
    const T *grad_h, const T *u, const T *x, const A *bias, const A *c0, const unsigned char *mask_pad,          \
        const A *drop_mask, const A *c_all, const A *carry, T *grad_u, T *grad_x, A *grad_bias_part, A *grad_c0, \
        PARRNN_SCAN_SHAPE_PARAMS, int use_tanh, A scale_x
#define PARRNN_SCAN_BWD_APPLY_ARGS                                                                             \
    grad_h, u, x, bias, c0, mask_pad, drop_mask, c_all, carry, grad_u, grad_x, grad_bias_part, grad_c0,        \
        PARRNN_SCAN_SHAPE_ARGS, use_tanh, scale_x

#define PARRNN_SCAN_INSTANTIATE(SUFFIX, T, A)                                                                   \
    extern "C" __global__ void __launch_bounds__(256)                                                           \
        sru_scan_fwd_reduce_##SUFFIX(PARRNN_SCAN_FWD_REDUCE_PARAMS(T, A)) {                                     \
        parrnn::scan_kernels::fwd_reduce<T, A>(u, mask_pad, bias, agg_a, agg_b, PARRNN_SCAN_SHAPE);             \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(256) sru_scan_fwd_carry_##SUFFIX(PARRNN_SCAN_CARRY_PARAMS(A)) { \
        parrnn::scan_kernels::fwd_carry<A>(init, agg_a, agg_b, carry, PARRNN_SCAN_SHAPE);                       \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(256)                                                           \
        sru_scan_fwd_apply_##SUFFIX(PARRNN_SCAN_FWD_APPLY_PARAMS(T, A)) {                                       \
        parrnn::scan_kernels::fwd_apply<T, A>(u, x, bias, carry, mask_pad, drop_mask, h, c_n, c_all,            \
                                              PARRNN_SCAN_SHAPE, use_tanh, scale_x);                            \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(256)                                                           \
        sru_scan_bwd_reduce_##SUFFIX(PARRNN_SCAN_BWD_REDUCE_PARAMS(T, A)) {                                     \
        parrnn::scan_kernels::bwd_reduce<T, A>(grad_h, u, x, bias, c0, mask_pad, drop_mask, c_all, agg_a,       \
                                               agg_b, PARRNN_SCAN_SHAPE, use_tanh, scale_x);                    \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(256) sru_scan_bwd_carry_##SUFFIX(PARRNN_SCAN_CARRY_PARAMS(A)) { \
        parrnn::scan_kernels::bwd_carry<A>(init, agg_a, agg_b, carry, PARRNN_SCAN_SHAPE);                       \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(256)                                                           \
        sru_scan_bwd_apply_##SUFFIX(PARRNN_SCAN_BWD_APPLY_PARAMS(T, A)) {                                       \
        parrnn::scan_kernels::bwd_apply<T, A>(grad_h, u, x, bias, c0, mask_pad, drop_mask, c_all, carry,        \
                                              grad_u, grad_x, grad_bias_part, grad_c0, PARRNN_SCAN_SHAPE,       \
                                              use_tanh, scale_x);                                               \
    }                                                                                                           \
    PARRNN_HOST_ENTRY(sru_scan_fwd_reduce_##SUFFIX, (PARRNN_SCAN_FWD_REDUCE_PARAMS(T, A)),                      \
                      (PARRNN_SCAN_FWD_REDUCE_ARGS))                                                            \
    PARRNN_HOST_ENTRY(sru_scan_fwd_carry_##SUFFIX, (PARRNN_SCAN_CARRY_PARAMS(A)), (PARRNN_SCAN_CARRY_ARGS))     \
    PARRNN_HOST_ENTRY(sru_scan_fwd_apply_##SUFFIX, (PARRNN_SCAN_FWD_APPLY_PARAMS(T, A)),                        \
                      (PARRNN_SCAN_FWD_APPLY_ARGS))                                                             \
    PARRNN_HOST_ENTRY(sru_scan_bwd_reduce_##SUFFIX, (PARRNN_SCAN_BWD_REDUCE_PARAMS(T, A)),                      \
                      (PARRNN_SCAN_BWD_REDUCE_ARGS))                                                            \
    PARRNN_HOST_ENTRY(sru_scan_bwd_carry_##SUFFIX, (PARRNN_SCAN_CARRY_PARAMS(A)), (PARRNN_SCAN_CARRY_ARGS))     \
    PARRNN_HOST_ENTRY(sru_scan_bwd_apply_##SUFFIX, (PARRNN_SCAN_BWD_APPLY_PARAMS(T, A)),                        \
                      (PARRNN_SCAN_BWD_APPLY_ARGS))

// All storage types, or the one named by -DPARRNN_ONLY_<SUFFIX> (sru_storage.cuh).
PARRNN_FOR_EACH_STORAGE_TYPE(PARRNN_SCAN_INSTANTIATE)
