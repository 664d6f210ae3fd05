/* lowbit native CPU kernels: int4 weights x dynamically quantized int8 activations (see __init__.py for the math).

   Weight layout (`pack_q4`): per row, Kp = K rounded up to 64 codes, split into Kp/64 units of 32 bytes; byte i of
   unit u holds code 64u + i in its low nibble and code 64u + 32 + i in its high nibble, so one 32-byte load and two
   masks give 64 codes in order (two sub-blocks of 32, the unit of activation loads). Activations are int8 (M, Kp),
   one fp32 scale per (row, weight block), zero-padded past K.
   Built by build.py on first use, once per ISA variant (AVX-512 VNNI, AVX-VNNI, AVX2, plain C; see build.py); the
   variant is chosen by the macros below from the compiler flags. This file is package data.

   8-bit container (`pack_q8`, codes of 5..8 bits): per row Kp = K rounded up to 64 bytes, one code per byte in
   order; codes are unsigned (0..255), the u8 operand of the dot, activations the s8 one. */
#include <stdint.h>
#include <math.h>
#include <string.h>
#include <stdlib.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LB_AVX2 1
#else
#define LB_AVX2 0
#endif
/* VNNI: vpdpbusd (u8 x s8, 4 products summed into each int32 lane, no saturation) on 256-bit vectors: the EVEX form
   of AVX-512 VNNI (+VL), or the VEX form of AVX-VNNI (client CPUs). */
#if LB_AVX2 && defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__AVX512BW__)
#define LB_VNNI 2
#define LB_DPBUSD(acc, w, a) _mm256_dpbusd_epi32(acc, w, a)
#elif LB_AVX2 && defined(__AVXVNNI__)
#define LB_VNNI 1
#define LB_DPBUSD(acc, w, a) _mm256_dpbusd_avx_epi32(acc, w, a)
#elif LB_AVX2 && defined(LB_EMULATE_AVXVNNI)
/* Tests only (tests/kernels/test_native_arm.py; no build.py variant defines it): the AVX-VNNI variant's code on a
   CPU without AVX-VNNI (qemu 7.2's TCG lacks it too), vpdpbusd computed exactly: the u8 and s8 bytes at even and
   odd positions widened to int16, two vpmaddwd (|u * s| <= 255 * 128: the pair sums fit int32), added to acc. */
#define LB_VNNI 1
static inline __m256i lb_dpbusd_emulated(__m256i acc, __m256i u, __m256i s) {
    const __m256i lo = _mm256_set1_epi16(0xff);
    const __m256i even = _mm256_madd_epi16(_mm256_and_si256(u, lo), _mm256_srai_epi16(_mm256_slli_epi16(s, 8), 8));
    const __m256i odd = _mm256_madd_epi16(_mm256_srli_epi16(u, 8), _mm256_srai_epi16(s, 8));
    return _mm256_add_epi32(acc, _mm256_add_epi32(even, odd));
}
#define LB_DPBUSD(acc, w, a) lb_dpbusd_emulated(acc, w, a)
#else
#define LB_VNNI 0
#endif
/* aarch64: NEON kernels (lowbit_cpu_rows_neon.h); 1 Advanced SIMD, 2 +dotprod (sdot), 3 +i8mm (usdot). */
#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#if defined(__ARM_FEATURE_MATMUL_INT8) && defined(__ARM_FEATURE_DOTPROD)
#define LB_NEON 3
#elif defined(__ARM_FEATURE_DOTPROD)
#define LB_NEON 2
#else
#define LB_NEON 1
#endif
#else
#define LB_NEON 0
#endif

int lb_simd(void) { return LB_AVX2 || LB_NEON; }
/* The ISA compiled in: 0 plain C, 1 AVX2, 2 AVX-VNNI, 3 AVX-512 VNNI, 4 NEON, 5 +dotprod, 6 +i8mm (build.py maps it
   to a variant name). */
int lb_isa(void) { return LB_NEON ? 3 + LB_NEON : !LB_AVX2 ? 0 : LB_VNNI == 2 ? 3 : LB_VNNI == 1 ? 2 : 1; }
int lb_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

static inline int64_t lb_min(int64_t a, int64_t b) { return a < b ? a : b; }

