// CPU implementation of the time-parallel chunked scan for the linear (v1) SRU (forward and backward).
//
// Same three phases as the CUDA kernels of kernels/sru_scan.cu, built from the same step functions
// (sru_scan.cuh -> sru_step.cuh), but with the CPU's loop order: time outer, columns inner (contiguous, SIMD), and
// threads (std::thread) over chunks of time instead of over columns. The point on a CPU is to use every core when N*C
// is too small to split across cores.
//
// Chunks are given by `bounds` (n_chunks + 1 increasing step counts, bounds[0] = 0, bounds[n] = L) over the
// *processing order* q: q = s for the forward, q = L-1-s for the backward (s = a column's own time order; t = s,
// or L-1-s for the reversed direction of a bidirectional layer). With P threads the caller makes chunk 0 shorter
// and chunks 1..n-1 equal, because chunk 0 is special: its carry-in (c0, or grad_c_n) is known, so
//
//   phase 1 (parallel): chunk 0 runs the fused recurrence directly (it is its own fix-up), while the other
//                       threads compose the affine maps (A_k, B_k) of chunks 1 .. n-2 (the last one is unneeded);
//   phase 2 (serial)  : carry_1 = end state of chunk 0, carry_{k+1} = A_k carry_k + B_k   (O(n * N * C));
//   phase 3 (parallel): chunks 1 .. n-1 rerun the fused recurrence from their carries.
//
// With phase-1 cost r (relative to the fused pass) per step, P threads and chunk 0 = r * (the others), the
// critical path is (1 + r) / (P + r) of the sequential pass. n = 1 is the plain sequential recurrence.
//
// Layouts as in sru_scan.cu (u (L, N, K, C), x/h/c_all/grad_h/grad_x (L, N, C), bias (2, C), c0/drop_mask/
// grad_c_n/grad_c0 (N, C), mask_pad (L, N) bytes). grad_bias_part is (2, N, C): summed over chunks here and over
// N by the caller. Storage float (arithmetic float) or double (double). Returns 0, or 1 on failure (allocation).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "chunked_scan_cpu.h"
#include "status.h"
#include "sru_scan.cuh"

