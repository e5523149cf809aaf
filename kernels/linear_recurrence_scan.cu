// Time-parallel chunked scan of the diagonal linear recurrence h_t = a_t * h_{t-1} + b_t (parrnn/ops/linear_recurrence,
// backend "scan" on CUDA tensors): forward and backward, three kernels each.
//
// A column's L steps, in processing order s (t = s, or t = L-1-s with reverse), are cut into n_chunks chunks of
// chunk_len steps. With (A_k, B_k) the composition of chunk k's affine step maps (linear_recurrence_step.cuh):
//
//   forward   1. reduce : (A_k, B_k) for k = 0 .. n-2                         one thread per (chunk, column)
//             2. carry  : carry_0 = h0, carry_{k+1} = A_k carry_k + B_k       one thread per column
//             3. apply  : forward_step over chunk k from carry_k: h (h_n from the last chunk)
//                                                                             one thread per (chunk, column)
//   backward  the same on the gradients, walking from the end: chunk k holds the steps r = k*chunk_len ..
//             counted from the end (s = L-1-r); carry_0 = grad_h_n, carry_{k+1} = A_k carry_k + B_k with the maps of
//             g -> a g + a grad_h; apply runs backward_step: grad_a, grad_b (grad_h0 from the last chunk).
//
// Work O(L) per column, depth O(chunk_len + n_chunks). Maps are composed by multiplying and adding only, never the
// cumprod/cumsum closed form (it divides by products that underflow). The thread index maps to (chunk, column) with
// the column fastest, so a warp reads consecutive columns of one step. No shared memory, barrier or warp intrinsic:
// every thread is independent and the phases are ordered by the launches on one stream, so this file also compiles
// as plain C++ behind host_shim.h and the CPU tests run these very kernels. Keep it that way, or add a faithful CPU
// model of any phase that stops being independent.
//
// Layouts as kernels/linear_recurrence.cu; scratch agg_a, agg_b (n_chunks, N, C) and carry (n_chunks, N, C) in A.
// Kernels: extern "C" linrec_scan_{fwd,bwd}_{reduce,carry,apply}_{f32,f64,f16,bf16}.

#include "linear_recurrence_step.cuh"
#include "sru_storage.cuh"

namespace parrnn {
namespace linrec_scan_kernels {

typedef long long i64;
using scan::Affine;
using storage::load;
using storage::store;

struct Shape {
    i64 length, batch, cols, chunk_len, n_chunks;
    int reverse;
};

__device__ __forceinline__ i64 time_of(i64 s, const Shape& sh) { return sh.reverse ? sh.length - 1 - s : s; }
__device__ __forceinline__ i64 valid_steps(const i64* lengths, i64 col, const Shape& sh) {
    return lengths ? lengths[col / sh.cols] : sh.length;
}

// ---- forward -----------------------------------------------------------------------------------------------------

template <typename T, typename A>
__device__ __forceinline__ void fwd_reduce(const T* __restrict__ a, const T* __restrict__ b,
                                           const i64* __restrict__ lengths, A* __restrict__ agg_a,
                                           A* __restrict__ agg_b, const Shape sh) {
    const i64 nc = sh.batch * sh.cols, total = (sh.n_chunks - 1) * nc;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    for (i64 gid = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); gid < total; gid += stride) {
        const i64 k = gid / nc, col = gid - k * nc;
        const i64 valid = valid_steps(lengths, col, sh);
        Affine<A> m = scan::identity<A>();
        const i64 end = scan::chunk_end(k, sh.chunk_len, sh.length);
        for (i64 s = scan::chunk_begin(k, sh.chunk_len); s < end; ++s) {
            const i64 t = time_of(s, sh), o = t * nc + col;
            linrec::fold_forward<A>(load<T, A>(a, o), load<T, A>(b, o), t >= valid, m);
        }
        agg_a[gid] = m.a;
        agg_b[gid] = m.b;
    }
}

// Carries of either direction: carry_0 = initial (null: zeros), carry_{k+1} = (A_k, B_k) applied to carry_k.
template <typename A>
__device__ __forceinline__ void carry_pass(const A* __restrict__ initial, const A* __restrict__ agg_a,
                                           const A* __restrict__ agg_b, A* __restrict__ carry, const Shape sh) {
    const i64 nc = sh.batch * sh.cols;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    for (i64 col = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); col < nc; col += stride) {
        A c = initial ? initial[col] : A(0);
        carry[col] = c;
        for (i64 k = 0; k + 1 < sh.n_chunks; ++k) {
            c = scan::apply(Affine<A>{agg_a[k * nc + col], agg_b[k * nc + col]}, c);
            carry[(k + 1) * nc + col] = c;
        }
    }
}