/* One activation block: d = absmax / 127, q = round_half_even(x / d) in [-127, 127]; returns sum(q). */
static int32_t quant_block(const float* x, int64_t len, int8_t* q, float* d_out) {
    float amax = 0.f;
    int64_t k = 0;
#if LB_AVX2
    __m256 vmax = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (; k + 8 <= len; k += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)));
    float tmp[8];
    _mm256_storeu_ps(tmp, vmax);
    for (int i = 0; i < 8; ++i) amax = tmp[i] > amax ? tmp[i] : amax;
#endif
    for (; k < len; ++k) { float a = fabsf(x[k]); amax = a > amax ? a : amax; }
    float d = amax / 127.f;
    float id = d > 0.f ? 127.f / amax : 0.f;
    int32_t sum = 0;
    k = 0;
#if LB_AVX2
    const __m256 vid = _mm256_set1_ps(id);
    __m256i vsum = _mm256_setzero_si256();
    for (; k + 32 <= len; k += 32) { /* 32 codes, packed to int8 in registers (|q| <= 127: packs never saturate) */
        __m256i q4[4];
        for (int i = 0; i < 4; ++i) {
            q4[i] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8 * i), vid));
            vsum = _mm256_add_epi32(vsum, q4[i]);
        }
        const __m256i p8 = _mm256_packs_epi16(_mm256_packs_epi32(q4[0], q4[1]), _mm256_packs_epi32(q4[2], q4[3]));
        _mm256_storeu_si256((__m256i*)(q + k), _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
    for (; k + 8 <= len; k += 8) {
        __m256i qi = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), vid));
        vsum = _mm256_add_epi32(vsum, qi);
        int32_t t[8];
        _mm256_storeu_si256((__m256i*)t, qi);
        for (int i = 0; i < 8; ++i) q[k + i] = (int8_t)t[i];
    }
    int32_t ts[8];
    _mm256_storeu_si256((__m256i*)ts, vsum);
    for (int i = 0; i < 8; ++i) sum += ts[i];
#endif
    for (; k < len; ++k) { int32_t v = (int32_t)nearbyintf(x[k] * id); q[k] = (int8_t)v; sum += v; }
    *d_out = d;
    return sum;
}

/* x: fp32 (M, K); xq: int8 (M, Kp); xs: fp32 (M, nb): scale * sum(q) per weight block of gk columns. mode (the
   activation scheme, LB_ACT_*): per weight block (xd (M, nb)), per row (one scale, stored in every xd[m, b]), or per
   32 columns (xd (M, Kp / 32), 0 past K; xs[m, b] sums d * sum(q) over the block's 32-column pieces in order). */
#define LB_ACT_BLOCK 0
#define LB_ACT_ROW 1
#define LB_ACT_32 2
void lb_quant_act(const float* x, int64_t M, int64_t K, int64_t Kp, int64_t gk, int64_t nb, int mode,
                  int8_t* xq, float* xd, float* xs, int nt) {
    #pragma omp parallel for num_threads(nt) schedule(static) if (M * K > 65536)
    for (int64_t m = 0; m < M; ++m) {
        int8_t* q = xq + m * Kp;
        float d = 0.f;
        if (mode == LB_ACT_32) {
            float* dr = xd + m * (Kp / 32);
            for (int64_t b = 0; b < nb; ++b) xs[m * nb + b] = 0.f;
            for (int64_t j = 0; j < Kp / 32; ++j) {
                const int64_t lo = j * 32, hi = lb_min(lo + 32, K);
                dr[j] = 0.f;
                if (hi <= lo) continue;
                const int32_t s = quant_block(x + m * K + lo, hi - lo, q + lo, &dr[j]);
                xs[m * nb + lo / gk] += dr[j] * (float)s;
            }
            memset(q + K, 0, (size_t)(Kp - K));
            continue;
        }
        if (mode == LB_ACT_ROW) quant_block(x + m * K, K, q, &d);
        for (int64_t b = 0; b < nb; ++b) {
            int64_t lo = b * gk, hi = lb_min(lo + gk, K);
            int32_t s = 0;
            if (mode == LB_ACT_ROW) {
                for (int64_t k = lo; k < hi; ++k) s += q[k];
            } else if (hi > lo) {
                s = quant_block(x + m * K + lo, hi - lo, q + lo, &d);
            }
            xd[m * nb + b] = d;
            xs[m * nb + b] = d * (float)s;
        }
        memset(q + K, 0, (size_t)(Kp - K));
    }
}

