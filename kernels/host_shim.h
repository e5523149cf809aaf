// Compile CUDA kernels as plain C++ so the CPU test suite runs the very code the GPU runs.
//
// Included by a `.cu` file only when it is NOT compiled by nvcc/NVRTC (see kernels/sru_recurrence.cu). It maps
// the CUDA qualifiers to nothing, the thread-index built-ins to thread_local variables that a host driver sets
// before calling a kernel, and the 16-bit float storage types to small host structs whose conversions round to
// nearest-even exactly like `__float2half` / `__float2bfloat16` on the device (bit-compatible with torch's
// float16 / bfloat16 storage, so tensors cross through ctypes by data pointer).
//
// The host driver is the macro PARRNN_HOST_ENTRY(name, (params), (args)): after the kernel `name` is defined it
// emits `extern "C" void host_<name>(long long grid, int block, params...)`, which runs every (block, thread)
// of a 1-D launch sequentially. That is faithful for kernels that use no shared memory, barriers or warp
// intrinsics (each thread independent) -- true for the one-thread-per-column recurrence kernels.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#error "host_shim.h is for host (g++/clang++) builds of CUDA sources only"
#endif

#include <cmath>
#include <cstdint>
#include <cstring>

#include "sru_step.cuh"  // host bit-cast helpers (parrnn::detail), shared with the CPU backend

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

// The launch geometry seen by the kernel that is running on this host thread.
inline thread_local dim3 blockIdx, threadIdx, blockDim, gridDim;

// ---- 16-bit storage types ------------------------------------------------------------------------------------

namespace parrnn_host {

using parrnn::detail::bits_to_float;
using parrnn::detail::float_to_bits;

// IEEE binary16 -> binary32 (exact).
inline float half_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1fu) return bits_to_float(sign | 0x7f800000u | (mant << 13));  // inf / nan
    if (exp == 0) {
        if (mant == 0) return bits_to_float(sign);                             // +-0
        // subnormal: value = mant * 2^-24
        const float v = std::ldexp(float(mant), -24);
        return sign ? -v : v;
    }
    return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

// binary32 -> binary16, round to nearest even (matches __float2half / __float2half_rn).
inline uint16_t float_to_half(float f) {
    const uint32_t x = float_to_bits(f);
    const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));  // inf / nan
    if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520 -> inf
    if (ax < 0x38800000u) {                                  // below the smallest normal half (2^-14)
        // subnormal half: round(|f| * 2^24) to nearest even; exact in float arithmetic
        const float scaled = bits_to_float(ax) * 16777216.0f;    // * 2^24, exact (power of two)
        const float r = std::nearbyint(scaled);               // default rounding mode: nearest even
        return uint16_t(sign | uint16_t(r));
    }
    // normal: rebias exponent, round mantissa 23 -> 10 bits to nearest even
    const uint32_t e = (ax >> 23) - 112u;
    uint32_t m = ax & 0x7fffffu;
    uint32_t h = (e << 10) | (m >> 13);
    const uint32_t rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent: still correct
    return uint16_t(sign | h);
}

// binary32 -> bfloat16, round to nearest even (matches __float2bfloat16 / __float2bfloat16_rn).
inline uint16_t float_to_bf16(float f) {
    const uint32_t x = float_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // quiet nan
    const uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
    return uint16_t((x + rounding) >> 16);
}

inline float bf16_to_float(uint16_t b) { return bits_to_float(uint32_t(b) << 16); }

}  // namespace parrnn_host

struct __half {
    uint16_t x;
};

struct __nv_bfloat16 {
    uint16_t x;
};

static_assert(sizeof(__half) == 2 && sizeof(__nv_bfloat16) == 2, "16-bit storage types must be 2 bytes");

inline float __half2float(__half h) { return parrnn_host::half_to_float(h.x); }
inline __half __float2half(float f) { return __half{parrnn_host::float_to_half(f)}; }
inline __half __float2half_rn(float f) { return __float2half(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return parrnn_host::bf16_to_float(b.x); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16{parrnn_host::float_to_bf16(f)}; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }

// Plain loads on the host (on the device these are read-only-cache loads).
template <typename T>
inline T __ldg(const T* p) {
    return *p;
}

// ---- the host driver ------------------------------------------------------------------------------------------

#define PARRNN_UNPACK(...) __VA_ARGS__

// Emits `extern "C" void host_<name>(long long grid, int block, params...)` running a 1-D launch of `name`.
#define PARRNN_HOST_ENTRY(name, params, args)                                        \
    extern "C" void host_##name(long long parrnn_grid, int parrnn_block, PARRNN_UNPACK params) { \
        gridDim = dim3{static_cast<unsigned int>(parrnn_grid), 1u, 1u};                \
        blockDim = dim3{static_cast<unsigned int>(parrnn_block), 1u, 1u};              \
        for (long long b_ = 0; b_ < parrnn_grid; ++b_) {                               \
            blockIdx = dim3{static_cast<unsigned int>(b_), 0u, 0u};                    \
            for (int t_ = 0; t_ < parrnn_block; ++t_) {                                \
                threadIdx = dim3{static_cast<unsigned int>(t_), 0u, 0u};               \
                name(PARRNN_UNPACK args);                                              \
            }                                                                          \
        }                                                                              \
    }
