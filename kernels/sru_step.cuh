// One time step of the SRU elementwise recurrence, forward and backward, for one column.
//
// This header is the single source of the recurrence math. It is included by the CUDA kernels
// (kernels/sru_recurrence.cu) and by the CPU backend (kernels/sru_cpu.cpp), so the CPU test suite exercises the
// exact formulas the GPU runs. It has no dependencies: under nvcc/NVRTC `__host__ __device__` are the CUDA
// qualifiers; compiled as plain C++ they expand to nothing (see PARRNN_HD below).
//
// Notation for one column (batch row b, feature column j of one direction) at time t:
//   u0, u1, u2   the three projections of x_t (candidate, forget pre-activation, reset pre-activation)
//   vf, vr       peephole weights (0 for the linear "v1" SRU), bf, br the gate biases
//   xp           the highway (skip) input: scale * x_t, or the 4th projection u3, or 0 without skip
//   m            the dropout mask on the highway branch (1 without dropout)
//
//   f   = sigmoid(u1 + vf * c_prev + bf)
//   r   = sigmoid(u2 + vr * c_prev + br)
//   c   = f * c_prev + (1 - f) * u0           (computed as u0 + (c_prev - u0) * f)
//   g   = c  or  tanh(c)
//   h   = xp + (g - xp) * m * r               (with skip)   |   h = g * m * r   (without skip)
//
// Padded steps are handled by the callers: they keep c unchanged and write h = 0.
#pragma once

// On the host the step functions must inline into the callers' column loops, or those loops do not vectorize.
#if defined(__GNUC__) || defined(__clang__)
#define PARRNN_HOST_INLINE inline __attribute__((always_inline))
#else
#define PARRNN_HOST_INLINE inline
#endif

#ifndef PARRNN_HD
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define PARRNN_HD __host__ __device__ __forceinline__
#else
#define PARRNN_HD PARRNN_HOST_INLINE
#endif
#endif

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#endif

