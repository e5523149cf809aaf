// Fused CPU forward and backward of the SRU elementwise recurrence (the `cpu` backend,
// parrnn/ops/sru/sequential_cpu.py).
//
// The per-step math is parrnn::sru_forward_step / parrnn::sru_backward_step from sru_step.cuh, the same inline
// functions the CUDA kernel runs. This file only loops: time outer, columns inner (contiguous, so the compiler
// vectorizes the column loop), and OpenMP over tasks = (batch row, direction, block of columns). Each task owns
// its columns for the whole sequence, so there are no races; the backward writes per-row partial sums of the
// peephole/bias gradients which the caller reduces over the batch.
//
// Layouts (all contiguous, row-major, 64-bit indexing), L time steps, N batch rows, C = D * H columns:
//   u (L, N, K, C) storage S      x (L, N, C) S or null          h, grad_h (L, N, C) S
//   weight_c (2, C) A or null     bias (2, C) A                  c0, c_n, grad_c_n, grad_c0 (N, C) A
//   mask_pad (L, N) uint8 or null (nonzero = padding)            drop (N, C) A or null
//   c_all (L, N, C) A: c_t after step t of each column (carried through padded steps)
//   grad_u like u; grad_x like x; partial (N, 4, C) A: per-row sums of (d v_f, d v_r, d b_f, d b_r)
// S is the storage type (float, double, bfloat16 / float16 as uint16 bit patterns) and A the arithmetic type
// (double for double storage, float otherwise).
//
// Built by parrnn/ops/build.py (LazyLibrary "sru_cpu") without torch headers: g++ -O3 -march=native -fopenmp
// -fno-math-errno -fno-trapping-math (no -ffast-math: NaN and inf propagate as in IEEE arithmetic; -fno-trapping-math only lets
// the compiler if-convert the branch-free selects in sru_step.cuh, it does not change any result).
#include "cpu_storage.h"
#include "sru_step.cuh"
#include "status.h"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using i64 = int64_t;

// ---- storage types (cpu_storage.h) -----------------------------------------------------------------------------

using parrnn::cpu_storage::BF16;
using parrnn::cpu_storage::F16;
using parrnn::cpu_storage::F32;
using parrnn::cpu_storage::F64;

enum SkipMode { kNoSkip = 0, kSkipX = 1, kSkipU3 = 2 };

template <typename S>
struct Args {
    using T = typename S::T;
    using A = typename S::A;
    // forward
    const T* u;
    const T* x;
    const A* weight_c;
    const A* bias;
    const A* c0;
    const uint8_t* mask;
    const A* drop;
    T* h;
    A* c_n;
    A* c_all;
    // backward
    const T* grad_h;
    const A* grad_c_n;
    T* grad_u;
    T* grad_x;
    A* partial;
    A* grad_c0;
    // sizes and options
    i64 L, N, C, K, H, D;
    A scale_x;
};

// Per-task column parameters, loaded once: peephole (0 for v1), biases, dropout mask (1 without).
template <typename A>
struct ColParams {
    std::vector<A> vf, vr, bf, br, m;
    ColParams(i64 nb) : vf(nb), vr(nb), bf(nb), br(nb), m(nb) {}
    template <typename Ar>
    void load(const Ar& a, i64 n, i64 col0, i64 nb) {
        for (i64 j = 0; j < nb; ++j) {
            vf[j] = a.weight_c ? a.weight_c[col0 + j] : A(0);
            vr[j] = a.weight_c ? a.weight_c[a.C + col0 + j] : A(0);
            bf[j] = a.bias[col0 + j];
            br[j] = a.bias[a.C + col0 + j];
            m[j] = a.drop ? a.drop[n * a.C + col0 + j] : A(1);
        }
    }
};

