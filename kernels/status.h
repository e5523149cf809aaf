// Status codes of every CPU entry point (called through ctypes), and the guard that turns a C++ exception into one.
// parrnn/ops/build.py (STATUS_CODES, check_status) maps each code to a named Python error; keep the two in step.
#pragma once

#include <new>
#include <system_error>

namespace parrnn {

enum Status : int {
    kOk = 0,
    kOutOfMemory = 1,   // std::bad_alloc (scratch buffers)
    kThreadError = 2,   // std::system_error (a worker thread)
    kUnexpected = 3,    // any other C++ exception
    kBadShape = 11,     // sizes out of range
    kBadSkip = 12,      // skip-connection mode inconsistent with x / K
    kUnknownSkip = 13,  // skip-connection mode not 0, 1, 2
};

// Runs f() (returning a Status) and maps any exception escaping it to a Status: nothing ever unwinds through the
// C ABI (which would std::terminate the Python process).
template <typename F>
int guarded(F&& f) noexcept {
    try {
        return f();
    } catch (const std::bad_alloc&) {
        return kOutOfMemory;
    } catch (const std::system_error&) {
        return kThreadError;
    } catch (...) {
        return kUnexpected;
    }
}

}  // namespace parrnn
