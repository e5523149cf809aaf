// Building blocks of the time-parallel chunked scan for the linear (v1) SRU, shared by the CUDA kernels
// (kernels/sru_scan.cu) and the CPU implementation (kernels/sru_scan_cpu.cpp).
//
// For v1 the gates do not depend on the state, so one step of a column is an affine map of the state:
//
//   forward    c_t       = a_t * c_{t-1} + b_t       a_t = f_t = sigmoid(u1_t + b_f),  b_t = (1 - f_t) * u0_t
//   backward   g_{t-1}   = a_t * g_t     + e_t       g_t = dL/dc_t arriving from later steps (and c_n),
//                                                    e_t = f_t * (dL/dh_t * dh_t/dc_t)    (the local part)
//   padded step (mask_pad): a = 1, b = e = 0          (c and its gradient pass through unchanged)
//
// Affine maps compose associatively, (a2, b2) o (a1, b1) = (a2 * a1, a2 * b1 + b2): "apply 1 then 2". The scan
// only ever multiplies and adds such pairs -- it never divides by a running product (the closed-form
// cumprod/cumsum trick does, and those products underflow to 0 at long L, giving inf/NaN). Every |a| <= 1, so
// running products shrink towards 0 harmlessly and every intermediate value stays bounded by the inputs.
//
// The per-step coefficients are computed by calling the recurrence's own step functions from sru_step.cuh
// (the single source of the math): b_t is sru_forward_step from state 0, e_t is sru_backward_step with an
// incoming gradient of 0. The "fix-up" passes run sru_forward_step / sru_backward_step directly. Every call uses
// the no-peephole step (`peephole = false`): v1 has no v * c terms, and computing them with v = 0 would turn an
// infinite state into NaN (0 * inf) where the sequential kernels and the reference stay finite or infinite.
#pragma once

#include "sru_step.cuh"

namespace parrnn {
namespace scan {

// The affine map x -> a * x + b of one step or of a run of steps.
template <typename A>
struct Affine {
    A a, b;
};

template <typename A>
PARRNN_HD Affine<A> identity() {
    return Affine<A>{A(1), A(0)};
}

// `later` o `earlier`: first apply `earlier`, then `later`.
template <typename A>
PARRNN_HD Affine<A> compose(const Affine<A>& later, const Affine<A>& earlier) {
    return Affine<A>{later.a * earlier.a, later.a * earlier.b + later.b};
}

// A run's `a` is a product of forget gates, each > 0, which underflows to 0 over a long run. The sequential
// recurrence keeps an infinite state infinite through such a run (inf * f = inf at every step), so an infinite `x`
// passes through a = 0 instead of becoming NaN (0 * inf). `x - x != 0` tests "x is +-inf or NaN" without <cmath>.
template <typename A>
PARRNN_HD A apply(const Affine<A>& m, A x) {
    return m.a == A(0) && !(x - x == A(0)) ? x + m.b : m.a * x + m.b;
}

// Forward coefficients of one (unpadded) v1 step: a = f, b = (1 - f) * u0 (= sru_forward_step from c = 0).
template <typename A>
PARRNN_HD Affine<A> forward_coeffs(A u0, A u1, A bf) {
    A b = A(0);
    (void)sru_forward_step<A, false>(u0, u1, A(0), A(0), A(0), A(0), bf, A(0), A(1), false, false, b);
    return Affine<A>{sigmoid<A>(u1 + bf), b};
}

// Backward coefficients of one (unpadded) v1 step, in the reverse direction: g_{t-1} = a * g_t + e with
// a = f and e = sru_backward_step's outgoing state gradient for an incoming one of 0. `c_prev` is c_{t-1},
// `gh` is dL/dh_t.
template <typename A>
PARRNN_HD Affine<A> backward_coeffs(A u0, A u1, A u2, A xp, A bf, A br, A m, bool has_skip, bool use_tanh,
                                    A c_prev, A gh) {
    A e = A(0), gvf = A(0), gvr = A(0), gbf = A(0), gbr = A(0);
    (void)sru_backward_step<A, false>(u0, u1, u2, xp, A(0), A(0), bf, br, m, has_skip, use_tanh, c_prev, gh, e, gvf,
                                      gvr, gbf, gbr);
    return Affine<A>{sigmoid<A>(u1 + bf), e};
}

// Uniform chunking of a column's L steps (in the column's own time order) into chunks of `chunk_len`.
PARRNN_HD long long chunk_begin(long long chunk, long long chunk_len) { return chunk * chunk_len; }
PARRNN_HD long long chunk_end(long long chunk, long long chunk_len, long long length) {
    const long long e = (chunk + 1) * chunk_len;
    return e < length ? e : length;
}

}  // namespace scan
}  // namespace parrnn