// The vectorized inner loop of the forward: one time step of nb contiguous columns.
template <typename S, bool SKIP, bool TANH, bool PEEP>
__attribute__((noinline)) void forward_columns(
    const typename S::T* __restrict__ u0, const typename S::T* __restrict__ u1,
    const typename S::T* __restrict__ u2, const typename S::T* __restrict__ xs, typename S::A scale,
    const typename S::A* __restrict__ vf, const typename S::A* __restrict__ vr,
    const typename S::A* __restrict__ bf, const typename S::A* __restrict__ br,
    const typename S::A* __restrict__ m, typename S::A* __restrict__ c, typename S::A* __restrict__ cp,
    typename S::T* __restrict__ hp, i64 nb) {
    using A = typename S::A;
    for (i64 j = 0; j < nb; ++j) {
        const A xp = SKIP ? scale * S::load(xs[j]) : A(0);
        A cj = c[j];
        const A hv = parrnn::sru_forward_step<A, PEEP>(S::load(u0[j]), S::load(u1[j]), S::load(u2[j]), xp, vf[j],
                                                       vr[j], bf[j], br[j], m[j], SKIP, TANH, cj);
        c[j] = cj;
        cp[j] = cj;
        hp[j] = S::store(hv);
    }
}

// One task of the forward: batch row n, columns [col0, col0 + nb) of one direction, all time steps.
template <typename S, bool SKIP, bool TANH, bool PEEP>
void forward_task(const Args<S>& a, i64 n, i64 col0, i64 nb, bool reverse) {
    using T = typename S::T;
    using A = typename S::A;
    ColParams<A> p(nb);
    p.load(a, n, col0, nb);
    std::vector<A> cbuf(a.c0 + n * a.C + col0, a.c0 + n * a.C + col0 + nb);
    A* __restrict__ c = cbuf.data();
    const A* __restrict__ vf = p.vf.data();
    const A* __restrict__ vr = p.vr.data();
    const A* __restrict__ bf = p.bf.data();
    const A* __restrict__ br = p.br.data();
    const A* __restrict__ m = p.m.data();
    const A scale = a.x ? a.scale_x : A(1);  // the K = 4 highway u3 is not scaled (x * 1 is exact)
    const i64 C = a.C, N = a.N, K = a.K;
    for (i64 s = 0; s < a.L; ++s) {
        const i64 t = reverse ? a.L - 1 - s : s;
        const i64 row = t * N + n;  // index of (t, n)
        T* __restrict__ hp = a.h + row * C + col0;
        A* __restrict__ cp = a.c_all + row * C + col0;
        if (a.mask && a.mask[row]) {  // padding: c carried, h = 0
            for (i64 j = 0; j < nb; ++j) {
                hp[j] = S::store(A(0));
                cp[j] = c[j];
            }
            continue;
        }
        const T* u0 = a.u + row * K * C + col0;
        const T* xs = a.x ? a.x + row * C + col0 : u0 + 3 * C;
        forward_columns<S, SKIP, TANH, PEEP>(u0, u0 + C, u0 + 2 * C, xs, scale, vf, vr, bf, br, m, c, cp, hp, nb);
    }
    A* cn = a.c_n + n * C + col0;
    for (i64 j = 0; j < nb; ++j) cn[j] = c[j];
}

// The vectorized inner loop of the backward: one time step of nb contiguous columns.
template <typename S, bool SKIP, bool TANH, bool PEEP>
__attribute__((noinline)) void backward_columns(
    const typename S::T* __restrict__ u0, const typename S::T* __restrict__ u1,
    const typename S::T* __restrict__ u2, const typename S::T* __restrict__ xs, typename S::A scale,
    const typename S::A* __restrict__ vf, const typename S::A* __restrict__ vr,
    const typename S::A* __restrict__ bf, const typename S::A* __restrict__ br,
    const typename S::A* __restrict__ m, const typename S::A* __restrict__ cprev,
    const typename S::T* __restrict__ gh, typename S::A* __restrict__ gc, typename S::A* __restrict__ gvf,
    typename S::A* __restrict__ gvr, typename S::A* __restrict__ gbf, typename S::A* __restrict__ gbr,
    typename S::T* __restrict__ gu0, typename S::T* __restrict__ gu1, typename S::T* __restrict__ gu2,
    typename S::T* __restrict__ gxs, i64 nb) {
    using A = typename S::A;
    for (i64 j = 0; j < nb; ++j) {
        const A xp = SKIP ? scale * S::load(xs[j]) : A(0);
        A gcj = gc[j], gvfj = gvf[j], gvrj = gvr[j], gbfj = gbf[j], gbrj = gbr[j];
        const parrnn::SruStepGrads<A> g = parrnn::sru_backward_step<A, PEEP>(
            S::load(u0[j]), S::load(u1[j]), S::load(u2[j]), xp, vf[j], vr[j], bf[j], br[j], m[j], SKIP, TANH,
            cprev[j], S::load(gh[j]), gcj, gvfj, gvrj, gbfj, gbrj);
        gc[j] = gcj;
        gvf[j] = gvfj;
        gvr[j] = gvrj;
        gbf[j] = gbfj;
        gbr[j] = gbrj;
        gu0[j] = S::store(g.u0);
        gu1[j] = S::store(g.u1);
        gu2[j] = S::store(g.u2);
        if (SKIP) gxs[j] = S::store(scale * g.xp);
    }
}

