// CPU kernels of the diagonal linear recurrence h_t = a_t * h_{t-1} + b_t (parrnn/ops/linear_recurrence):
// the sequential backend (threads over blocks of columns) and the chunked time-parallel scan (threads over chunks
// of time, for few columns and long sequences). Forward and backward of each.
//
// The per-step math is parrnn::linrec::{forward_step, backward_step, fold_forward, fold_backward} from
// linear_recurrence_step.cuh, the header the CUDA kernels include; storage types are SRU's CPU ones (cpu_storage.h:
// branch-free float16/bfloat16 conversions, bit-compatible with torch's). Loops run time outer, columns inner
// (contiguous: SIMD), a column block's state in a small buffer; the next step's rows are prefetched.
//
// Layouts (contiguous, row-major, 64-bit indices; L steps, N batch rows, C columns, NC = N * C):
//   a, b, h, grad_h, grad_a, grad_b (L, N, C) storage T       h0, h_n, grad_h_n, grad_h0 (N, C) arithmetic A
//   lengths (N,) int64 or null (steps t >= lengths[n] are padding)
// h0 null means zeros. Processing order s = 0 .. L-1 visits time t = s, or t = L-1-s with reverse.
// T in {float, double, uint16_t (bfloat16, float16 bits)}, A = float (double for double). Entry points return a status
// (status.h): 0, or the code of the C++ exception that stopped them (never an exception through the C ABI).
//
// The scan's chunks are given by `bounds` (n + 1 increasing processing-step counts from 0 to L; for the backward they
// count steps from the end), and the three phases are parrnn::scan_cpu::three_phases (chunked_scan_cpu.h), shared
// with the SRU v1 scan.

#include <algorithm>
#include <cstdint>
#include <new>
#include <vector>

#include "chunked_scan_cpu.h"
#include "cpu_storage.h"
#include "linear_recurrence_step.cuh"
#include "status.h"

namespace {

typedef long long i64;
using parrnn::scan::Affine;

// p[i] in the arithmetic type, and p[i] = v rounded to the storage type, for storage traits S (cpu_storage.h).
template <typename S>
inline typename S::A load(const typename S::T* p, i64 i) {
    return S::load(p[i]);
}
template <typename S>
inline void store(typename S::T* p, i64 i, typename S::A v) {
    p[i] = S::store(v);
}

constexpr int kPrefetchSteps = 2;  // steps ahead whose rows are prefetched

template <typename S>
struct Problem {
    using T = typename S::T;
    using A = typename S::A;
    const T* a;
    const T* b;
    const A* h0;
    const i64* lengths;
    const T* grad_h;
    T* h;
    T* grad_a;
    T* grad_b;
    i64 L, N, C;
    bool reverse;

