"""The C source of the native CPU kernels, kept as a Python string so it ships inside the package (no data files).

Weight layout (`pack_q4`): per row, Kp = K rounded up to 64 codes, split into Kp/64 units of 32 bytes; byte i of
unit u holds code 64u + i in its low nibble and code 64u + 32 + i in its high nibble, so one 32-byte load and two
masks give 64 codes in order (two sub-blocks of 32, the unit of activation loads). Activations are int8 (M, Kp),
one fp32 scale per (row, weight block), zero-padded past K.
"""

C_SOURCE = r"""
#include <stdint.h>
#include <math.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LB_AVX2 1
#else
#define LB_AVX2 0
#endif

int lb_simd(void) { return LB_AVX2; }
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

/* x: fp32 (M, K); xq: int8 (M, Kp); xd, xs: fp32 (M, nb): the activation scale and scale * sum(q) per block of
   gk columns. per_row != 0 quantizes each row with one scale (stored in every xd[m, b]); xs stays per block. */
void lb_quant_act(const float* x, int64_t M, int64_t K, int64_t Kp, int64_t gk, int64_t nb, int per_row,
                  int8_t* xq, float* xd, float* xs, int nt) {
    #pragma omp parallel for num_threads(nt) schedule(static) if (M * K > 65536)
    for (int64_t m = 0; m < M; ++m) {
        int8_t* q = xq + m * Kp;
        float d = 0.f;
        if (per_row) quant_block(x + m * K, K, q, &d);
        for (int64_t b = 0; b < nb; ++b) {
            int64_t lo = b * gk, hi = lb_min(lo + gk, K);
            int32_t s = 0;
            if (per_row) {
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

#if LB_AVX2
/* The 32 codes of sub-block j: unit j/2 is 32 bytes, low nibbles = even sub-block, high = odd. */
static inline __m256i load_q4(const uint8_t* wr, int64_t j) {
    __m256i v = _mm256_loadu_si256((const __m256i*)(wr + (j >> 1) * 32));
    return _mm256_and_si256((j & 1) ? _mm256_srli_epi16(v, 4) : v, _mm256_set1_epi8(0x0F));
}

/* Float scale of one weight block for activation row r: s_b, times d[r, b] unless the row scale comes at the end. */
static inline __m256 block_scale(const float* ws, const float* xd, int64_t b, int r, int64_t nb, const int ROWD) {
    return ROWD ? _mm256_broadcast_ss(ws + b) : _mm256_set1_ps(ws[b] * xd[r * nb + b]);
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* MR activation rows x GSB sub-blocks of one weight block, accumulated into facc[r] with scale s * d[r]. */
#define Q4_BLOCK(GSB_EXPR)                                                                              \
    do {                                                                                                \
        __m256i iacc[4];                                                                                \
        for (int r = 0; r < MR; ++r) iacc[r] = _mm256_setzero_si256();                                  \
        for (int64_t j = j0; j < j1; j += 8) {                                                          \
            __m256i hacc[4];                                                                            \
            for (int r = 0; r < MR; ++r) hacc[r] = _mm256_setzero_si256();                              \
            int64_t je = lb_min(j + 8, j1);                                                             \
            for (int64_t jj = j; jj < je;) {                                                            \
                if (!(jj & 1) && jj + 1 < je) { /* a whole unit: one load, two masks */                 \
                    __m256i v = _mm256_loadu_si256((const __m256i*)(wr + jj * 16));                     \
                    __m256i w0 = _mm256_and_si256(v, mask), w1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask); \
                    for (int r = 0; r < MR; ++r) {                                                      \
                        const int8_t* xa = xq + r * Kp + jj * 32;                                       \
                        __m256i p0 = _mm256_maddubs_epi16(w0, _mm256_loadu_si256((const __m256i*)xa));  \
                        __m256i p1 = _mm256_maddubs_epi16(w1, _mm256_loadu_si256((const __m256i*)(xa + 32))); \
                        hacc[r] = _mm256_add_epi16(hacc[r], _mm256_add_epi16(p0, p1));                  \
                    }                                                                                   \
                    jj += 2;                                                                            \
                } else {                                                                                \
                    __m256i w = load_q4(wr, jj);                                                        \
                    for (int r = 0; r < MR; ++r) {                                                      \
                        __m256i a = _mm256_loadu_si256((const __m256i*)(xq + r * Kp + jj * 32));        \
                        hacc[r] = _mm256_add_epi16(hacc[r], _mm256_maddubs_epi16(w, a));                \
                    }                                                                                   \
                    jj += 1;                                                                            \
                }                                                                                       \
            }                                                                                           \
            for (int r = 0; r < MR; ++r) iacc[r] = _mm256_add_epi32(iacc[r], _mm256_madd_epi16(hacc[r], ones)); \
        }                                                                                               \
        for (int r = 0; r < MR; ++r)                                                                    \
            facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r]), block_scale(ws, xd, b, r, nb, ROWD), facc[r]); \
    } while (0)

/* Dot of one weight row with MR activation rows: out[r] = sum_b s_b * d_rb * idot_rb (int32 per block).
   int16 lanes hold at most 8 * 2 * 15 * 127 = 30480, so they are flushed to int32 every 8 sub-blocks.
   GSB > 0 fixes the sub-blocks per weight block at compile time (full blocks unroll); 0 = runtime gsb.
   ROWD: one activation scale per row (xd[r, 0]), applied once at the end instead of once per block. */
static inline __attribute__((always_inline)) void q4_row(
        const uint8_t* wr, const float* ws, int64_t nsb, int64_t gsb, int64_t nb,
        const int8_t* xq, int64_t Kp, const float* xd, const int MR, const int GSB, const int ROWD, float* out) {
    __m256 facc[4];
    const __m256i ones = _mm256_set1_epi16(1), mask = _mm256_set1_epi8(0x0F);
    for (int r = 0; r < MR; ++r) facc[r] = _mm256_setzero_ps();
    int64_t b = 0;
    const int64_t g = GSB > 0 ? GSB : gsb;
    if (GSB == 1) { /* blocks of 32: one unit holds blocks b (low nibbles) and b + 1 (high nibbles) */
        for (; b + 2 <= nb; b += 2) {
            __m256i v = _mm256_loadu_si256((const __m256i*)(wr + b * 16));
            __m256i w0 = _mm256_and_si256(v, mask), w1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
            for (int r = 0; r < MR; ++r) {
                const int8_t* xa = xq + r * Kp + b * 32;
                __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(w0, _mm256_loadu_si256((const __m256i*)xa)), ones);
                __m256i p1 = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(w1, _mm256_loadu_si256((const __m256i*)(xa + 32))), ones);
                facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), block_scale(ws, xd, b, r, nb, ROWD), facc[r]);
                facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), block_scale(ws, xd, b + 1, r, nb, ROWD), facc[r]);
            }
        }
    } else if (!(g & 1)) { /* even blocks: whole 64-code units, no branches; GSB > 0 unrolls the unit loop */
        for (; (b + 1) * g <= nsb; ++b) {
            const uint8_t* wb = wr + b * g * 16;
            const int8_t* xb = xq + b * g * 32;
            __m256i iacc[4];
            for (int r = 0; r < MR; ++r) iacc[r] = _mm256_setzero_si256();
            for (int64_t u0 = 0; u0 < g / 2; u0 += 4) { /* int16 holds 4 units (8 sub-blocks) */
                __m256i hacc[4];
                for (int r = 0; r < MR; ++r) hacc[r] = _mm256_setzero_si256();
                const int64_t ue = lb_min(u0 + 4, g / 2);
                for (int64_t u = u0; u < ue; ++u) {
                    __m256i v = _mm256_loadu_si256((const __m256i*)(wb + u * 32));
                    __m256i w0 = _mm256_and_si256(v, mask), w1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
                    for (int r = 0; r < MR; ++r) {
                        const int8_t* xa = xb + r * Kp + u * 64;
                        __m256i p0 = _mm256_maddubs_epi16(w0, _mm256_loadu_si256((const __m256i*)xa));
                        __m256i p1 = _mm256_maddubs_epi16(w1, _mm256_loadu_si256((const __m256i*)(xa + 32)));
                        hacc[r] = _mm256_add_epi16(hacc[r], _mm256_add_epi16(p0, p1));
                    }
                }
                for (int r = 0; r < MR; ++r) iacc[r] = _mm256_add_epi32(iacc[r], _mm256_madd_epi16(hacc[r], ones));
            }
            for (int r = 0; r < MR; ++r) {
                facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r]), block_scale(ws, xd, b, r, nb, ROWD), facc[r]);
            }
        }
    }
    for (; b < nb; ++b) {
        const int64_t j0 = b * gsb, j1 = lb_min(j0 + gsb, nsb);
        Q4_BLOCK(gsb);
    }
    for (int r = 0; r < MR; ++r) out[r] = ROWD ? hsum8(facc[r]) * xd[r * nb] : hsum8(facc[r]);
}

static inline float dotf(const float* a, const float* b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    float s = hsum8(acc);
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}
#else
static inline void q4_row(const uint8_t* wr, const float* ws, int64_t nsb, int64_t gsb, int64_t nb,
                          const int8_t* xq, int64_t Kp, const float* xd, const int MR, const int GSB,
                          const int ROWD, float* out) {
    for (int r = 0; r < MR; ++r) {
        float acc = 0.f;
        for (int64_t b = 0; b < nb; ++b) {
            int64_t j0 = b * gsb, j1 = lb_min(j0 + gsb, nsb);
            int32_t idot = 0;
            for (int64_t j = j0; j < j1; ++j) {
                const uint8_t* p = wr + (j >> 1) * 32;
                const int sh = (j & 1) ? 4 : 0;
                const int8_t* a = xq + r * Kp + j * 32;
                for (int i = 0; i < 32; ++i) idot += ((p[i] >> sh) & 15) * a[i];
            }
            acc += ws[b] * xd[r * nb + b] * (float)idot;
        }
        out[r] = acc;
    }
}

static inline float dotf(const float* a, const float* b, int64_t n) {
    float s = 0.f;
    for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
}
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
   rows, each walking the chunk 4 rows at a time, so a weight row is decoded once per 4 activation rows. */
void lb_gemm_q4(const uint8_t* w, const float* ws, const float* wsz, int64_t N, int64_t Kp, int64_t gsb, int64_t nb,
                const int8_t* xq, const float* xd, const float* xs, int64_t M, int per_row, const float* bias,
                float* y, int nt) {
    const int64_t nsb = Kp / 32, row_bytes = Kp / 2, NC = 16, MC = 32;
    const int64_t ntask = (N + NC - 1) / NC;
    for (int64_t mc = 0; mc < M; mc += MC) {
        const int64_t mc_end = lb_min(mc + MC, M);
        #pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t t = 0; t < ntask; ++t) {
            int64_t n0 = t * NC, n1 = lb_min(n0 + NC, N);
            for (int64_t m0 = mc; m0 < mc_end; m0 += 4) {
                int64_t mr = lb_min(4, mc_end - m0);
                const int8_t* xr = xq + m0 * Kp;
                const float* dr = xd + m0 * nb;
                for (int64_t n = n0; n < n1; ++n) {
                    float out[4];
                    const uint8_t* wr = w + n * row_bytes;
                    const float* sr = ws + n * nb;
                    if (per_row) { Q4_GSB(1) } else { Q4_GSB(0) }
                    const float bn = bias ? bias[n] : 0.f;
                    for (int64_t r = 0; r < mr; ++r)
                        y[(m0 + r) * N + n] = out[r] - dotf(wsz + n * nb, xs + (m0 + r) * nb, nb) + bn;
                }
            }
        }
    }
}
"""