template <typename T, typename A>
__device__ __forceinline__ void fwd_apply(const T* __restrict__ a, const T* __restrict__ b,
                                          const i64* __restrict__ lengths, const A* __restrict__ carry,
                                          T* __restrict__ h, A* __restrict__ h_n, const Shape sh) {
    const i64 nc = sh.batch * sh.cols, total = sh.n_chunks * nc;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    for (i64 gid = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); gid < total; gid += stride) {
        const i64 k = gid / nc, col = gid - k * nc;
        const i64 valid = valid_steps(lengths, col, sh);
        A state = carry[gid];
        const i64 end = scan::chunk_end(k, sh.chunk_len, sh.length);
        for (i64 s = scan::chunk_begin(k, sh.chunk_len); s < end; ++s) {
            const i64 t = time_of(s, sh), o = t * nc + col;
            store<T, A>(h, o, linrec::forward_step<A>(load<T, A>(a, o), load<T, A>(b, o), t >= valid, state));
        }
        if (k == sh.n_chunks - 1) h_n[col] = state;
    }
}

// ---- backward (chunks count steps from the end: processing step s = L-1-r) ----------------------------------------

template <typename T, typename A>
__device__ __forceinline__ void bwd_reduce(const T* __restrict__ grad_h, const T* __restrict__ a,
                                           const i64* __restrict__ lengths, A* __restrict__ agg_a,
                                           A* __restrict__ agg_b, const Shape sh) {
    const i64 nc = sh.batch * sh.cols, total = (sh.n_chunks - 1) * nc;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    for (i64 gid = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); gid < total; gid += stride) {
        const i64 k = gid / nc, col = gid - k * nc;
        const i64 valid = valid_steps(lengths, col, sh);
        Affine<A> m = scan::identity<A>();
        const i64 end = scan::chunk_end(k, sh.chunk_len, sh.length);
        for (i64 r = scan::chunk_begin(k, sh.chunk_len); r < end; ++r) {
            const i64 t = time_of(sh.length - 1 - r, sh), o = t * nc + col;
            linrec::fold_backward<A>(load<T, A>(a, o), load<T, A>(grad_h, o), t >= valid, m);
        }
        agg_a[gid] = m.a;
        agg_b[gid] = m.b;
    }
}

template <typename T, typename A>
__device__ __forceinline__ void bwd_apply(const T* __restrict__ grad_h, const T* __restrict__ a,
                                          const T* __restrict__ h, const A* __restrict__ h0,
                                          const i64* __restrict__ lengths, const A* __restrict__ carry,
                                          T* __restrict__ grad_a, T* __restrict__ grad_b, A* __restrict__ grad_h0,
                                          const Shape sh) {
    const i64 nc = sh.batch * sh.cols, total = sh.n_chunks * nc;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    for (i64 gid = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); gid < total; gid += stride) {
        const i64 k = gid / nc, col = gid - k * nc;
        const i64 valid = valid_steps(lengths, col, sh);
        const A initial = h0 ? h0[col] : A(0);
        A g = carry[gid];
        const i64 end = scan::chunk_end(k, sh.chunk_len, sh.length);
        for (i64 r = scan::chunk_begin(k, sh.chunk_len); r < end; ++r) {
            const i64 s = sh.length - 1 - r;
            const i64 t = time_of(s, sh), o = t * nc + col;
            const i64 tp = time_of(s - 1, sh);
            const A h_prev = (s == 0 || tp >= valid) ? initial : load<T, A>(h, tp * nc + col);
            const linrec::StepGrads<A> q =
                linrec::backward_step<A>(load<T, A>(a, o), load<T, A>(grad_h, o), h_prev, t >= valid, g);
            store<T, A>(grad_a, o, q.a);
            store<T, A>(grad_b, o, q.b);
        }
        if (k == sh.n_chunks - 1) grad_h0[col] = g;
    }
}

}  // namespace linrec_scan_kernels
}  // namespace parrnn

// ---- extern "C" instantiations -------------------------------------------------------------------------------------

#define PARRNN_LS_SHAPE                                                                                        \
    long long length, long long batch, long long cols, long long chunk_len, long long n_chunks, int reverse
#define PARRNN_LS_MAKE_SHAPE \
    parrnn::linrec_scan_kernels::Shape { length, batch, cols, chunk_len, n_chunks, reverse }
#define PARRNN_LS_ARGS_SHAPE length, batch, cols, chunk_len, n_chunks, reverse

#define PARRNN_LS_FWD_REDUCE_PARAMS(T, A) \
    const T *a, const T *b, const long long *lengths, A *agg_a, A *agg_b, PARRNN_LS_SHAPE