    i64 time(i64 s) const { return reverse ? L - 1 - s : s; }
    bool padded(i64 t, i64 n) const { return lengths != nullptr && t >= lengths[n]; }
    A initial(i64 q) const { return h0 ? h0[q] : A(0); }
};

// fn(n, q0, q1) for each batch row's part [q0, q1) of the flattened columns [c0, c1).
template <typename Fn>
inline void for_rows(i64 c0, i64 c1, i64 C, Fn&& fn) {
    for (i64 q = c0; q < c1;) {
        const i64 n = q / C;
        const i64 e = std::min(c1, (n + 1) * C);
        fn(n, q, e);
        q = e;
    }
}

template <typename T>
inline void prefetch_rows(const T* p, i64 c0, i64 c1) {
#if defined(__GNUC__) || defined(__clang__)
    constexpr i64 line = 64 / sizeof(T);
    for (i64 q = c0; q < c1; q += line) __builtin_prefetch(p + q);
#else
    (void)p, (void)c0, (void)c1;
#endif
}

// ---- forward ------------------------------------------------------------------------------------------------------

// Steps s0 .. s1-1 of columns [c0, c1) from the states st[q - c0]; writes h.
template <typename S, typename A = typename S::A>
void forward_range(const Problem<S>& p, i64 s0, i64 s1, i64 c0, i64 c1, A* st) {
    using T = typename S::T;
    const i64 nc = p.N * p.C;
    A* state = st - c0;
    for (i64 s = s0; s < s1; ++s) {
        const i64 base = p.time(s) * nc;
        if (s + kPrefetchSteps < s1) {
            const i64 ahead = p.time(s + kPrefetchSteps) * nc;
            prefetch_rows(p.a + ahead, c0, c1);
            prefetch_rows(p.b + ahead, c0, c1);
        }
        const T* __restrict__ a = p.a + base;
        const T* __restrict__ b = p.b + base;
        T* __restrict__ h = p.h + base;
        for_rows(c0, c1, p.C, [&](i64 n, i64 q0, i64 q1) {
            const bool pad = p.padded(p.time(s), n);
            for (i64 q = q0; q < q1; ++q) {
                const A out = parrnn::linrec::forward_step<A>(load<S>(a, q), load<S>(b, q), pad, state[q]);
                store<S>(h, q, out);
            }
        });
    }
}

// The chunk map (A, B) of steps s0 .. s1-1 for every column.
template <typename S, typename A = typename S::A>
void forward_reduce(const Problem<S>& p, i64 s0, i64 s1, A* ma, A* mb) {
    const i64 nc = p.N * p.C;
    for (i64 q = 0; q < nc; ++q) ma[q] = A(1), mb[q] = A(0);
    for (i64 s = s0; s < s1; ++s) {
        const i64 base = p.time(s) * nc;
        for_rows(0, nc, p.C, [&](i64 n, i64 q0, i64 q1) {
            const bool pad = p.padded(p.time(s), n);
            for (i64 q = q0; q < q1; ++q) {
                Affine<A> m{ma[q], mb[q]};
                parrnn::linrec::fold_forward<A>(load<S>(p.a, base + q), load<S>(p.b, base + q), pad, m);
                ma[q] = m.a, mb[q] = m.b;
            }
        });
    }
}

// ---- backward -----------------------------------------------------------------------------------------------------

// Steps s1-1 down to s0 of columns [c0, c1), g[q - c0] the state gradients; writes grad_a, grad_b.
template <typename S, typename A = typename S::A>
void backward_range(const Problem<S>& p, i64 s0, i64 s1, i64 c0, i64 c1, A* g) {
    using T = typename S::T;
    const i64 nc = p.N * p.C;
    A* gs = g - c0;
    for (i64 s = s1 - 1; s >= s0; --s) {
        const i64 t = p.time(s);
        const i64 base = t * nc;
        if (s - kPrefetchSteps >= s0) {
            const i64 ahead = p.time(s - kPrefetchSteps) * nc;
            prefetch_rows(p.a + ahead, c0, c1);
            prefetch_rows(p.grad_h + ahead, c0, c1);
        }
        const T* __restrict__ a = p.a + base;
        const T* __restrict__ gh = p.grad_h + base;
        T* __restrict__ ga = p.grad_a + base;
        T* __restrict__ gb = p.grad_b + base;
        for_rows(c0, c1, p.C, [&](i64 n, i64 q0, i64 q1) {
            const bool pad = p.padded(t, n);
            // h_{t-1}: the output of the previous processing step, or h0 before the first valid one
            const bool first = s == 0 || p.padded(p.time(s - 1), n);
            if (first) {
                for (i64 q = q0; q < q1; ++q) {
                    const auto r = parrnn::linrec::backward_step<A>(load<S>(a, q), load<S>(gh, q),
                                                                    p.initial(q), pad, gs[q]);
                    store<S>(ga, q, r.a);
                    store<S>(gb, q, r.b);
                }
            } else {
                const T* __restrict__ hp = p.h + p.time(s - 1) * nc;
                for (i64 q = q0; q < q1; ++q) {
                    const auto r = parrnn::linrec::backward_step<A>(load<S>(a, q), load<S>(gh, q),
                                                                    load<S>(hp, q), pad, gs[q]);
                    store<S>(ga, q, r.a);
                    store<S>(gb, q, r.b);
                }
            }
        });
    }
}

// The map (A, B) of the state gradient over steps s1-1 down to s0 for every column.
template <typename S, typename A = typename S::A>
void backward_reduce(const Problem<S>& p, i64 s0, i64 s1, A* ma, A* mb) {
    const i64 nc = p.N * p.C;
    for (i64 q = 0; q < nc; ++q) ma[q] = A(1), mb[q] = A(0);
    for (i64 s = s1 - 1; s >= s0; --s) {
        const i64 base = p.time(s) * nc;
        for_rows(0, nc, p.C, [&](i64 n, i64 q0, i64 q1) {
            const bool pad = p.padded(p.time(s), n);
            for (i64 q = q0; q < q1; ++q) {
                Affine<A> m{ma[q], mb[q]};
                parrnn::linrec::fold_backward<A>(load<S>(p.a, base + q), load<S>(p.grad_h, base + q), pad, m);
                ma[q] = m.a, mb[q] = m.b;
            }
        });
    }
}

// ---- drivers ------------------------------------------------------------------------------------------------------

// Sequential: blocks of `tile` columns, each running the whole sequence, spread over `threads`.
template <typename A, typename Run>
void over_column_blocks(i64 nc, i64 tile, int threads, Run&& run) {
    tile = std::max<i64>(1, tile);
    const i64 blocks = (nc + tile - 1) / tile;
    parrnn::scan_cpu::parallel_tasks(blocks, threads, [&](i64 k) {
        const i64 c0 = k * tile, c1 = std::min(nc, c0 + tile);
        std::vector<A> st(size_t(c1 - c0));
        run(c0, c1, st.data());
    });
}

template <typename S, typename A = typename S::A>
int sequential_forward(const Problem<S>& p, A* h_n, i64 tile, int threads) {
    return parrnn::guarded([&]() {
        over_column_blocks<A>(p.N * p.C, tile, threads, [&](i64 c0, i64 c1, A* st) {
            for (i64 q = c0; q < c1; ++q) st[q - c0] = p.initial(q);
            forward_range(p, 0, p.L, c0, c1, st);
            for (i64 q = c0; q < c1; ++q) h_n[q] = st[q - c0];
        });
        return int(parrnn::kOk);
    });
}

template <typename S, typename A = typename S::A>
int sequential_backward(const Problem<S>& p, const A* grad_h_n, A* grad_h0, i64 tile, int threads) {
    return parrnn::guarded([&]() {
        over_column_blocks<A>(p.N * p.C, tile, threads, [&](i64 c0, i64 c1, A* g) {
            for (i64 q = c0; q < c1; ++q) g[q - c0] = grad_h_n[q];
            backward_range(p, 0, p.L, c0, c1, g);
            for (i64 q = c0; q < c1; ++q) grad_h0[q] = g[q - c0];
        });
        return int(parrnn::kOk);
    });
}

// Scan: chunks [bounds[k], bounds[k+1]) of the processing order (forward) or of the steps counted from the end
// (backward), through the shared three phases.
template <typename S, typename A = typename S::A>
int scan_forward(const Problem<S>& p, A* h_n, const i64* bounds, i64 n, int threads) {
    const i64 nc = p.N * p.C;
    return parrnn::guarded([&]() {
        std::vector<A> state(size_t(n * nc));
        for (i64 q = 0; q < nc; ++q) state[size_t(q)] = p.initial(q);
        parrnn::scan_cpu::three_phases<A>(
            bounds, n, nc, threads, state.data(),
            [&](i64, i64 s0, i64 s1, A* st) { forward_range(p, s0, s1, 0, nc, st); },
            [&](i64 s0, i64 s1, A* ma, A* mb) { forward_reduce(p, s0, s1, ma, mb); });
        for (i64 q = 0; q < nc; ++q) h_n[q] = state[size_t((n - 1) * nc + q)];
        return int(parrnn::kOk);
    });
}

template <typename S, typename A = typename S::A>
int scan_backward(const Problem<S>& p, const A* grad_h_n, A* grad_h0, const i64* bounds, i64 n, int threads) {
    const i64 nc = p.N * p.C;
    return parrnn::guarded([&]() {
        std::vector<A> state(size_t(n * nc));
        for (i64 q = 0; q < nc; ++q) state[size_t(q)] = grad_h_n[q];
        // backward chunk [r0, r1) counts from the end: processing steps L-r1 .. L-r0-1, walked downwards
        parrnn::scan_cpu::three_phases<A>(
            bounds, n, nc, threads, state.data(),
            [&](i64, i64 r0, i64 r1, A* g) { backward_range(p, p.L - r1, p.L - r0, 0, nc, g); },
            [&](i64 r0, i64 r1, A* ma, A* mb) { backward_reduce(p, p.L - r1, p.L - r0, ma, mb); });
        for (i64 q = 0; q < nc; ++q) grad_h0[q] = state[size_t((n - 1) * nc + q)];
        return int(parrnn::kOk);
    });
}

template <typename S>
Problem<S> problem(const typename S::T* a, const typename S::T* b, const typename S::A* h0, const i64* lengths,
                   const typename S::T* grad_h, typename S::T* h, typename S::T* grad_a, typename S::T* grad_b, i64 L,
                   i64 N, i64 C, int reverse) {
    return Problem<S>{a, b, h0, lengths, grad_h, h, grad_a, grad_b, L, N, C, reverse != 0};
}

}  // namespace

