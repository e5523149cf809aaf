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

#ifndef PARRNN_HD
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define PARRNN_HD __host__ __device__ __forceinline__
#else
#define PARRNN_HD inline
#endif
#endif

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#include <cmath>
#endif

namespace parrnn {

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
using std::exp;
using std::tanh;
#endif

template <typename A>
PARRNN_HD A sigmoid(A z) {
    return A(1) / (A(1) + exp(-z));
}

// Forward step. `c` holds c_{t-1} on entry and c_t on return; returns h_t.
template <typename A>
PARRNN_HD A sru_forward_step(A u0, A u1, A u2, A xp, A vf, A vr, A bf, A br, A m, bool has_skip, bool use_tanh,
                             A& c) {
    const A c_prev = c;
    const A f = sigmoid(u1 + vf * c_prev + bf);
    const A r = sigmoid(u2 + vr * c_prev + br);
    c = u0 + (c_prev - u0) * f;
    const A g = use_tanh ? tanh(c) : c;
    return has_skip ? xp + (g - xp) * m * r : g * m * r;
}

// Gradients produced by one backward step (those of u0, u1, u2 and of the highway input xp).
template <typename A>
struct SruStepGrads {
    A u0, u1, u2, xp;
};

// Backward step. `c_prev` is c_{t-1} (saved by the forward pass), `gh` is dL/dh_t, `gc` holds dL/dc_t on entry
// (the gradient flowing back from later steps and from c_n) and dL/dc_{t-1} on return. The per-column
// accumulators of the peephole and bias gradients are updated in place.
template <typename A>
PARRNN_HD SruStepGrads<A> sru_backward_step(A u0, A u1, A u2, A xp, A vf, A vr, A bf, A br, A m, bool has_skip,
                                            bool use_tanh, A c_prev, A gh, A& gc, A& gvf, A& gvr, A& gbf,
                                            A& gbr) {
    const A f = sigmoid(u1 + vf * c_prev + bf);
    const A r = sigmoid(u2 + vr * c_prev + br);
    const A c = u0 + (c_prev - u0) * f;
    const A g = use_tanh ? tanh(c) : c;
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
    gvf += gzf * c_prev;
    gvr += gzr * c_prev;
    gc = gct * f + gzf * vf + gzr * vr;
    return out;
}

}  // namespace parrnn