#include "lowbit_cpu_rows.h"  /* q4_row, q8_row, q4_pair_g2, dotf: SIMD and plain C */
#include "lowbit_cpu_sub.h"  /* q4_row_sub, q8_row_sub: activation scales per 32 columns */
#include "lowbit_cpu_f32.h"  /* lb_gemm_f32, lb_dequant: fp32 activations */
#include "lowbit_cpu_gemv.h"  /* gemv_q: M = 1 on 512-bit vectors (AVX-512 VNNI; LB_GEMV 0 elsewhere) */
#if LB_VNNI == 2
#include "lowbit_cpu_tile512.h"  /* gemm_tile512: outputs across lanes, for M >= LB_TILE_MIN_M */
#elif LB_AVX2 && !LB_VNNI
#include "lowbit_cpu_tile256.h"  /* gemm_tile256: the same on AVX2 (8-bit: int16 madd; 4-bit: maddubs) */
#endif
/* From this many activation rows the tiled kernel's per-chunk weight transpose is paid back (measured). */
#ifndef LB_TILE_MIN_M
#define LB_TILE_MIN_M 16
#endif
/* 8-bit codes from 4 rows: the row kernels pay a convert and 2-3 fp32 operations per 32 codes and activation row
   (per-32 scales: precision Normal), which the tile amortizes over 16-32 outputs (4096 x 4096, 1 thread, M 4 / 8:
   avx512vnni 1.60 -> 1.47 / 2.60 -> 1.62 ms, avx2 3.60 -> 2.71 / 5.26 -> 3.75 ms; at M 2 the rows win) */
#ifndef LB_TILE_MIN_M8
#define LB_TILE_MIN_M8 4
#endif

#define Q4_ROWS(GSB, ROWD)                                                                              \
    switch (mr) {                                                                                       \
        case 4: q4_row(wr, sr, nsb, gsb, nb, xr, Kp, dr, 4, GSB, ROWD, out); break;                     \
        case 3: q4_row(wr, sr, nsb, gsb, nb, xr, Kp, dr, 3, GSB, ROWD, out); break;                     \
        case 2: q4_row(wr, sr, nsb, gsb, nb, xr, Kp, dr, 2, GSB, ROWD, out); break;                     \
        default: q4_row(wr, sr, nsb, gsb, nb, xr, Kp, dr, 1, GSB, ROWD, out); break;                    \
    }

#define Q4_GSB(ROWD)                                                                                    \
    switch (gsb) {                                                                                      \
        case 1: Q4_ROWS(1, ROWD); break;                                                                \
        case 2: Q4_ROWS(2, ROWD); break;                                                                \
        case 4: Q4_ROWS(4, ROWD); break;                                                                \
        default: Q4_ROWS(0, ROWD); break;                                                               \
    }

/* y (M, N) fp32 = x_q @ dequant(w).T + bias, where w has codes q (packed, see module docstring), per-block scale
   ws and ws * zero = wsz (N, nb); xs = d * sum(x_q) per (row, block) carries the zero term exactly.
   Activations are walked in chunks of MC rows (kept in L2); within a chunk, work is split over tasks of NC weight
   rows, each walking the chunk 4 rows at a time, so a weight row is decoded once per 4 activation rows.
   Raw dots of a 4 x NC tile go to a local buffer; the row scale, the zero term (with wsz transposed once per task
   when nb <= NBT) and the bias are then applied vectorized over the NC columns. */
#define LB_NC 16
#define LB_NBT 64
#define LB_KC8 1024
/* wt[b * NC + j] = wsz[n0 + j, b] for j < nn, 0 past nn (kept out of line: the GEMM loop keeps its registers). */
static __attribute__((noinline)) void q4_wsz_t(const float* wsz, int64_t n0, int64_t nn, int64_t nb, float* wt) {
    for (int64_t b = 0; b < nb; ++b)
        for (int64_t j = 0; j < LB_NC; ++j) wt[b * LB_NC + j] = 0.f;
    for (int64_t j = 0; j < nn; ++j)
        for (int64_t b = 0; b < nb; ++b) wt[b * LB_NC + j] = wsz[(n0 + j) * nb + b];
}

