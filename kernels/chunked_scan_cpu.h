// The driver of a chunked time-parallel scan on the CPU, shared by kernels/sru_scan_cpu.cpp (the SRU v1 scan) and
// kernels/linear_recurrence_cpu.cpp (the linear-recurrence scan): a thread pool over tasks and the three phases
// (chunk 0 fused while the other chunks reduce; serial carries; the other chunks fused from their carries).
// What a chunk's fused pass and its reduction compute is the caller's (two callables); the carries compose the
// chunk maps with parrnn::scan::apply (sru_scan.cuh).
#pragma once

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "sru_scan.cuh"

namespace parrnn {
namespace scan_cpu {

typedef long long i64;
using parrnn::scan::Affine;

// Test hook: the number of worker threads parallel_tasks may start before std::thread's constructor is made to
// throw (negative: no limit). Lets the tests check the recovery below without exhausting the machine's threads.
inline int g_thread_start_limit = -1;

// Runs f(0) .. f(ntasks-1) on up to `nthreads` threads (the caller's thread included) and returns when all are
// done. Plain std::thread + join rather than OpenMP: joins block in the kernel instead of spin-waiting, which
// matters when the cores are shared (a spinning OpenMP barrier loses whole time slices to other processes).
// Exception-safe: when starting a thread throws (std::system_error: the process is out of threads), no more are
// started and the started ones plus the caller's thread run every task (the tasks are pulled from a shared
// counter); an exception thrown by a task stops the remaining tasks, every started thread is joined, and the first
// exception is rethrown to the caller (whose entry point turns it into a status code, status.h). Never a joinable
// std::thread destroyed (std::terminate).
template <typename F>
void parallel_tasks(i64 ntasks, int nthreads, F&& f) {
    const i64 workers = std::min<i64>(ntasks, nthreads);
    if (workers <= 1) {
        for (i64 t = 0; t < ntasks; ++t) f(t);
        return;
    }
    std::atomic<i64> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex error_lock;
    auto work = [&]() noexcept {
        for (i64 t = next.fetch_add(1); t < ntasks && !failed.load(); t = next.fetch_add(1)) {
            try {
                f(t);
            } catch (...) {
                std::lock_guard<std::mutex> guard(error_lock);
                if (!error) error = std::current_exception();
                failed = true;
            }
        }
    };
    std::vector<std::thread> pool;
    try {
        pool.reserve(size_t(workers - 1));
        for (i64 i = 1; i < workers; ++i) {
            if (g_thread_start_limit >= 0 && i > g_thread_start_limit)
                throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again));
            pool.emplace_back(work);
        }
    } catch (const std::exception&) {
        // fewer threads than asked for: the started ones and this one still run every task
    }
    work();
    for (std::thread& th : pool) th.join();
    if (error) std::rethrow_exception(error);
}

// state (n, NC): state[0] holds the initial state on entry; on return state[n-1] holds the final one.
// fused(k, q0, q1, state_k) runs the recurrence of chunk k; reduce(q0, q1, a, b) composes chunk maps.
template <typename T, typename Fused, typename Reduce>
void three_phases(const i64* bounds, i64 n, i64 nc, int nthreads, T* state, Fused&& fused, Reduce&& reduce) {
    if (n == 1) {
        fused(0, bounds[0], bounds[1], state);
        return;
    }
    std::vector<T> agg_a(size_t(n * nc)), agg_b(size_t(n * nc));
    // phase 1: chunk 0 runs fused from the known initial state while chunks 1 .. n-2 are reduced
    parallel_tasks(n - 1, nthreads, [&](i64 task) {
        if (task == 0) {
            fused(0, bounds[0], bounds[1], state);
        } else {
            reduce(bounds[task], bounds[task + 1], agg_a.data() + task * nc, agg_b.data() + task * nc);
        }
    });
    // phase 2: carries (serial over chunks, vectorised over columns)
    for (i64 k = 1; k < n; ++k) {
        T* cur = state + k * nc;
        const T* prev = state + (k - 1) * nc;
        if (k == 1) {
            for (i64 i = 0; i < nc; ++i) cur[i] = prev[i];
        } else {
            const T* a = agg_a.data() + (k - 1) * nc;
            const T* b = agg_b.data() + (k - 1) * nc;
            for (i64 i = 0; i < nc; ++i) cur[i] = parrnn::scan::apply(Affine<T>{a[i], b[i]}, prev[i]);
        }
    }
    // phase 3: chunks 1 .. n-1 rerun fused from their carries
    parallel_tasks(n - 1, nthreads, [&](i64 task) { fused(task + 1, bounds[task + 1], bounds[task + 2],
                                                          state + (task + 1) * nc); });
}

}  // namespace scan_cpu
}  // namespace parrnn
