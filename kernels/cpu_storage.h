// Storage types of the CPU kernels (kernels/sru_cpu.cpp, kernels/linear_recurrence_cpu.cpp): each a traits struct
// with the storage type T (bfloat16/float16 as uint16_t bit patterns, bit-compatible with torch's), the arithmetic
// type A (double for double, float otherwise) and branch-free load/store, so the callers' column loops vectorize.
// (The CUDA kernels and their host-shim builds use sru_storage.cuh instead.)
#pragma once

#include <cstdint>

#include "sru_step.cuh"  // parrnn::detail::bits_to_float / float_to_bits

namespace parrnn {
namespace cpu_storage {

struct F32 {
    using T = float;
    using A = float;
    static A load(T v) { return v; }
    static T store(A v) { return v; }
};

struct F64 {
    using T = double;
    using A = double;
    static A load(T v) { return v; }
    static T store(A v) { return v; }
};

struct BF16 {  // bfloat16: the upper half of a float; round to nearest even, NaN stays NaN
    using T = uint16_t;
    using A = float;
    static A load(T v) { return parrnn::detail::bits_to_float(uint32_t(v) << 16); }
    static T store(A f) {
        const uint32_t u = parrnn::detail::float_to_bits(f);
        const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
        return T(nan ? 0x7fc0u : rounded);
    }
};

struct F16 {  // IEEE binary16 (algorithms of the FP16 library by M. Dukhan, branch-free, exact / round-to-even)
    using T = uint16_t;
    using A = float;
    static A load(T h) {
        const uint32_t w = uint32_t(h) << 16;
        const uint32_t sign = w & 0x80000000u;
        const uint32_t two_w = w + w;
        const float normalized = parrnn::detail::bits_to_float((two_w >> 4) + (0xe0u << 23)) * 0x1.0p-112f;
        const float denormalized = parrnn::detail::bits_to_float((two_w >> 17) | (126u << 23)) - 0.5f;
        const uint32_t bits = two_w < (1u << 27) ? parrnn::detail::float_to_bits(denormalized)
                                                 : parrnn::detail::float_to_bits(normalized);
        return parrnn::detail::bits_to_float(sign | bits);
    }
    static T store(A f) {
        const float abs_f = parrnn::detail::bits_to_float(parrnn::detail::float_to_bits(f) & 0x7fffffffu);
        float base = (abs_f * 0x1.0p+112f) * 0x1.0p-110f;
        const uint32_t w = parrnn::detail::float_to_bits(f);
        const uint32_t shl1_w = w + w;
        const uint32_t sign = w & 0x80000000u;
        uint32_t bias = shl1_w & 0xff000000u;
        bias = bias < 0x71000000u ? 0x71000000u : bias;
        base = parrnn::detail::bits_to_float((bias >> 1) + 0x07800000u) + base;
        const uint32_t bits = parrnn::detail::float_to_bits(base);
        const uint32_t exp_bits = (bits >> 13) & 0x00007c00u;
        const uint32_t mantissa_bits = bits & 0x00000fffu;
        const uint32_t nonsign = exp_bits + mantissa_bits;
        return T((sign >> 16) | (shl1_w > 0xff000000u ? 0x7e00u : nonsign));
    }
};

}  // namespace cpu_storage
}  // namespace parrnn
