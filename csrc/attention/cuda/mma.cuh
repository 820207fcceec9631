// Tensor-core building blocks for the attention tile kernels (sm_80+): mma.sync m16n8k16 with bfloat16/float16
// inputs and float32 accumulators, ldmatrix, cp.async, and fragment loads from padded shared-memory tiles.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"), lane = 4 * g + t (g = lane / 4, t = lane % 4):
//   A (16 x 16, row-major), 4 x b32: a[0] = (g, 2t..2t+1)  a[1] = (g+8, 2t..)  a[2] = (g, 2t+8..)  a[3] = (g+8, 2t+8..)
//   B (16 x 8, k x n),      2 x b32: b[0] = (k = 2t..2t+1, n = g)  b[1] = (k = 2t+8..2t+9, n = g)
//   C (16 x 8, float32),    4 x f32: c[0..1] = (g, 2t..2t+1)  c[2..3] = (g+8, 2t..2t+1)
// So the C fragments of two neighbouring 8-column tiles are, packed to 16 bits, the A fragment of one 16-wide k step:
// probabilities go from the score product straight into the P.V product without leaving registers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace enigma_fast {
namespace attention {
namespace cuda {

template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two floats rounded to T, packed low = x, high = y.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float x, float y) {
  uint32_t r;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    r = *reinterpret_cast<const uint32_t*>(&h);
  } else {
    const __half2 h = __floats2half2_rn(x, y);
    r = *reinterpret_cast<const uint32_t*>(&h);
  }
  return r;
}

template <typename T>
__device__ __forceinline__ T to16(float x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(x);
  else return __float2half_rn(x);
}

template <typename T>
__device__ __forceinline__ float2 unpack2(uint32_t v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
  } else {
    return __half22float2(*reinterpret_cast<const __half2*>(&v));
  }
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronous; src_bytes = 0 writes zeros without reading.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// A fragment of rows r0..r0+15, columns c0..c0+15 of a row-major 16-bit tile with row pitch `pitch` elements.
template <typename T>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const T* s, int pitch, int r0, int c0, int lane) {
  const int g = lane >> 2, t = lane & 3;
  const T* p = s + (r0 + g) * pitch + c0 + 2 * t;
  a[0] = *reinterpret_cast<const uint32_t*>(p);
  a[1] = *reinterpret_cast<const uint32_t*>(p + 8 * pitch);
  a[2] = *reinterpret_cast<const uint32_t*>(p + 8);
  a[3] = *reinterpret_cast<const uint32_t*>(p + 8 * pitch + 8);
}

// B fragment (k x n = 16 x 8) whose column n is row n0 + n of a row-major tile, k = columns k0..k0+15
// (the "K^T" operand: B[k][n] = tile[n0 + n][k0 + k]).
template <typename T>
__device__ __forceinline__ void load_b_rows(uint32_t& b0, uint32_t& b1, const T* s, int pitch, int n0, int k0,
                                            int lane) {
  const int g = lane >> 2, t = lane & 3;
  const T* p = s + (n0 + g) * pitch + k0 + 2 * t;
  b0 = *reinterpret_cast<const uint32_t*>(p);
  b1 = *reinterpret_cast<const uint32_t*>(p + 8);
}

// Two B fragments (k x n = 16 x 8 each, n0..n0+7 and n0+8..n0+15) with B[k][n] = tile[k0 + k][n0 + n] of a row-major
// tile (the "V" operand), by ldmatrix.trans: lanes 8i..8i+7 address the rows of 8 x 8 matrix i, matrices
// (k0, n0), (k0+8, n0), (k0, n0+8), (k0+8, n0+8); .trans hands lane 4g+t the elements [2t][g], [2t+1][g] of each.
template <typename T>
__device__ __forceinline__ void load_b_cols_x2(uint32_t (&b)[4], const T* s, int pitch, int k0, int n0, int lane) {
  const int row = k0 + (lane & 7) + ((lane >> 3) & 1) * 8;
  const int col = n0 + (lane >> 4) * 8;
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
               : "r"(smem_u32(s + row * pitch + col)));
}

}  // namespace cuda
}  // namespace attention
}  // namespace enigma_fast