namespace {

typedef long long i64;
using parrnn::scan::Affine;
using parrnn::scan_cpu::three_phases;

enum Skip { kNoSkip = 0, kSkipX = 1, kSkipU3 = 2 };

template <typename T>
struct Problem {
    const T* u;
    const T* x;
    const T* bias;
    const T* c0;
    const uint8_t* mask_pad;
    const T* drop;  // never null (ones when there is no dropout mask)
    const T* grad_h;
    const T* c_all_in;
    T* h;
    T* c_all;
    T* grad_u;
    T* grad_x;
    i64 length, batch, cols, hidden, dirs;
    int k;
    T scale_x;
};

// Calls fn(t, b, col0, row) for every (b, direction) block of one processing step q; `backward` maps q to s.
template <typename T, typename Fn>
inline void for_blocks(const Problem<T>& p, i64 s, Fn&& fn) {
    for (i64 b = 0; b < p.batch; ++b) {
        for (i64 d = 0; d < p.dirs; ++d) {
            const i64 t = d ? p.length - 1 - s : s;
            fn(t, b, d * p.hidden, t * p.batch + b);
        }
    }
}

// ---- forward rows (one (t, b, direction) block of `n` contiguous columns) -----------------------------------------

template <typename T, int SKIP, bool TANH>
inline void fwd_row(i64 n, const T* __restrict__ u0, const T* __restrict__ u1, const T* __restrict__ u2,
                    const T* __restrict__ xs, T scale_x, const T* __restrict__ bf, const T* __restrict__ br,
                    const T* __restrict__ m, T* __restrict__ c, T* __restrict__ h, T* __restrict__ c_all) {
    for (i64 j = 0; j < n; ++j) {
        const T xp = SKIP == kSkipU3 ? xs[j] : SKIP == kSkipX ? scale_x * xs[j] : T(0);
        T cj = c[j];
        h[j] = parrnn::sru_forward_step<T, false>(u0[j], u1[j], u2[j], xp, T(0), T(0), bf[j], br[j], m[j], SKIP != kNoSkip,
                                           TANH, cj);
        c[j] = cj;
        c_all[j] = cj;
    }
}

template <typename T>
inline void fwd_reduce_row(i64 n, const T* __restrict__ u0, const T* __restrict__ u1, const T* __restrict__ bf,
                           T* __restrict__ agg_a, T* __restrict__ agg_b) {
    for (i64 j = 0; j < n; ++j) {
        const Affine<T> r =
            parrnn::scan::compose(parrnn::scan::forward_coeffs<T>(u0[j], u1[j], bf[j]), Affine<T>{agg_a[j], agg_b[j]});
        agg_a[j] = r.a;
        agg_b[j] = r.b;
    }
}

// Fused forward over processing steps [q0, q1) from the states in `c` (N*C, updated in place).
template <typename T, int SKIP, bool TANH>
void fwd_fused(const Problem<T>& p, i64 q0, i64 q1, T* c) {
    const i64 C = p.cols;
    for (i64 s = q0; s < q1; ++s) {
        for_blocks(p, s, [&](i64, i64 b, i64 col0, i64 row) {
            T* cs = c + b * C + col0;
            T* hr = p.h + row * C + col0;
            T* ca = p.c_all + row * C + col0;
            if (p.mask_pad && p.mask_pad[row]) {
                for (i64 j = 0; j < p.hidden; ++j) {
                    hr[j] = T(0);
                    ca[j] = cs[j];
                }
                return;
            }
            const T* ur = p.u + row * p.k * C + col0;
            const T* xs = SKIP == kSkipU3 ? ur + 3 * C : SKIP == kSkipX ? p.x + row * C + col0 : nullptr;
            fwd_row<T, SKIP, TANH>(p.hidden, ur, ur + C, ur + 2 * C, xs, p.scale_x, p.bias + col0, p.bias + C + col0,
                                   p.drop + b * C + col0, cs, hr, ca);
        });
    }
}

template <typename T>
void fwd_reduce(const Problem<T>& p, i64 q0, i64 q1, T* agg_a, T* agg_b) {
    const i64 C = p.cols;
    for (i64 i = 0; i < p.batch * C; ++i) {
        agg_a[i] = T(1);
        agg_b[i] = T(0);
    }
    for (i64 s = q0; s < q1; ++s) {
        for_blocks(p, s, [&](i64, i64 b, i64 col0, i64 row) {
            if (p.mask_pad && p.mask_pad[row]) return;  // identity map
            const T* ur = p.u + row * p.k * C + col0;
            fwd_reduce_row<T>(p.hidden, ur, ur + C, p.bias + col0, agg_a + b * C + col0, agg_b + b * C + col0);
        });
    }
}

// ---- backward rows -----------------------------------------------------------------------------------------------

template <typename T, int SKIP, bool TANH>
inline void bwd_row(i64 n, const T* __restrict__ u0, const T* __restrict__ u1, const T* __restrict__ u2,
                    const T* __restrict__ xs, T scale_x, const T* __restrict__ bf, const T* __restrict__ br,
                    const T* __restrict__ m, const T* __restrict__ c_prev, const T* __restrict__ gh,
                    T* __restrict__ gc, T* __restrict__ gbf, T* __restrict__ gbr, T* __restrict__ gu0,
                    T* __restrict__ gu1, T* __restrict__ gu2, T* __restrict__ gxp) {
    for (i64 j = 0; j < n; ++j) {
        const T xp = SKIP == kSkipU3 ? xs[j] : SKIP == kSkipX ? scale_x * xs[j] : T(0);
        T g = gc[j], gvf = T(0), gvr = T(0), a_bf = gbf[j], a_br = gbr[j];
        const parrnn::SruStepGrads<T> r =
            parrnn::sru_backward_step<T, false>(u0[j], u1[j], u2[j], xp, T(0), T(0), bf[j], br[j], m[j], SKIP != kNoSkip,
                                         TANH, c_prev[j], gh[j], g, gvf, gvr, a_bf, a_br);
        gc[j] = g;
        gbf[j] = a_bf;
        gbr[j] = a_br;
        gu0[j] = r.u0;
        gu1[j] = r.u1;
        gu2[j] = r.u2;
        if (SKIP == kSkipU3) gxp[j] = r.xp;
        if (SKIP == kSkipX) gxp[j] = scale_x * r.xp;
    }
}

template <typename T, int SKIP, bool TANH>
inline void bwd_reduce_row(i64 n, const T* __restrict__ u0, const T* __restrict__ u1, const T* __restrict__ u2,
                           const T* __restrict__ xs, T scale_x, const T* __restrict__ bf, const T* __restrict__ br,
                           const T* __restrict__ m, const T* __restrict__ c_prev, const T* __restrict__ gh,
                           T* __restrict__ agg_a, T* __restrict__ agg_b) {
    for (i64 j = 0; j < n; ++j) {
        const T xp = SKIP == kSkipU3 ? xs[j] : SKIP == kSkipX ? scale_x * xs[j] : T(0);
        const Affine<T> step = parrnn::scan::backward_coeffs<T>(u0[j], u1[j], u2[j], xp, bf[j], br[j], m[j],
                                                                SKIP != kNoSkip, TANH, c_prev[j], gh[j]);
        const Affine<T> r = parrnn::scan::compose(step, Affine<T>{agg_a[j], agg_b[j]});
        agg_a[j] = r.a;
        agg_b[j] = r.b;
    }
}

// Row pointers shared by the backward passes for the block (t, b, col0) at column step s.
template <typename T>
struct BwdRow {
    const T* ur;
    const T* xs;
    const T* c_prev;
    const T* gh;
};

template <typename T, int SKIP>
inline BwdRow<T> bwd_rows(const Problem<T>& p, i64 s, i64 t, i64 b, i64 col0, i64 row) {
    const i64 C = p.cols;
    BwdRow<T> r;
    r.ur = p.u + row * p.k * C + col0;
    r.xs = SKIP == kSkipU3 ? r.ur + 3 * C : SKIP == kSkipX ? p.x + row * C + col0 : nullptr;
    if (s == 0) {
        r.c_prev = p.c0 + b * C + col0;
    } else {
        const i64 t_prev = col0 >= p.hidden && p.dirs == 2 ? t + 1 : t - 1;
        r.c_prev = p.c_all_in + (t_prev * p.batch + b) * C + col0;
    }
    r.gh = p.grad_h + row * C + col0;
    return r;
}

// Fused backward over processing steps [q0, q1) (s = L-1-q) from the gradients in `gc` (N*C, in place);
// accumulates the bias gradients of these steps into gbf, gbr (N*C each).
template <typename T, int SKIP, bool TANH>
void bwd_fused(const Problem<T>& p, i64 q0, i64 q1, T* gc, T* gbf, T* gbr) {
    const i64 C = p.cols;
    for (i64 q = q0; q < q1; ++q) {
        const i64 s = p.length - 1 - q;
        for_blocks(p, s, [&](i64 t, i64 b, i64 col0, i64 row) {
            T* gur = p.grad_u + row * p.k * C + col0;
            T* gxr = SKIP == kSkipU3 ? gur + 3 * C : SKIP == kSkipX ? p.grad_x + row * C + col0 : nullptr;
            if (p.mask_pad && p.mask_pad[row]) {  // the state gradient passes through, inputs get none
                for (int kk = 0; kk < p.k; ++kk)
                    for (i64 j = 0; j < p.hidden; ++j) gur[kk * C + j] = T(0);
                if (SKIP == kSkipX)
                    for (i64 j = 0; j < p.hidden; ++j) gxr[j] = T(0);
                return;
            }
            const BwdRow<T> r = bwd_rows<T, SKIP>(p, s, t, b, col0, row);
            const i64 o = b * C + col0;
            bwd_row<T, SKIP, TANH>(p.hidden, r.ur, r.ur + C, r.ur + 2 * C, r.xs, p.scale_x, p.bias + col0,
                                   p.bias + C + col0, p.drop + o, r.c_prev, r.gh, gc + o, gbf + o, gbr + o, gur,
                                   gur + C, gur + 2 * C, gxr);
        });
    }
}

template <typename T, int SKIP, bool TANH>
void bwd_reduce(const Problem<T>& p, i64 q0, i64 q1, T* agg_a, T* agg_b) {
    const i64 C = p.cols;
    for (i64 i = 0; i < p.batch * C; ++i) {
        agg_a[i] = T(1);
        agg_b[i] = T(0);
    }
    for (i64 q = q0; q < q1; ++q) {
        const i64 s = p.length - 1 - q;
        for_blocks(p, s, [&](i64 t, i64 b, i64 col0, i64 row) {
            if (p.mask_pad && p.mask_pad[row]) return;  // identity map
            const BwdRow<T> r = bwd_rows<T, SKIP>(p, s, t, b, col0, row);
            const i64 o = b * C + col0;
            bwd_reduce_row<T, SKIP, TANH>(p.hidden, r.ur, r.ur + C, r.ur + 2 * C, r.xs, p.scale_x, p.bias + col0,
                                          p.bias + C + col0, p.drop + o, r.c_prev, r.gh, agg_a + o, agg_b + o);
        });
    }
}

template <typename T>
Problem<T> make_problem(const T* u, const T* x, const T* bias, const T* c0, const uint8_t* mask_pad, const T* drop,
                        i64 length, i64 batch, i64 cols, int k, int bidirectional, T scale_x) {
    Problem<T> p{};
    p.u = u;
    p.x = x;
    p.bias = bias;
    p.c0 = c0;
    p.mask_pad = mask_pad;
    p.drop = drop;
    p.length = length;
    p.batch = batch;
    p.cols = cols;
    p.dirs = bidirectional ? 2 : 1;
    p.hidden = cols / p.dirs;
    p.k = k;
    p.scale_x = scale_x;
    return p;
}

template <typename T, int SKIP, bool TANH>
void forward_impl(const Problem<T>& p, T* c_n, const i64* bounds, i64 n, int nthreads) {
    const i64 nc = p.batch * p.cols;
    std::vector<T> state(size_t(n * nc));
    for (i64 i = 0; i < nc; ++i) state[size_t(i)] = p.c0[i];
    three_phases<T>(
        bounds, n, nc, nthreads, state.data(),
        [&](i64, i64 q0, i64 q1, T* c) { fwd_fused<T, SKIP, TANH>(p, q0, q1, c); },
        [&](i64 q0, i64 q1, T* a, T* b) { fwd_reduce<T>(p, q0, q1, a, b); });
    for (i64 i = 0; i < nc; ++i) c_n[i] = state[size_t((n - 1) * nc + i)];
}

template <typename T, int SKIP, bool TANH>
void backward_impl(const Problem<T>& p, const T* grad_c_n, T* grad_bias_part, T* grad_c0, const i64* bounds, i64 n,
                   int nthreads) {
    const i64 nc = p.batch * p.cols;
    std::vector<T> state(size_t(n * nc)), gb(size_t(2 * n * nc), T(0));
    for (i64 i = 0; i < nc; ++i) state[size_t(i)] = grad_c_n[i];
    T* gbp = gb.data();
    three_phases<T>(
        bounds, n, nc, nthreads, state.data(),
        [&](i64 k, i64 q0, i64 q1, T* gc) {
            bwd_fused<T, SKIP, TANH>(p, q0, q1, gc, gbp + 2 * k * nc, gbp + (2 * k + 1) * nc);
        },
        [&](i64 q0, i64 q1, T* a, T* b) { bwd_reduce<T, SKIP, TANH>(p, q0, q1, a, b); });
    for (i64 i = 0; i < nc; ++i) {
        T sf = T(0), sr = T(0);
        for (i64 k = 0; k < n; ++k) {
            sf += gbp[2 * k * nc + i];
            sr += gbp[(2 * k + 1) * nc + i];
        }
        grad_bias_part[i] = sf;
        grad_bias_part[nc + i] = sr;
        grad_c0[i] = state[size_t((n - 1) * nc + i)];
    }
}

// Runtime (skip, tanh) -> template instantiation.
template <template <typename, int, bool> class F, typename T, typename... Args>
void dispatch(int skip, int use_tanh, Args&&... args) {
    if (skip == kSkipX) {
        use_tanh ? F<T, kSkipX, true>::run(args...) : F<T, kSkipX, false>::run(args...);
    } else if (skip == kSkipU3) {
        use_tanh ? F<T, kSkipU3, true>::run(args...) : F<T, kSkipU3, false>::run(args...);
    } else {
        use_tanh ? F<T, kNoSkip, true>::run(args...) : F<T, kNoSkip, false>::run(args...);
    }
}

template <typename T, int SKIP, bool TANH>
struct Fwd {
    static void run(const Problem<T>& p, T* c_n, const i64* bounds, i64 n, int nthreads) {
        forward_impl<T, SKIP, TANH>(p, c_n, bounds, n, nthreads);
    }
};

template <typename T, int SKIP, bool TANH>
struct Bwd {
    static void run(const Problem<T>& p, const T* grad_c_n, T* grad_bias_part, T* grad_c0, const i64* bounds, i64 n,
                    int nthreads) {
        backward_impl<T, SKIP, TANH>(p, grad_c_n, grad_bias_part, grad_c0, bounds, n, nthreads);
    }
};

// Builds the problem's inputs (drop_mask defaulting to ones) and calls fn(problem, skip): a status (status.h).
template <typename T, typename Fn>
int with_problem(const T* u, const T* x, const T* bias, const T* c0, const uint8_t* mask_pad, const T* drop_mask,
                 i64 length, i64 batch, i64 cols, int k, int bidirectional, T scale_x, Fn&& fn) {
    return parrnn::guarded([&]() {
        std::vector<T> ones;
        if (!drop_mask) ones.assign(size_t(batch * cols), T(1));
        Problem<T> p = make_problem<T>(u, x, bias, c0, mask_pad, drop_mask ? drop_mask : ones.data(), length, batch,
                                       cols, k, bidirectional, scale_x);
        fn(p, k == 4 ? kSkipU3 : x ? kSkipX : kNoSkip);
        return int(parrnn::kOk);
    });
}

template <typename T>
int forward(const T* u, const T* x, const T* bias, const T* c0, const uint8_t* mask_pad, const T* drop_mask, T* h,
            T* c_n, T* c_all, i64 length, i64 batch, i64 cols, int k, int bidirectional, int use_tanh, T scale_x,
            const i64* bounds, i64 n_chunks, int nthreads) {
    return with_problem<T>(u, x, bias, c0, mask_pad, drop_mask, length, batch, cols, k, bidirectional, scale_x,
                           [&](Problem<T>& p, int skip) {
                               p.h = h;
                               p.c_all = c_all;
                               dispatch<Fwd, T>(skip, use_tanh, p, c_n, bounds, n_chunks, nthreads);
                           });
}

template <typename T>
int backward(const T* grad_h, const T* grad_c_n, const T* u, const T* x, const T* bias, const T* c0,
             const uint8_t* mask_pad, const T* drop_mask, const T* c_all, T* grad_u, T* grad_x, T* grad_bias_part,
             T* grad_c0, i64 length, i64 batch, i64 cols, int k, int bidirectional, int use_tanh, T scale_x,
             const i64* bounds, i64 n_chunks, int nthreads) {
    return with_problem<T>(u, x, bias, c0, mask_pad, drop_mask, length, batch, cols, k, bidirectional, scale_x,
                           [&](Problem<T>& p, int skip) {
                               p.grad_h = grad_h;
                               p.c_all_in = c_all;
                               p.grad_u = grad_u;
                               p.grad_x = grad_x;
                               dispatch<Bwd, T>(skip, use_tanh, p, grad_c_n, grad_bias_part, grad_c0, bounds,
                                                n_chunks, nthreads);
                           });
}

}  // namespace

