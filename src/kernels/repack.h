// Row-interleaved ("repacked") Q4_0 and Q4_K weights for the int8-activation decode GEMV: the
// layout llama.cpp's CPU backend builds at load (its q4_0 8x8 / q4_K 8x8 repacks), rewritten
// for our kernels. Eight consecutive rows are stored together block by block, so one broadcast
// of 4 activation codes multiplies 4 weights of each of the 8 rows in one 32-byte vector and the
// 8 outputs come out in the 8 f32 lanes (no horizontal sum, one float multiply-add per block for
// 8 rows). The stored state (files, checkpoints) keeps ggml's blocks; this is an in-memory form
// that the native engine builds in place of the streamed copy (src/infer/llama_cpu.cpp).
//
// Layouts, per group of 8 rows g (rows 8g..8g+7) and block j, tiles in order g·nb + j:
//   Q4_0 (144 bytes, = 8 blocks): d[8] (row r's f16 step), qs[v][r][b] = byte 4v+b of row r's
//        block (v < 4, b < 4): low nibble = element 4v+b, high nibble = element 16+4v+b.
//   Q4_K (1184 bytes, 8 super-blocks are 1152: the 6-bit scales are stored unpacked): d[8],
//        dmin[8], sc[i][r] (sub-block i's 6-bit scale of row r), mn[c][r][h] (min of sub-block
//        2c+h), qs[c][v][r][b] = byte 32c+4v+b of row r's qs (low nibble: element 64c+4v+b of
//        sub-block 2c, high nibble: element 64c+32+4v+b of sub-block 2c+1).
// The repack is a bijection: unpack_rows gives back the original rows byte for byte.
//
// gemv_repacked_rows computes, for each row, exactly what the scalar twins of gemm_quant.h
// compute on the original row (Q4_0: dot_act_q8_ref, one fma per block in block order; Q4_K:
// dot_act_q8k_ref against the q8_K form, one fma per super-block): the 8 lanes are the 8 rows'
// sequential sums, so the result is bit-identical to the twin on every SIMD target and for every
// thread count. Integer sums: vpmaddubsw (nibble × int8, pairs ≤ 2·15·127 = 3810), 8 of them
// summed in i16 (≤ 30480, no saturation), then vpmaddwd by 1 (Q4_0) or by the sub-block scale (Q4_K).
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/gemm_quant.h"

namespace llmopt::kernels {

inline constexpr int64_t kRepackRows = 8;

// Q4_0 / Q4_K with n a multiple of 8 and whole blocks per row.
bool repack_supports(DType w_type, int64_t n, int64_t k);
// Bytes of the repacked n×k matrix (Q4_0: the same as the blocks; Q4_K: 1184/1152 of them).
int64_t repacked_bytes(DType w_type, int64_t n, int64_t k);
// src: n rows of k weights in ggml blocks → dst (repacked_bytes). InputError unless supported.
void repack_rows(DType w_type, const void* src, void* dst, int64_t n, int64_t k);
// Rows [r0, r1) of a repacked matrix back in ggml blocks (dst: (r1 - r0) rows). Unchecked.
void unpack_rows(DType w_type, const void* packed, int64_t k, int64_t r0, int64_t r1, void* dst);

// y[r] = row r · x (+ bias[r]) for r in [r0, r1) (multiples of 8, or r1 = n), on the calling
// thread; x quantized by ActRow::quantize (Q4_K: k a multiple of 256, its q8_K form). Unchecked.
void gemv_repacked_rows(DType w_type, const void* w, const ActRow& x, const float* bias, float* y, int64_t r0,
                        int64_t r1);
// Scalar twin: each row unpacked, then dot_act_q8_ref (Q4_0) / dot_act_q8k_ref (Q4_K) (+ bias).
void gemv_repacked_rows_ref(DType w_type, const void* w, const ActRow& x, const float* bias, float* y,
                            int64_t r0, int64_t r1);
// y[n] = W·x (+ bias): x quantized once, groups of 8 rows split over threads (thread-invariant).
// InputError unless repack_supports(w_type, n, k).
void gemv_repacked(DType w_type, const void* w, const float* x, const float* bias, float* y, int64_t n, int64_t k,
                   int num_threads = 0);

}  // namespace llmopt::kernels