/* y[r, 0..nn) = acc[r, :] * d_r - zero term + bias for a tile of mr rows x nn (<= NC) columns; the zero term
   comes from wt (wsz transposed, see q4_wsz_t) when given, else from one dot per output. */
static __attribute__((noinline)) void q4_epilogue(const float* acc, int64_t mr, int64_t nn, const float* dr,
                                                  const float* xs, int64_t nb, int per_row, const float* wt,
                                                  const float* wsz, const float* bt, float* y, int64_t N) {
    for (int64_t r = 0; r < mr; ++r) {
        const float d = per_row ? dr[r * nb] : 1.f;
        const float* xsr = xs + r * nb;
        float z[LB_NC];
#if LB_AVX2
        const __m256 vd = _mm256_set1_ps(d);
        __m256 z0 = _mm256_fmadd_ps(_mm256_loadu_ps(acc + r * LB_NC), vd, _mm256_loadu_ps(bt));
        __m256 z1 = _mm256_fmadd_ps(_mm256_loadu_ps(acc + r * LB_NC + 8), vd, _mm256_loadu_ps(bt + 8));
        if (wt) {
            for (int64_t b = 0; b < nb; ++b) {
                const __m256 xb = _mm256_broadcast_ss(xsr + b);
                z0 = _mm256_fnmadd_ps(xb, _mm256_loadu_ps(wt + b * LB_NC), z0);
                z1 = _mm256_fnmadd_ps(xb, _mm256_loadu_ps(wt + b * LB_NC + 8), z1);
            }
        }
        if (wt && nn == LB_NC) {
            _mm256_storeu_ps(y + r * N, z0);
            _mm256_storeu_ps(y + r * N + 8, z1);
            continue;
        }
        _mm256_storeu_ps(z, z0);
        _mm256_storeu_ps(z + 8, z1);
#else
        for (int64_t j = 0; j < LB_NC; ++j) z[j] = acc[r * LB_NC + j] * d + bt[j];
        if (wt)
            for (int64_t b = 0; b < nb; ++b)
                for (int64_t j = 0; j < LB_NC; ++j) z[j] -= xsr[b] * wt[b * LB_NC + j];
#endif
        if (!wt)
            for (int64_t j = 0; j < nn; ++j) z[j] -= dotf(wsz + j * nb, xsr, nb);
        float* yr = y + r * N;
        for (int64_t j = 0; j < nn; ++j) yr[j] = z[j];
    }
}

/* 8-bit rows over one K-chunk (nsbc sub-blocks, nbc blocks, activations xc, scales dc with row stride dstride) */
#define Q8_ROWS(ROWD)                                                                                   \
    switch (mr) {                                                                                       \
        case 4: q8_row(wr, sr, nsbc, gsb, nbc, xc, Kp, dc, dstride, 4, ROWD, out); break;               \
        case 3: q8_row(wr, sr, nsbc, gsb, nbc, xc, Kp, dc, dstride, 3, ROWD, out); break;               \
        case 2: q8_row(wr, sr, nsbc, gsb, nbc, xc, Kp, dc, dstride, 2, ROWD, out); break;               \
        default: q8_row(wr, sr, nsbc, gsb, nbc, xc, Kp, dc, dstride, 1, ROWD, out); break;              \
    }

#define LB_SUB8_ROWS(FN)                                                                                \
    switch (mr) {                                                                                       \
        case 4: FN(wr, sr, nsbc, gsb, nbc, xc, Kp, dc, dstride, 4, out); break;                         \
        case 3: FN(wr, sr, nsbc, gsb, nbc, xc, Kp, dc, dstride, 3, out); break;                         \
        case 2: FN(wr, sr, nsbc, gsb, nbc, xc, Kp, dc, dstride, 2, out); break;                         \
        default: FN(wr, sr, nsbc, gsb, nbc, xc, Kp, dc, dstride, 1, out); break;                        \
    }

