// One time step of the diagonal linear recurrence h_t = a_t * h_{t-1} + b_t for one column: forward, backward, and
// the chunk maps of the time-parallel scan.
//
// The single source of the op's math (parrnn/ops/linear_recurrence): included by the CUDA kernels
// (kernels/linear_recurrence.cu, kernels/linear_recurrence_scan.cu, which also run on the CPU behind host_shim.h)
// and by the CPU backend (kernels/linear_recurrence_cpu.cpp), so the CPU tests exercise the formulas the GPU runs.
// A is the arithmetic type (float, or double for double storage).
//
// Padding: a padded step (t >= lengths[n]) is the identity step a = 1, b = 0 -- chosen by a select, never by
// multiplying, so NaN/inf stored in a padded step never reaches the state or a gradient -- and its output is 0.
//
// Backward, walking the steps in the reverse of their processing order with g = dLoss/d(state after the step),
// starting from grad_h_n:
//   g_t = g + grad_h_t;   grad_b_t = g_t;   grad_a_t = g_t * h_{t-1};   g <- a_t * g_t     (g ends as grad_h0)
// As a map of g this is again affine, g <- a_t * g + a_t * grad_h_t, so the backward is the same scan in reverse.
#pragma once

#include "sru_scan.cuh"  // PARRNN_HD, parrnn::scan::Affine / compose

namespace parrnn {
namespace linrec {

// Forward step of one column: updates the state `h` (h_{t-1} -> h_t) and returns the output written at t.
template <typename A>
PARRNN_HD A forward_step(A a, A b, bool pad, A& h) {
    const A next = a * h + b;
    h = pad ? h : next;
    return pad ? A(0) : next;
}

template <typename A>
struct StepGrads {
    A a, b;
};

// Backward step of one column: `g` is the gradient of the state after the step; returns (grad_a_t, grad_b_t) and
// leaves in `g` the gradient of the state before the step. `gh` is grad_h_t, `h_prev` is h_{t-1}.
template <typename A>
PARRNN_HD StepGrads<A> backward_step(A a, A gh, A h_prev, bool pad, A& g) {
    const A gt = g + gh;
    StepGrads<A> r;
    r.b = pad ? A(0) : gt;
    r.a = pad ? A(0) : gt * h_prev;
    g = pad ? g : a * gt;
    return r;
}

// The scan's chunk maps: fold one step into the map m of the steps before it (in processing order).
// Forward: the step is x -> a x + b.
template <typename A>
PARRNN_HD void fold_forward(A a, A b, bool pad, scan::Affine<A>& m) {
    const scan::Affine<A> next = scan::compose(scan::Affine<A>{a, b}, m);
    m.a = pad ? m.a : next.a;
    m.b = pad ? m.b : next.b;
}

// Backward: the step is g -> a g + a gh.
template <typename A>
PARRNN_HD void fold_backward(A a, A gh, bool pad, scan::Affine<A>& m) {
    const scan::Affine<A> next = scan::compose(scan::Affine<A>{a, a * gh}, m);
    m.a = pad ? m.a : next.a;
    m.b = pad ? m.b : next.b;
}

// A map applied to a carry (plain multiply-add: a chunk map is exactly what the steps compute, no special cases).
template <typename A>
PARRNN_HD A apply(const scan::Affine<A>& m, A x) {
    return m.a * x + m.b;
}

}  // namespace linrec
}  // namespace parrnn