// ---- extern "C" entry points, one set per storage type -------------------------------------------------------------

#define PARRNN_LINREC_CPU(SUFFIX, S, T, A)                                                                              \
    extern "C" int linrec_cpu_forward_##SUFFIX(const T* a, const T* b, const A* h0, const i64* lengths, T* h,       \
                                               A* h_n, i64 L, i64 N, i64 C, int reverse, i64 tile, int threads) {   \
        return sequential_forward(problem<S>(a, b, h0, lengths, nullptr, h, nullptr, nullptr, L, N, C, reverse), \
                                  h_n, tile, threads);                                                               \
    }                                                                                                                \
    extern "C" int linrec_cpu_backward_##SUFFIX(const T* grad_h, const A* grad_h_n, const T* a, const T* h,         \
                                                const A* h0, const i64* lengths, T* grad_a, T* grad_b, A* grad_h0,  \
                                                i64 L, i64 N, i64 C, int reverse, i64 tile, int threads) {          \
        return sequential_backward(                                                                                  \
            problem<S>(a, nullptr, h0, lengths, grad_h, const_cast<T*>(h), grad_a, grad_b, L, N, C, reverse),    \
            grad_h_n, grad_h0, tile, threads);                                                                       \
    }                                                                                                                \
    extern "C" int linrec_scan_cpu_forward_##SUFFIX(const T* a, const T* b, const A* h0, const i64* lengths, T* h,  \
                                                    A* h_n, i64 L, i64 N, i64 C, int reverse, const i64* bounds,    \
                                                    i64 n_chunks, int threads) {                                     \
        return scan_forward(problem<S>(a, b, h0, lengths, nullptr, h, nullptr, nullptr, L, N, C, reverse), h_n,  \
                            bounds, n_chunks, threads);                                                              \
    }                                                                                                                \
    extern "C" int linrec_scan_cpu_backward_##SUFFIX(                                                                \
        const T* grad_h, const A* grad_h_n, const T* a, const T* h, const A* h0, const i64* lengths, T* grad_a,     \
        T* grad_b, A* grad_h0, i64 L, i64 N, i64 C, int reverse, const i64* bounds, i64 n_chunks, int threads) {    \
        return scan_backward(                                                                                        \
            problem<S>(a, nullptr, h0, lengths, grad_h, const_cast<T*>(h), grad_a, grad_b, L, N, C, reverse),    \
            grad_h_n, grad_h0, bounds, n_chunks, threads);                                                           \
    }

PARRNN_LINREC_CPU(f32, parrnn::cpu_storage::F32, float, float)
PARRNN_LINREC_CPU(f64, parrnn::cpu_storage::F64, double, double)
PARRNN_LINREC_CPU(f16, parrnn::cpu_storage::F16, uint16_t, float)
PARRNN_LINREC_CPU(bf16, parrnn::cpu_storage::BF16, uint16_t, float)

// Test hook (tests/ops/test_build.py): parallel_tasks starts at most n worker threads before thread creation is made
// to fail (negative: no limit), to check that a failed thread start neither crashes nor loses work.
extern "C" void linrec_cpu_set_thread_start_limit(int n) { parrnn::scan_cpu::g_thread_start_limit = n; }
