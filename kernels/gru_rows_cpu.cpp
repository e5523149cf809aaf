// Fused elementwise parts of one GRU step over many independent rows (SlicedRNN's CPU path; loaded by
// parrnn/ops/gru_rows/fused_cpu.py).
//
// The GEMMs (h @ W_hh^T before the forward step, d_gates @ W_hh after the backward step) stay in torch/MKL; each
// step's elementwise work, five torch ops forward and ten backward, is one pass here. Gate order r, z, n as in
// torch.nn.GRU:
//   r = sigmoid(gx_r + gh_r)   z = sigmoid(gx_z + gh_z)   n = tanh(gx_n + r * gh_n)   h' = n + z * (h - n)
// where gx = W_ih x + b_x, b_x = [b_ir + b_hr, b_iz + b_hz, b_in], and gh = W_hh h + [0, 0, b_hn].
//
// Layouts (row-major, 64-bit indexing), R = S * B rows, row r = s * B + b, hidden size H:
//   gx: row r starts at gx + s * gx_slice_stride + b * 3H (W_ih x without bias, read in place); b_x (3H)
//   gh (R, 3H): in: W_hh h (ignored when h_prev is null: the zero state needs no GEMM); out: [r, z, gh_n] with
//   gh_n = (W_hh h)_n + b_hn (saved for the backward); b_hn (H)
//   n_out, h_out, h_prev (R, H); h_prev null = the zero state
// Backward, per step: dh = dh_next (null: 0) + grad_out; writes (no output may alias an input)
//   d_gates (R, 4H) = [dn * r, dr, dz, dn]: columns 0:3H are the gradient of the hidden-side pre-activations gh
//                     in the order (n, r, z), columns H:4H that of the input-side ones gx in the order (r, z, n)
//   dh_z (R, H) = dh * z    (the caller adds d_gates[:, 0:3H] @ W_hh[(n, r, z)] to get the previous step's dh)
//
// Built as its own library (parrnn.ops.build.LazyLibrary "gru_rows_cpu"), with the same flag ladder as the SRU
// kernels; sigmoid is sru_step.cuh's (vectorizable float version on the host, libm for double), tanh is
// `gru_tanh` below.
#include "sru_step.cuh"

#include <cmath>
#include <cstdint>

namespace {

using i64 = int64_t;

// tanh of the candidate state n. double: libm. float: Eigen's rational minimax approximation (odd degree 13 over
// even degree 6, the one sru_step.cuh uses below |x| < 0.625) over the whole range |x| <= 7.905, about 1.6x faster
// per step than sru_step.cuh's tanh_ (which adds an exp and a division above 0.625), at an absolute error below
// 4e-7 (sru_step.cuh's: 1e-7). Branch-free and vectorizable; NaN propagates, the clamp makes large |x| (+-inf
// included) exactly +-1, and |x| < 0.0004 gives x.
template <typename T>
inline T gru_tanh(T x) {
    return std::tanh(x);
}

template <>
inline float gru_tanh<float>(float x) {
    return parrnn::detail::tanh_rational_(x);
}

// One row of the forward step; `restrict` (no aliasing) and inline math let the compiler vectorize the loop.
template <typename T, bool has_prev>
inline void forward_row(const T* __restrict__ x, const T* __restrict__ b_x, T* __restrict__ g,
                        const T* __restrict__ b_hn, T* __restrict__ n, const T* __restrict__ hp, T* __restrict__ h,
                        i64 hidden) {
    for (i64 j = 0; j < hidden; ++j) {
        const T r = parrnn::sigmoid(x[j] + b_x[j] + (has_prev ? g[j] : T(0)));
        const T z = parrnn::sigmoid(x[hidden + j] + b_x[hidden + j] + (has_prev ? g[hidden + j] : T(0)));
        const T gh_n = (has_prev ? g[2 * hidden + j] : T(0)) + b_hn[j];
        const T nj = gru_tanh(x[2 * hidden + j] + b_x[2 * hidden + j] + r * gh_n);
        g[j] = r;
        g[hidden + j] = z;
        g[2 * hidden + j] = gh_n;
        n[j] = nj;
        h[j] = has_prev ? nj + z * (hp[j] - nj) : nj - z * nj;
    }
}

template <typename T>
void gru_forward_step(i64 slices, i64 batch, i64 hidden, const T* gx, i64 gx_slice_stride, const T* b_x, T* gh,
                      const T* b_hn, T* n_out, const T* h_prev, T* h_out, int threads) {
    const i64 rows = slices * batch;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows * hidden >= (1 << 14))
    for (i64 row = 0; row < rows; ++row) {
        const T* x = gx + (row / batch) * gx_slice_stride + (row % batch) * 3 * hidden;
        T* g = gh + row * 3 * hidden;
        if (h_prev) {
            forward_row<T, true>(x, b_x, g, b_hn, n_out + row * hidden, h_prev + row * hidden, h_out + row * hidden,
                                 hidden);
        } else {  // the zero state: W_hh h = 0 and gh's incoming content is ignored
            forward_row<T, false>(x, b_x, g, b_hn, n_out + row * hidden, nullptr, h_out + row * hidden, hidden);
        }
    }
}

