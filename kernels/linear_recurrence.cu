// Sequential CUDA kernels of the diagonal linear recurrence h_t = a_t * h_{t-1} + b_t (parrnn/ops/linear_recurrence,
// backend "sequential" on CUDA tensors): one thread per column, the time loop inside, forward and backward.
//
// Layouts (row-major, contiguous, 64-bit indices; L steps, N batch rows, C columns, NC = N * C):
//   a, b, h, grad_h, grad_a, grad_b (L, N, C) storage T      h0, h_n, grad_h_n, grad_h0 (N, C) arithmetic A
//   lengths (N,) long long or null (steps t >= lengths[n] are identity steps with output 0)
// h0 null means zeros. A column processes s = 0 .. L-1 at time t = s (t = L-1-s with reverse); neighbouring threads
// own neighbouring columns, so a warp's loads of one step are one coalesced segment. The per-step math is
// parrnn::linrec::forward_step / backward_step (linear_recurrence_step.cuh, shared with the CPU backend).
//
// Storage T in {float, double, __half, __nv_bfloat16}, arithmetic float (double for double). Kernels are extern "C"
// linrec_{forward,backward}_{f32,f64,f16,bf16}. No shared memory, barriers or warp intrinsics: the file also compiles
// as plain C++ behind host_shim.h, and the CPU tests run these very kernels (tests/ops/test_linear_recurrence.py).

#include "linear_recurrence_step.cuh"
#include "sru_storage.cuh"

namespace parrnn {
namespace linrec_kernels {

typedef long long i64;
using storage::load;
using storage::store;

__device__ __forceinline__ i64 time_of(i64 s, int reverse, i64 length) { return reverse ? length - 1 - s : s; }

template <typename T, typename A>
__device__ __forceinline__ void forward(const T* __restrict__ a, const T* __restrict__ b, const A* __restrict__ h0,
                                        const i64* __restrict__ lengths, T* __restrict__ h, A* __restrict__ h_n,
                                        i64 length, i64 batch, i64 cols, int reverse) {
    const i64 nc = batch * cols;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    for (i64 idx = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); idx < nc; idx += stride) {
        const i64 valid = lengths ? lengths[idx / cols] : length;
        A state = h0 ? h0[idx] : A(0);
#pragma unroll 4
        for (i64 s = 0; s < length; ++s) {
            const i64 t = time_of(s, reverse, length);
            const i64 o = t * nc + idx;
            const A out = linrec::forward_step<A>(load<T, A>(a, o), load<T, A>(b, o), t >= valid, state);
            store<T, A>(h, o, out);
        }
        h_n[idx] = state;
    }
}

template <typename T, typename A>
__device__ __forceinline__ void backward(const T* __restrict__ grad_h, const A* __restrict__ grad_h_n,
                                         const T* __restrict__ a, const T* __restrict__ h, const A* __restrict__ h0,
                                         const i64* __restrict__ lengths, T* __restrict__ grad_a,
                                         T* __restrict__ grad_b, A* __restrict__ grad_h0, i64 length, i64 batch,
                                         i64 cols, int reverse) {
    const i64 nc = batch * cols;
    const i64 stride = i64(blockDim.x) * i64(gridDim.x);
    for (i64 idx = i64(blockIdx.x) * i64(blockDim.x) + i64(threadIdx.x); idx < nc; idx += stride) {
        const i64 valid = lengths ? lengths[idx / cols] : length;
        const A initial = h0 ? h0[idx] : A(0);
        A g = grad_h_n[idx];
#pragma unroll 2  // 4 spills registers in the float64 variant (sm_80)
        for (i64 s = length - 1; s >= 0; --s) {
            const i64 t = time_of(s, reverse, length);
            const i64 o = t * nc + idx;
            // h_{t-1}: the previous processing step's output, or h0 before the first valid step
            const i64 tp = time_of(s - 1, reverse, length);
            const A h_prev = (s == 0 || tp >= valid) ? initial : load<T, A>(h, tp * nc + idx);
            const linrec::StepGrads<A> r =
                linrec::backward_step<A>(load<T, A>(a, o), load<T, A>(grad_h, o), h_prev, t >= valid, g);
            store<T, A>(grad_a, o, r.a);
            store<T, A>(grad_b, o, r.b);
        }
        grad_h0[idx] = g;
    }
}

}  // namespace linrec_kernels
}  // namespace parrnn

// ---- extern "C" instantiations (one per storage type) ------------------------------------------------------------

#define PARRNN_LINREC_FWD_PARAMS(T, A)                                                                  \
    const T *a, const T *b, const A *h0, const long long *lengths, T *h, A *h_n, long long length,     \
        long long batch, long long cols, int reverse
#define PARRNN_LINREC_FWD_ARGS a, b, h0, lengths, h, h_n, length, batch, cols, reverse
#define PARRNN_LINREC_BWD_PARAMS(T, A)                                                                  \
    const T *grad_h, const A *grad_h_n, const T *a, const T *h, const A *h0, const long long *lengths, \
        T *grad_a, T *grad_b, A *grad_h0, long long length, long long batch, long long cols, int reverse
#define PARRNN_LINREC_BWD_ARGS \
    grad_h, grad_h_n, a, h, h0, lengths, grad_a, grad_b, grad_h0, length, batch, cols, reverse

#define PARRNN_LINREC_INSTANTIATE(SUFFIX, T, A)                                                              \
    extern "C" __global__ void __launch_bounds__(256) linrec_forward_##SUFFIX(PARRNN_LINREC_FWD_PARAMS(T, A)) { \
        parrnn::linrec_kernels::forward<T, A>(PARRNN_LINREC_FWD_ARGS);                                       \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(256) linrec_backward_##SUFFIX(PARRNN_LINREC_BWD_PARAMS(T, A)) { \
        parrnn::linrec_kernels::backward<T, A>(PARRNN_LINREC_BWD_ARGS);                                      \
    }                                                                                                        \
    PARRNN_HOST_ENTRY(linrec_forward_##SUFFIX, (PARRNN_LINREC_FWD_PARAMS(T, A)), (PARRNN_LINREC_FWD_ARGS))  \
    PARRNN_HOST_ENTRY(linrec_backward_##SUFFIX, (PARRNN_LINREC_BWD_PARAMS(T, A)), (PARRNN_LINREC_BWD_ARGS))

PARRNN_FOR_EACH_STORAGE_TYPE(PARRNN_LINREC_INSTANTIATE)