#define PARRNN_LS_FWD_REDUCE_ARGS a, b, lengths, agg_a, agg_b, PARRNN_LS_ARGS_SHAPE
#define PARRNN_LS_CARRY_PARAMS(T, A) const A *initial, const A *agg_a, const A *agg_b, A *carry, PARRNN_LS_SHAPE
#define PARRNN_LS_CARRY_ARGS initial, agg_a, agg_b, carry, PARRNN_LS_ARGS_SHAPE
#define PARRNN_LS_FWD_APPLY_PARAMS(T, A) \
    const T *a, const T *b, const long long *lengths, const A *carry, T *h, A *h_n, PARRNN_LS_SHAPE
#define PARRNN_LS_FWD_APPLY_ARGS a, b, lengths, carry, h, h_n, PARRNN_LS_ARGS_SHAPE
#define PARRNN_LS_BWD_REDUCE_PARAMS(T, A) \
    const T *grad_h, const T *a, const long long *lengths, A *agg_a, A *agg_b, PARRNN_LS_SHAPE
#define PARRNN_LS_BWD_REDUCE_ARGS grad_h, a, lengths, agg_a, agg_b, PARRNN_LS_ARGS_SHAPE
#define PARRNN_LS_BWD_APPLY_PARAMS(T, A)                                                                    \
    const T *grad_h, const T *a, const T *h, const A *h0, const long long *lengths, const A *carry,        \
        T *grad_a, T *grad_b, A *grad_h0, PARRNN_LS_SHAPE
#define PARRNN_LS_BWD_APPLY_ARGS \
    grad_h, a, h, h0, lengths, carry, grad_a, grad_b, grad_h0, PARRNN_LS_ARGS_SHAPE

#define PARRNN_LS_KERNEL(NAME, SUFFIX, T, A, PARAMS, BODY, ARGS)                                   \
    extern "C" __global__ void __launch_bounds__(256) NAME##_##SUFFIX(PARAMS(T, A)) { BODY; }      \
    PARRNN_HOST_ENTRY(NAME##_##SUFFIX, (PARAMS(T, A)), (ARGS))

#define PARRNN_LS_INSTANTIATE(SUFFIX, T, A)                                                                     \
    PARRNN_LS_KERNEL(linrec_scan_fwd_reduce, SUFFIX, T, A, PARRNN_LS_FWD_REDUCE_PARAMS,                         \
                     (parrnn::linrec_scan_kernels::fwd_reduce<T, A>(a, b, lengths, agg_a, agg_b,                 \
                                                                    PARRNN_LS_MAKE_SHAPE)),                      \
                     PARRNN_LS_FWD_REDUCE_ARGS)                                                                  \
    PARRNN_LS_KERNEL(linrec_scan_fwd_carry, SUFFIX, T, A, PARRNN_LS_CARRY_PARAMS,                               \
                     (parrnn::linrec_scan_kernels::carry_pass<A>(initial, agg_a, agg_b, carry, PARRNN_LS_MAKE_SHAPE)), \
                     PARRNN_LS_CARRY_ARGS)                                                                       \
    PARRNN_LS_KERNEL(linrec_scan_fwd_apply, SUFFIX, T, A, PARRNN_LS_FWD_APPLY_PARAMS,                           \
                     (parrnn::linrec_scan_kernels::fwd_apply<T, A>(a, b, lengths, carry, h, h_n,                 \
                                                                   PARRNN_LS_MAKE_SHAPE)),                       \
                     PARRNN_LS_FWD_APPLY_ARGS)                                                                   \
    PARRNN_LS_KERNEL(linrec_scan_bwd_reduce, SUFFIX, T, A, PARRNN_LS_BWD_REDUCE_PARAMS,                         \
                     (parrnn::linrec_scan_kernels::bwd_reduce<T, A>(grad_h, a, lengths, agg_a, agg_b,            \
                                                                    PARRNN_LS_MAKE_SHAPE)),                      \
                     PARRNN_LS_BWD_REDUCE_ARGS)                                                                  \
    PARRNN_LS_KERNEL(linrec_scan_bwd_carry, SUFFIX, T, A, PARRNN_LS_CARRY_PARAMS,                               \
                     (parrnn::linrec_scan_kernels::carry_pass<A>(initial, agg_a, agg_b, carry, PARRNN_LS_MAKE_SHAPE)), \
                     PARRNN_LS_CARRY_ARGS)                                                                       \
    PARRNN_LS_KERNEL(linrec_scan_bwd_apply, SUFFIX, T, A, PARRNN_LS_BWD_APPLY_PARAMS,                           \
                     (parrnn::linrec_scan_kernels::bwd_apply<T, A>(grad_h, a, h, h0, lengths, carry, grad_a,     \
                                                                   grad_b, grad_h0, PARRNN_LS_MAKE_SHAPE)),      \
                     PARRNN_LS_BWD_APPLY_ARGS)

PARRNN_FOR_EACH_STORAGE_TYPE(PARRNN_LS_INSTANTIATE)