// One task of the backward: time runs opposite to the forward of its direction.
template <typename S, bool SKIP, bool TANH, bool PEEP>
void backward_task(const Args<S>& a, i64 n, i64 col0, i64 nb, bool reverse) {
    using T = typename S::T;
    using A = typename S::A;
    ColParams<A> p(nb);
    p.load(a, n, col0, nb);
    std::vector<A> acc(5 * nb, A(0));  // gc, gvf, gvr, gbf, gbr
    A* __restrict__ gc = acc.data();
    A* __restrict__ gvf = gc + nb;
    A* __restrict__ gvr = gc + 2 * nb;
    A* __restrict__ gbf = gc + 3 * nb;
    A* __restrict__ gbr = gc + 4 * nb;
    const A* __restrict__ vf = p.vf.data();
    const A* __restrict__ vr = p.vr.data();
    const A* __restrict__ bf = p.bf.data();
    const A* __restrict__ br = p.br.data();
    const A* __restrict__ m = p.m.data();
    const A scale = a.x ? a.scale_x : A(1);
    const i64 C = a.C, N = a.N, K = a.K, L = a.L;
    for (i64 j = 0; j < nb; ++j) gc[j] = a.grad_c_n[n * C + col0 + j];
    for (i64 s = 0; s < L; ++s) {
        const i64 t = reverse ? s : L - 1 - s;  // forward order was t = 0..L-1 (or L-1..0 when reverse)
        const i64 row = t * N + n;
        T* gu0 = a.grad_u + row * K * C + col0;
        T* gu1 = gu0 + C;
        T* gu2 = gu0 + 2 * C;
        T* gxs = a.x ? a.grad_x + row * C + col0 : gu0 + 3 * C;
        if (a.mask && a.mask[row]) {  // padding: no gradient to this step's inputs, dL/dc passes unchanged
            for (i64 j = 0; j < nb; ++j) {
                gu0[j] = S::store(A(0));
                gu1[j] = S::store(A(0));
                gu2[j] = S::store(A(0));
                if (SKIP) gxs[j] = S::store(A(0));
            }
            continue;
        }
        const bool first = reverse ? t == L - 1 : t == 0;
        const A* cprev = first ? a.c0 + n * C + col0 : a.c_all + (row + (reverse ? N : -N)) * C + col0;
        const T* u0 = a.u + row * K * C + col0;
        const T* xs = a.x ? a.x + row * C + col0 : u0 + 3 * C;
        backward_columns<S, SKIP, TANH, PEEP>(u0, u0 + C, u0 + 2 * C, xs, scale, vf, vr, bf, br, m, cprev,
                                        a.grad_h + row * C + col0, gc, gvf, gvr, gbf, gbr, gu0, gu1, gu2, gxs, nb);
    }
    A* gc0 = a.grad_c0 + n * C + col0;
    A* part = a.partial + n * 4 * C + col0;
    for (i64 j = 0; j < nb; ++j) {
        gc0[j] = gc[j];
        part[j] = gvf[j];
        part[C + j] = gvr[j];
        part[2 * C + j] = gbf[j];
        part[3 * C + j] = gbr[j];
    }
}

// Split the columns of one direction into blocks so that there are enough tasks for the threads, but keep
// blocks long (contiguous runs of memory per time step).
inline i64 block_size(i64 N, i64 D, i64 H, int threads) {
    i64 blk = H;
    while (blk > 64 && N * D * ((H + blk - 1) / blk) < 4 * i64(threads)) blk = (blk + 1) / 2;
    return blk < 16 ? 16 : (blk + 15) / 16 * 16;
}