template <typename T, bool has_next, bool has_prev>
inline void backward_row(const T* __restrict__ dnext, const T* __restrict__ go, const T* __restrict__ g,
                         const T* __restrict__ n, const T* __restrict__ hp, T* __restrict__ dg,
                         T* __restrict__ dhz, i64 hidden) {
    for (i64 j = 0; j < hidden; ++j) {
        const T r = g[j], z = g[hidden + j], gh_n = g[2 * hidden + j], nj = n[j];
        const T dh = (has_next ? dnext[j] : T(0)) + go[j];
        const T dn = dh * (T(1) - z) * (T(1) - nj * nj);
        const T hj = has_prev ? hp[j] : T(0);
        dg[j] = dn * r;
        dg[hidden + j] = dn * gh_n * r * (T(1) - r);
        dg[2 * hidden + j] = dh * (hj - nj) * z * (T(1) - z);
        dg[3 * hidden + j] = dn;
        dhz[j] = dh * z;
    }
}

template <typename T>
void gru_backward_step(i64 rows, i64 hidden, const T* dh_next, const T* grad_out, const T* gh, const T* n_in,
                       const T* h_prev, T* d_gates, T* dh_z, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows * hidden >= (1 << 14))
    for (i64 row = 0; row < rows; ++row) {
        const i64 o = row * hidden, o3 = row * 3 * hidden, o4 = row * 4 * hidden;
        const T* dnext = dh_next ? dh_next + o : nullptr;
        const T* hp = h_prev ? h_prev + o : nullptr;
        if (dnext && hp) {
            backward_row<T, true, true>(dnext, grad_out + o, gh + o3, n_in + o, hp, d_gates + o4, dh_z + o, hidden);
        } else if (dnext) {
            backward_row<T, true, false>(dnext, grad_out + o, gh + o3, n_in + o, hp, d_gates + o4, dh_z + o, hidden);
        } else if (hp) {
            backward_row<T, false, true>(dnext, grad_out + o, gh + o3, n_in + o, hp, d_gates + o4, dh_z + o, hidden);
        } else {
            backward_row<T, false, false>(dnext, grad_out + o, gh + o3, n_in + o, hp, d_gates + o4, dh_z + o, hidden);
        }
    }
}

}  // namespace

#define PARRNN_GRU_EXPORT(T, SUFFIX)                                                                              \
    extern "C" void parrnn_gru_forward_step_##SUFFIX(i64 slices, i64 batch, i64 hidden, const T* gx,               \
                                                     i64 gx_slice_stride, const T* b_x, T* gh, const T* b_hn,      \
                                                     T* n_out, const T* h_prev, T* h_out, int threads) {           \
        gru_forward_step<T>(slices, batch, hidden, gx, gx_slice_stride, b_x, gh, b_hn, n_out, h_prev, h_out,      \
                            threads);                                                                              \
    }                                                                                                              \
    extern "C" void parrnn_gru_backward_step_##SUFFIX(i64 rows, i64 hidden, const T* dh_next, const T* grad_out,   \
                                                      const T* gh, const T* n_in, const T* h_prev, T* d_gates,     \
                                                      T* dh_z, int threads) {                                      \
        gru_backward_step<T>(rows, hidden, dh_next, grad_out, gh, n_in, h_prev, d_gates, dh_z, threads);          \
    }

PARRNN_GRU_EXPORT(float, f32)
PARRNN_GRU_EXPORT(double, f64)
