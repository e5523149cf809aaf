// Shared by the CUDA kernel sources (sru_recurrence.cu, sru_scan.cu): the platform prelude (CUDA's 16-bit types
// under nvcc/NVRTC, host_shim.h in the host C++ builds of the CPU tests), storage <-> arithmetic conversions, and
// the list of storage types to instantiate.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define PARRNN_LDG(p) __ldg(p)
#else
#include "host_shim.h"
#define PARRNN_LDG(p) (*(p))
#endif

#ifndef PARRNN_HOST_ENTRY
#define PARRNN_HOST_ENTRY(name, params, args)
#endif

namespace parrnn {
namespace storage {

// ---- storage T <-> arithmetic A (float; double for double) -----------------------------------------------------

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void store_as(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_as(double* p, double v) { *p = v; }
__device__ __forceinline__ void store_as(__half* p, float v) { *p = __float2half(v); }
__device__ __forceinline__ void store_as(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }

// p[i] (read through the read-only cache on the device) in the arithmetic type A.
template <typename T, typename A>
__device__ __forceinline__ A load(const T* p, long long i) {
    return A(to_acc(PARRNN_LDG(p + i)));
}

// p[i] = v, rounded to the storage type T (to nearest even).
template <typename T, typename A>
__device__ __forceinline__ void store(T* p, long long i, A v) {
    store_as(p + i, v);
}

}  // namespace storage
}  // namespace parrnn

// ---- storage types to instantiate --------------------------------------------------------------------------------
// PARRNN_FOR_EACH_STORAGE_TYPE(M) expands M(suffix, storage type, arithmetic type) for every storage type, or only
// for the one named by -DPARRNN_ONLY_<SUFFIX> (e.g. PARRNN_ONLY_F16: parrnn.kernels check compiles one at a time).

#if !defined(PARRNN_ONLY_F32) && !defined(PARRNN_ONLY_F64) && !defined(PARRNN_ONLY_F16) && \
    !defined(PARRNN_ONLY_BF16)
#define PARRNN_ALL_TYPES 1
#endif
#if defined(PARRNN_ALL_TYPES) || defined(PARRNN_ONLY_F32)
#define PARRNN_IF_F32(...) __VA_ARGS__
#else
#define PARRNN_IF_F32(...)
#endif
#if defined(PARRNN_ALL_TYPES) || defined(PARRNN_ONLY_F64)
#define PARRNN_IF_F64(...) __VA_ARGS__
#else
#define PARRNN_IF_F64(...)
#endif
#if defined(PARRNN_ALL_TYPES) || defined(PARRNN_ONLY_F16)
#define PARRNN_IF_F16(...) __VA_ARGS__
#else
#define PARRNN_IF_F16(...)
#endif
#if defined(PARRNN_ALL_TYPES) || defined(PARRNN_ONLY_BF16)
#define PARRNN_IF_BF16(...) __VA_ARGS__
#else
#define PARRNN_IF_BF16(...)
#endif

#define PARRNN_FOR_EACH_STORAGE_TYPE(M)                                                                          \
    PARRNN_IF_F32(M(f32, float, float))                                                                          \
    PARRNN_IF_F64(M(f64, double, double))                                                                        \
    PARRNN_IF_F16(M(f16, __half, float))                                                                         \
    PARRNN_IF_BF16(M(bf16, __nv_bfloat16, float))