// Returns a status (status.h): an exception must not leave an OpenMP region (std::terminate), so each task
// catches its own (a task's small column buffers can fail to allocate) and the remaining tasks are skipped.
template <typename S, bool BACKWARD, bool SKIP, bool TANH, bool PEEP>
int run(const Args<S>& a, int threads) {
    if (threads < 1) threads = 1;
    const i64 blk = block_size(a.N, a.D, a.H, threads);
    const i64 nblk = (a.H + blk - 1) / blk;
    const i64 tasks = a.N * a.D * nblk;
    std::atomic<int> status{parrnn::kOk};
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && tasks > 1)
#endif
    for (i64 task = 0; task < tasks; ++task) {
        if (status.load(std::memory_order_relaxed) != parrnn::kOk) continue;
        const i64 n = task / (a.D * nblk);
        const i64 rem = task % (a.D * nblk);
        const i64 d = rem / nblk;
        const i64 b = rem % nblk;
        const i64 col0 = d * a.H + b * blk;
        const i64 nb = (b + 1) * blk > a.H ? a.H - b * blk : blk;
        const int failed = parrnn::guarded([&]() {
            if (BACKWARD)
                backward_task<S, SKIP, TANH, PEEP>(a, n, col0, nb, d == 1);
            else
                forward_task<S, SKIP, TANH, PEEP>(a, n, col0, nb, d == 1);
            return int(parrnn::kOk);
        });
        if (failed != parrnn::kOk) status.store(failed);
    }
    return status.load();
}

template <typename S, bool BACKWARD, bool SKIP, bool TANH>
int run_peephole(const Args<S>& a, int threads) {
    return a.weight_c ? run<S, BACKWARD, SKIP, TANH, true>(a, threads)
                      : run<S, BACKWARD, SKIP, TANH, false>(a, threads);
}

template <typename S, bool BACKWARD>
int dispatch(const Args<S>& a, int skip, int use_tanh, int threads) {
    if (a.L < 0 || a.N < 0 || a.C < 0 || (a.K != 3 && a.K != 4) || (a.D != 1 && a.D != 2) || a.H * a.D != a.C)
        return parrnn::kBadShape;
    if (skip != kNoSkip && skip != kSkipX && skip != kSkipU3) return parrnn::kUnknownSkip;
    if ((skip == kSkipX && !a.x) || (skip == kSkipU3 && (a.K != 4 || a.x)) || (skip == kNoSkip && a.x))
        return parrnn::kBadSkip;
    if (skip == kNoSkip)
        return use_tanh ? run_peephole<S, BACKWARD, false, true>(a, threads)
                        : run_peephole<S, BACKWARD, false, false>(a, threads);
    return use_tanh ? run_peephole<S, BACKWARD, true, true>(a, threads)
                    : run_peephole<S, BACKWARD, true, false>(a, threads);
}

// Args with the inputs both passes read (the per-pass outputs are left null).
template <typename S>
Args<S> input_args(const void* u, const void* x, const void* weight_c, const void* bias, const void* c0,
                   const void* mask, const void* drop, i64 L, i64 N, i64 C, i64 K, int bidirectional, double scale_x) {
    using T = typename S::T;
    using A = typename S::A;
    Args<S> a{};
    a.u = static_cast<const T*>(u);
    a.x = static_cast<const T*>(x);
    a.weight_c = static_cast<const A*>(weight_c);
    a.bias = static_cast<const A*>(bias);
    a.c0 = static_cast<const A*>(c0);
    a.mask = static_cast<const uint8_t*>(mask);
    a.drop = static_cast<const A*>(drop);
    a.L = L, a.N = N, a.C = C, a.K = K, a.D = bidirectional ? 2 : 1, a.H = C / a.D;
    a.scale_x = A(scale_x);
    return a;
}

template <typename S>
int forward(const void* u, const void* x, const void* weight_c, const void* bias, const void* c0,
            const void* mask, const void* drop, void* h, void* c_n, void* c_all, i64 L, i64 N, i64 C, i64 K,
            int bidirectional, int use_tanh, int skip, double scale_x, int threads) {
    using T = typename S::T;
    using A = typename S::A;
    Args<S> a = input_args<S>(u, x, weight_c, bias, c0, mask, drop, L, N, C, K, bidirectional, scale_x);
    a.h = static_cast<T*>(h);
    a.c_n = static_cast<A*>(c_n);
    a.c_all = static_cast<A*>(c_all);
    return dispatch<S, false>(a, skip, use_tanh, threads);
}