#define LB_SUB_ROWS(FN, ...)                                                                            \
    switch (mr) {                                                                                       \
        case 4: FN(wr, sr, nsb, gsb, nb, xr, Kp, dr, 4, out __VA_ARGS__); break;                        \
        case 3: FN(wr, sr, nsb, gsb, nb, xr, Kp, dr, 3, out __VA_ARGS__); break;                        \
        case 2: FN(wr, sr, nsb, gsb, nb, xr, Kp, dr, 2, out __VA_ARGS__); break;                        \
        default: FN(wr, sr, nsb, gsb, nb, xr, Kp, dr, 1, out __VA_ARGS__); break;                       \
    }

/* int4 per-32 rows with the sub-blocks per weight block fixed at compile time where common (0: at run time) */
#define LB_SUB_Q4                                                                                       \
    switch (gsb) {                                                                                      \
        case 1: LB_SUB_ROWS(q4_row_sub, , 1); break;                                                    \
        case 2: LB_SUB_ROWS(q4_row_sub, , 2); break;                                                    \
        case 4: LB_SUB_ROWS(q4_row_sub, , 4); break;                                                    \
        default: LB_SUB_ROWS(q4_row_sub, , 0); break;                                                   \
    }

/* dst[i] = src[i] for i < n (int8 -> lb_act8). */
static void lb_widen(const int8_t* src, int64_t n, lb_act8* dst, int nt) {
    #pragma omp parallel for num_threads(nt) schedule(static) if (n > 262144)
    for (int64_t i0 = 0; i0 < n; i0 += 4096) {
        int64_t i = i0;
        const int64_t i1 = lb_min(i0 + 4096, n);
#if LB_AVX2
        if (sizeof(lb_act8) == 2)
            for (; i + 16 <= i1; i += 16)
                _mm256_storeu_si256((__m256i*)(dst + i), _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(src + i))));
#endif
        for (; i < i1; ++i) dst[i] = (lb_act8)src[i];
    }
}