#define PARRNN_SCAN_CPU_EXPORT(SUFFIX, T)                                                                           \
    extern "C" int sru_scan_cpu_forward_##SUFFIX(                                                                   \
        const T* u, const T* x, const T* bias, const T* c0, const uint8_t* mask_pad, const T* drop_mask, T* h,      \
        T* c_n, T* c_all, i64 length, i64 batch, i64 cols, int k, int bidirectional, int use_tanh, T scale_x,       \
        const i64* bounds, i64 n_chunks, int nthreads) {                                                            \
        return forward<T>(u, x, bias, c0, mask_pad, drop_mask, h, c_n, c_all, length, batch, cols, k,              \
                          bidirectional, use_tanh, scale_x, bounds, n_chunks, nthreads);                           \
    }                                                                                                               \
    extern "C" int sru_scan_cpu_backward_##SUFFIX(                                                                  \
        const T* grad_h, const T* grad_c_n, const T* u, const T* x, const T* bias, const T* c0,                     \
        const uint8_t* mask_pad, const T* drop_mask, const T* c_all, T* grad_u, T* grad_x, T* grad_bias_part,       \
        T* grad_c0, i64 length, i64 batch, i64 cols, int k, int bidirectional, int use_tanh, T scale_x,             \
        const i64* bounds, i64 n_chunks, int nthreads) {                                                            \
        return backward<T>(grad_h, grad_c_n, u, x, bias, c0, mask_pad, drop_mask, c_all, grad_u, grad_x,           \
                           grad_bias_part, grad_c0, length, batch, cols, k, bidirectional, use_tanh, scale_x,       \
                           bounds, n_chunks, nthreads);                                                             \
    }

PARRNN_SCAN_CPU_EXPORT(f32, float)
PARRNN_SCAN_CPU_EXPORT(f64, double)