template <typename S>
int backward(const void* grad_h, const void* grad_c_n, const void* u, const void* x, const void* weight_c,
             const void* bias, const void* c0, const void* mask, const void* drop, const void* c_all, void* grad_u,
             void* grad_x, void* partial, void* grad_c0, i64 L, i64 N, i64 C, i64 K, int bidirectional,
             int use_tanh, int skip, double scale_x, int threads) {
    using T = typename S::T;
    using A = typename S::A;
    Args<S> a = input_args<S>(u, x, weight_c, bias, c0, mask, drop, L, N, C, K, bidirectional, scale_x);
    a.grad_h = static_cast<const T*>(grad_h);
    a.grad_c_n = static_cast<const A*>(grad_c_n);
    a.c_all = static_cast<A*>(const_cast<void*>(c_all));
    a.grad_u = static_cast<T*>(grad_u);
    a.grad_x = static_cast<T*>(grad_x);
    a.partial = static_cast<A*>(partial);
    a.grad_c0 = static_cast<A*>(grad_c0);
    return dispatch<S, true>(a, skip, use_tanh, threads);
}

template <typename S>
void convert_test(const void* src, void* dst, i64 n, int to_storage) {
    if (to_storage) {
        for (i64 i = 0; i < n; ++i) static_cast<typename S::T*>(dst)[i] = S::store(static_cast<const float*>(src)[i]);
    } else {
        for (i64 i = 0; i < n; ++i) static_cast<float*>(dst)[i] = S::load(static_cast<const typename S::T*>(src)[i]);
    }
}

}  // namespace

// ---- C entry points (called through ctypes by parrnn/ops/sru/sequential_cpu.py) ---------------------------
// Return a status (status.h): 0, kBadShape/kBadSkip/kUnknownSkip for inconsistent sizes/options, or the code of
// a C++ exception (never one through the C ABI). `skip`: 0 none, 1 scale_x * x, 2 u[:, :, 3].

#define PARRNN_SRU_CPU_ENTRY(SUFFIX, S)                                                                           \
    extern "C" int parrnn_sru_cpu_forward_##SUFFIX(                                                               \
        const void* u, const void* x, const void* weight_c, const void* bias, const void* c0, const void* mask,   \
        const void* drop, void* h, void* c_n, void* c_all, int64_t L, int64_t N, int64_t C, int64_t K,             \
        int bidirectional, int use_tanh, int skip, double scale_x, int threads) {                                 \
        return parrnn::guarded([&]() {                                                                            \
            return forward<S>(u, x, weight_c, bias, c0, mask, drop, h, c_n, c_all, L, N, C, K, bidirectional,    \
                              use_tanh, skip, scale_x, threads);                                                  \
        });                                                                                                       \
    }                                                                                                             \
    extern "C" int parrnn_sru_cpu_backward_##SUFFIX(                                                              \
        const void* grad_h, const void* grad_c_n, const void* u, const void* x, const void* weight_c,             \
        const void* bias, const void* c0, const void* mask, const void* drop, const void* c_all, void* grad_u,    \
        void* grad_x, void* partial, void* grad_c0, int64_t L, int64_t N, int64_t C, int64_t K,                  \
        int bidirectional, int use_tanh, int skip, double scale_x, int threads) {                                 \
        return parrnn::guarded([&]() {                                                                            \
            return backward<S>(grad_h, grad_c_n, u, x, weight_c, bias, c0, mask, drop, c_all, grad_u, grad_x,    \
                               partial, grad_c0, L, N, C, K, bidirectional, use_tanh, skip, scale_x, threads);    \
        });                                                                                                       \
    }

PARRNN_SRU_CPU_ENTRY(f32, F32)
PARRNN_SRU_CPU_ENTRY(f64, F64)
PARRNN_SRU_CPU_ENTRY(bf16, BF16)
PARRNN_SRU_CPU_ENTRY(f16, F16)

// Test hooks for the 16-bit conversions: float32 <-> storage bit patterns, n elements.
extern "C" void parrnn_sru_cpu_convert_bf16(const void* src, void* dst, int64_t n, int to_storage) {
    convert_test<BF16>(src, dst, n, to_storage);
}
extern "C" void parrnn_sru_cpu_convert_f16(const void* src, void* dst, int64_t n, int to_storage) {
    convert_test<F16>(src, dst, n, to_storage);
}

extern "C" int parrnn_sru_cpu_openmp_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 0;
#endif
}