/* The tiled GEMM shared by both containers (BITS = 4 or 8 bits per stored code; see lb_gemm_q4 for the arguments). */
static inline __attribute__((always_inline)) void gemm_tiles(
        const uint8_t* w, const float* ws, const float* wsz, int64_t N, int64_t Kp, int64_t gsb, int64_t nb,
        const int8_t* xq, const float* xd, const float* xs, int64_t M, int mode, const float* bias, float* y,
        int nt, const int BITS) {
    const int per_row = mode == LB_ACT_ROW;
    const int64_t nsb = Kp / 32, dstride = mode == LB_ACT_32 ? nsb : nb; /* xd's row stride */
    const int64_t tile_min = BITS == 8 ? LB_TILE_MIN_M8 : LB_TILE_MIN_M;
#if LB_VNNI == 2
    if (M >= tile_min && gemm_tile512(w, ws, wsz, N, Kp, gsb, nb, xq, xd, xs, M, mode == LB_ACT_32, bias, y, nt,
                                      BITS, 0))
        return;
#elif LB_AVX2 && !LB_VNNI
    if (M >= tile_min && gemm_tile256(w, ws, wsz, N, Kp, gsb, nb, xq, xd, xs, M, mode == LB_ACT_32, bias, y, nt,
                                      BITS, 0))
        return;
#endif
#if LB_GEMV
    if (M == 1 && gemv_q(w, ws, wsz, N, Kp, gsb, nb, xq, xd, xs, mode, bias, y, nt, BITS)) return;
#endif
    const int64_t row_bytes = Kp * BITS / 8, NC = LB_NC, MC = 32, gk = gsb * 32;
    const int64_t ntask = (N + NC - 1) / NC;
    /* 8-bit K-chunk: whole blocks of about LB_KC8 codes, so that 4 activation rows (int16 without VNNI: 2 bytes a
       code) stay in L1 while the NC weight rows stream past them (one chunk = the whole row at M < 4, or with VNNI) */
    int64_t kc = Kp;
    if (BITS == 8 && sizeof(lb_act8) != 1 && M >= 4) kc = nb == 1 ? LB_KC8 : gk >= LB_KC8 ? gk : LB_KC8 / gk * gk;
    const lb_act8* x8 = (const lb_act8*)xq; /* the 8-bit kernels' activations (int16 on AVX2 without VNNI) */
    lb_act8* x16 = NULL;
    if (BITS == 8 && sizeof(lb_act8) != 1) {
        x16 = (lb_act8*)malloc(sizeof(lb_act8) * (size_t)(M * Kp));
        if (!x16) { /* out of memory (M * Kp * 2 bytes): NaN, never a silent wrong y */
            for (int64_t i = 0; i < M * N; ++i) y[i] = NAN;
            return;
        }
        lb_widen(xq, M * Kp, x16, nt);
        x8 = x16;
    }
    for (int64_t mc = 0; mc < M; mc += MC) {
        const int64_t mc_end = lb_min(mc + MC, M);
        #pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t t = 0; t < ntask; ++t) {
            const int64_t n0 = t * NC, n1 = lb_min(n0 + NC, N), nn = n1 - n0;
            float wt[LB_NBT * LB_NC]; /* wsz (n0..n1, 0..nb) transposed, zero past nn */
            float bt[LB_NC];
            const int trans = nb <= LB_NBT && mc_end - mc >= 4; /* M < 4: one dot per output is cheaper */
            for (int64_t j = 0; j < NC; ++j) bt[j] = (bias && j < nn) ? bias[n0 + j] : 0.f;
            if (trans) q4_wsz_t(wsz, n0, nn, nb, wt);
            for (int64_t m0 = mc; m0 < mc_end; m0 += 4) {
                int64_t mr = lb_min(4, mc_end - m0);
                const int8_t* xr = xq + m0 * Kp;
                const lb_act8* xr8 = x8 + m0 * Kp;
                const float* dr = xd + m0 * dstride;
                float acc[4 * LB_NC];
                if (nn < NC) for (int64_t j = 0; j < 4 * NC; ++j) acc[j] = 0.f; /* lanes past nn: defined, unused */
                int64_t n = n0;
#if LB_AVX2
                if (BITS == 4 && per_row && gsb == 2 && mr == 4 && nb <= 32) /* pairs win at small K (measured: K 384, 1536) */
                    for (; n + 2 <= n1; n += 2) {
                        float o2[8];
                        q4_pair_g2(w + n * row_bytes, w + (n + 1) * row_bytes, ws + n * nb, ws + (n + 1) * nb, nb,
                                   xr, Kp, o2);
                        for (int r = 0; r < 4; ++r) {
                            acc[r * NC + (n - n0)] = o2[r];
                            acc[r * NC + (n + 1 - n0)] = o2[4 + r];
                        }
                    }
#endif
                if (BITS == 4)
                    for (; n < n1; ++n) {
                        float out[4];
                        const uint8_t* wr = w + n * row_bytes;
                        const float* sr = ws + n * nb;
                        if (mode == LB_ACT_32) {
                            LB_SUB_Q4
                        } else if (per_row) { Q4_GSB(1) } else { Q4_GSB(0) }
                        for (int64_t r = 0; r < mr; ++r) acc[r * NC + (n - n0)] = out[r];
                    }
                for (int64_t k0 = 0; BITS == 8 && k0 < Kp; k0 += kc) { /* K-chunks: kc codes of mr rows in L1 */
                    const int64_t b0 = k0 / gk, nsbc = (lb_min(k0 + kc, Kp) - k0) / 32;
                    const int64_t nbc = lb_min(nb, (k0 + kc + gk - 1) / gk) - b0;
                    const lb_act8* xc = xr8 + k0;
                    for (n = n0; n < n1; ++n) {
                        float out[4];
                        const uint8_t* wr = w + n * row_bytes + k0;
                        const float* sr = ws + n * nb + b0;
                        if (mode == LB_ACT_32) {
                            const float* dc = dr + k0 / 32;
                            LB_SUB8_ROWS(q8_row_sub)
                        } else {
                            const float* dc = dr + b0;
                            if (per_row) { Q8_ROWS(1) } else { Q8_ROWS(0) }
                        }
                        for (int64_t r = 0; r < mr; ++r)
                            acc[r * NC + (n - n0)] = k0 == 0 ? out[r] : acc[r * NC + (n - n0)] + out[r];
                    }
                }
                q4_epilogue(acc, mr, nn, dr, xs + m0 * nb, nb, per_row, trans ? wt : NULL, wsz + n0 * nb, bt,
                            y + m0 * N + n0, N);
            }
        }
    }
    free(x16);
}