namespace parrnn {

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
using std::exp;
using std::tanh;
#endif

// exp and tanh as used by the step functions. On the GPU these are the CUDA math library's exp/tanh. On the host,
// float gets branch-free implementations that g++/clang vectorize (libm's scalar expf/tanhf calls block SIMD
// unless -ffast-math, which we do not use); double uses libm. The host float versions are IEEE-clean: NaN
// propagates, +-inf and overflow/underflow give the correctly limited results, and they are accurate to a few ulp.
namespace detail {
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
template <typename A>
PARRNN_HD A exp_(A z) {
    return exp(z);
}
template <typename A>
PARRNN_HD A tanh_(A z) {
    return tanh(z);
}
#else
template <typename A>
PARRNN_HOST_INLINE A exp_(A z) {
    return exp(z);
}
template <typename A>
PARRNN_HOST_INLINE A tanh_(A z) {
    return tanh(z);
}

PARRNN_HOST_INLINE float bits_to_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

PARRNN_HOST_INLINE uint32_t float_to_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

// exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln(2)/2; Cephes expf polynomial for exp(r) (~1 ulp).
PARRNN_HOST_INLINE float exp_(float x) {
    const float hi = 88.72283935546875f;  // > ln(FLT_MAX): exp overflows to +inf above
    const float lo = -104.0f;             // < ln(smallest denormal / 2): exp underflows to 0 below
    float xc = x > hi ? hi : x;           // comparisons (not fmin/fmax) so that NaN passes through
    xc = xc < lo ? lo : xc;
    const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits
    const float t = xc * 1.44269504088896341f + magic;
    const float n = t - magic;
    const int32_t ni = int32_t(float_to_bits(t)) - int32_t(float_to_bits(magic));  // n as an integer, in [-150, 128]
    float r = xc - n * 0.693359375f;  // Cody-Waite: ln 2 = 0.693359375 - 2.12194440e-4 (first part exact)
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float er = p * r * r + r + 1.0f;
    // 2^n as two normal factors so that n = 128 (just below overflow) and n < -126 (denormal results) both work.
    const int32_t n1 = ni >> 1;
    const int32_t n2 = ni - n1;
    const float y = er * bits_to_float(uint32_t(n1 + 127) << 23) * bits_to_float(uint32_t(n2 + 127) << 23);
    return x > hi ? std::numeric_limits<float>::infinity() : (x < lo ? 0.0f : y);
}

// Eigen's rational minimax approximation of tanh (odd degree 13 / even degree 6) over x clamped to +-7.9053
// (where it reaches +-1 in float); |x| < 0.0004 gives x (tanh(x) == x in float there). Comparisons, not fmin/fmax,
// so NaN passes through. Within ~7 ulp of tanh near +-1, tighter near 0.
PARRNN_HOST_INLINE float tanh_rational_(float x) {
    const float clamp = 7.90531110763549805f;
    float xc = x > clamp ? clamp : x;
    xc = xc < -clamp ? -clamp : xc;
    const float x2 = xc * xc;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * xc;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    const float ax = x < 0.0f ? -x : x;
    return ax < 0.0004f ? x : p / q;
}

// tanh: for |x| < 0.625 the rational approximation above; beyond, 1 - 2 / (exp(2|x|) + 1) with the sign restored
// (no cancellation there; saturates to +-1, NaN propagates).
PARRNN_HOST_INLINE float tanh_(float x) {
    const float ax = x < 0.0f ? -x : x;
    const float big = 1.0f - 2.0f / (exp_(2.0f * ax) + 1.0f);
    return ax < 0.625f ? tanh_rational_(x) : (x < 0.0f ? -big : big);
}
#endif
}  // namespace detail

template <typename A>
PARRNN_HD A sigmoid(A z) {
    return A(1) / (A(1) + detail::exp_(-z));
}

// Forward step. `c` holds c_{t-1} on entry and c_t on return; returns h_t.
// `peephole = false` (the linear v1 SRU) drops the vf/vr terms entirely rather than multiplying them by 0, so an
// infinite c_{t-1} does not turn the gates into NaN (0 * inf), exactly like the reference.
template <typename A, bool peephole = true>
PARRNN_HD A sru_forward_step(A u0, A u1, A u2, A xp, A vf, A vr, A bf, A br, A m, bool has_skip, bool use_tanh,
                             A& c) {
    const A c_prev = c;
    const A f = sigmoid(peephole ? u1 + vf * c_prev + bf : u1 + bf);
    const A r = sigmoid(peephole ? u2 + vr * c_prev + br : u2 + br);
    c = u0 + (c_prev - u0) * f;
    const A g = use_tanh ? detail::tanh_(c) : c;
    return has_skip ? xp + (g - xp) * m * r : g * m * r;
}

// Gradients produced by one backward step (those of u0, u1, u2 and of the highway input xp).
template <typename A>
struct SruStepGrads {
    A u0, u1, u2, xp;
};

// Backward step. `c_prev` is c_{t-1} (saved by the forward pass), `gh` is dL/dh_t, `gc` holds dL/dc_t on entry
// (the gradient flowing back from later steps and from c_n) and dL/dc_{t-1} on return. The per-column
// accumulators of the peephole and bias gradients are updated in place (gvf, gvr untouched without peephole).
template <typename A, bool peephole = true>
PARRNN_HD SruStepGrads<A> sru_backward_step(A u0, A u1, A u2, A xp, A vf, A vr, A bf, A br, A m, bool has_skip,
                                            bool use_tanh, A c_prev, A gh, A& gc, A& gvf, A& gvr, A& gbf,
                                            A& gbr) {
    const A f = sigmoid(peephole ? u1 + vf * c_prev + bf : u1 + bf);
    const A r = sigmoid(peephole ? u2 + vr * c_prev + br : u2 + br);
    const A c = u0 + (c_prev - u0) * f;
    const A g = use_tanh ? detail::tanh_(c) : c;
    const A dg_dc = use_tanh ? A(1) - g * g : A(1);

    SruStepGrads<A> out;
    const A gr = has_skip ? gh * (g - xp) * m : gh * g * m;  // dL/dr
    out.xp = has_skip ? gh * (A(1) - m * r) : A(0);
    const A gct = gc + gh * m * r * dg_dc;  // total dL/dc_t
    out.u0 = gct * (A(1) - f);
    const A gzf = gct * (c_prev - u0) * f * (A(1) - f);  // dL/d(forget pre-activation)
    const A gzr = gr * r * (A(1) - r);                   // dL/d(reset pre-activation)
    out.u1 = gzf;
    out.u2 = gzr;
    gbf += gzf;
    gbr += gzr;
    if (peephole) {
        gvf += gzf * c_prev;
        gvr += gzr * c_prev;
        gc = gct * f + gzf * vf + gzr * vr;
    } else {
        gc = gct * f;
    }
    return out;
}

}  // namespace parrnn