/* y = x_q @ dequant(w).T + bias for 4-bit codes packed by pack_q4 (N, Kp / 2). gsb: sub-blocks of 32 codes per
   weight block; nb: blocks per row; xq, xd, xs from lb_quant_act with the same mode (LB_ACT_*). */
void lb_gemm_q4(const uint8_t* w, const float* ws, const float* wsz, int64_t N, int64_t Kp, int64_t gsb, int64_t nb,
                const int8_t* xq, const float* xd, const float* xs, int64_t M, int mode, const float* bias,
                float* y, int nt) {
    gemm_tiles(w, ws, wsz, N, Kp, gsb, nb, xq, xd, xs, M, mode, bias, y, nt, 4);
}

/* The same for 5..8-bit codes in the 8-bit container (pack_q8: uint8 (N, Kp), one code per byte). */
void lb_gemm_q8(const uint8_t* w, const float* ws, const float* wsz, int64_t N, int64_t Kp, int64_t gsb, int64_t nb,
                const int8_t* xq, const float* xd, const float* xs, int64_t M, int mode, const float* bias,
                float* y, int nt) {
    gemm_tiles(w, ws, wsz, N, Kp, gsb, nb, xq, xd, xs, M, mode, bias, y, nt, 8);
}

/* 8-bit codes pre-tiled for the tiled GEMM (built once at load, `cpu_native.pack_q8t`): rows in tiles of T =
   lb_q8t_rows() (0: this build has no tiled kernel), the last one zero-padded; tile t holds, for each group g of G
   codes (G = 4 with T = 32, G = 2 with T = 16), the codes gG..gG+G-1 of its T rows in row order:
   w[t * T * Kp + g * T * G + i * G + j] = q[tT + i, gG + j]. Its scales likewise across lanes: ws[(t * nb + b) * T + i]
   = s[tT + i, b] (0 past N), wsz the same for s * z. */
int lb_q8t_rows(void) {
#if LB_VNNI == 2
    return LB_TN;
#elif LB_AVX2 && !LB_VNNI
    return LB_T2N;
#else
    return 0;
#endif
}

/* lb_gemm_q8 on pre-tiled codes and scales (above): the tiled GEMM at every M, no per-call transpose. Returns 0 when
   it could not run (no tiled kernel in this build, or no scratch memory): y is then NaN, never a silent wrong y. */
int lb_gemm_q8t(const uint8_t* w, const float* ws, const float* wsz, int64_t N, int64_t Kp, int64_t gsb, int64_t nb,
                const int8_t* xq, const float* xd, const float* xs, int64_t M, int mode, const float* bias, float* y,
                int nt) {
#if LB_VNNI == 2
    if (gemm_tile512(w, ws, wsz, N, Kp, gsb, nb, xq, xd, xs, M, mode == LB_ACT_32, bias, y, nt, 8, 1)) return 1;
#elif LB_AVX2 && !LB_VNNI
    if (gemm_tile256(w, ws, wsz, N, Kp, gsb, nb, xq, xd, xs, M, mode == LB_ACT_32, bias, y, nt, 8, 1)) return 1;
#else
    (void)w; (void)ws; (void)wsz; (void)Kp; (void)gsb; (void)nb; (void)xq; (void)xd; (void)xs; (void)mode;
    (void)bias; (void)nt;
#endif
    for (int64_t i = 0; i < M * N; ++i) y[i] = NAN;
    return 0;
}

#include "lowbit_cpu_static.h"  /* static W8A8: fixed-scale activations, int8 GEMM, fused epilogue */
#include "lowbit_cpu_static_pw.h"  /* static W8A8 1x1 conv on NCHW: the GEMM above with weight and pixels swapped */
#include "lowbit_cpu_conv.h"  /* convolution on packed weights: depthwise direct, im2col-quant + the GEMM above */
#include "lowbit_cpu_static_nhwc.h"  /* static W8A8 depthwise conv on channels-last images */
#include "lowbit_cpu_decode.h"  /* one decoded token's fp32 steps between matrix products */
