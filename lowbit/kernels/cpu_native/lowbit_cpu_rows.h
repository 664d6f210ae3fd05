/* lowbit native CPU kernels, part 2: the per-row dot kernels (int4 `q4_row`, `q4_pair_g2`; 8-bit `q8_row`) with
   their SIMD helpers, and the plain-C versions. Included once by lowbit_cpu.c (not a public header: it relies on
   the macros and `lb_min` defined there). */

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

/* One 32-byte unit of packed weights -> its 64 codes: lo = codes 0..31 (low nibbles), hi = codes 32..63. */
static inline void q4_unit(const uint8_t* p, __m256i* lo, __m256i* hi) {
    const __m256i mask = _mm256_set1_epi8(0x0F);
    const __m256i v = _mm256_loadu_si256((const __m256i*)p);
    *lo = _mm256_and_si256(v, mask);
    *hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
}

/* Partial dot accumulators ("parts") of 32 u8 codes w with 32 s8 activations at xa. With VNNI the lanes are int32
   (vpdpbusd) and part_i32 is the identity; without, they are int16 (maddubs sums pairs: 2 * 15 * 127 per pair for
   4-bit codes) and part_i32 widens them (madd with ones) before they can overflow. */
static inline __m256i part_add(__m256i p, __m256i w, const int8_t* xa) {
    const __m256i a = _mm256_loadu_si256((const __m256i*)xa);
#if LB_VNNI
    return LB_DPBUSD(p, w, a);
#else
    return _mm256_add_epi16(p, _mm256_maddubs_epi16(w, a));
#endif
}

static inline __m256i part_i32(__m256i p) {
#if LB_VNNI
    return p;
#else
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
#endif
}

/* p + partial dots of one unit's 64 codes with 64 int8 activations at xa. */
static inline __m256i q4_unit_dot(__m256i p, __m256i lo, __m256i hi, const int8_t* xa) {
    return part_add(part_add(p, lo, xa), hi, xa + 32);
}

/* out[r] = the sum of facc[r]'s lanes for r < MR (rows past MR are zeroed): one reduction for all rows. The row
   scale (ROWD) and the zero term are applied by the caller, vectorized over a tile of output columns. */
static inline void hsum_rows(__m256* facc, const int MR, float* out) {
    for (int r = MR; r < 4; ++r) facc[r] = _mm256_setzero_ps();
    __m256 t0 = _mm256_hadd_ps(facc[0], facc[1]), t1 = _mm256_hadd_ps(facc[2], facc[3]);
    t0 = _mm256_hadd_ps(t0, t1);
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t0), _mm256_extractf128_ps(t0, 1)));
}

/* MR activation rows x the sub-blocks [j0, j1) of one weight block, accumulated into facc[r] with scale s * d[r]. */
#define Q4_BLOCK()                                                                              \
    do {                                                                                                \
        __m256i iacc[4];                                                                                \
        for (int r = 0; r < MR; ++r) iacc[r] = _mm256_setzero_si256();                                  \
        for (int64_t j = j0; j < j1; j += 8) {                                                          \
            __m256i hacc[4];                                                                            \
            for (int r = 0; r < MR; ++r) hacc[r] = _mm256_setzero_si256();                              \
            int64_t je = lb_min(j + 8, j1);                                                             \
            for (int64_t jj = j; jj < je;) {                                                            \
                if (!(jj & 1) && jj + 1 < je) { /* a whole unit: one load, two masks */                 \
                    __m256i w0, w1;                                                                     \
                    q4_unit(wr + jj * 16, &w0, &w1);                                                    \
                    for (int r = 0; r < MR; ++r)                                                        \
                        hacc[r] = q4_unit_dot(hacc[r], w0, w1, xq + r * Kp + jj * 32);                  \
                    jj += 2;                                                                            \
                } else {                                                                                \
                    __m256i w = load_q4(wr, jj);                                                        \
                    for (int r = 0; r < MR; ++r) hacc[r] = part_add(hacc[r], w, xq + r * Kp + jj * 32);  \
                    jj += 1;                                                                            \
                }                                                                                       \
            }                                                                                           \
            for (int r = 0; r < MR; ++r) iacc[r] = _mm256_add_epi32(iacc[r], part_i32(hacc[r]));        \
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
    __m256 facc[4]; /* one per activation row; with one row, facc[1] is a second chain (one fma per block chains
                       4-cycle latencies: at M = 1 that, not memory, bounded blocks of 32 and 64) */
    for (int r = 0; r < 4; ++r) facc[r] = _mm256_setzero_ps();
    int64_t b = 0;
    const int64_t g = GSB > 0 ? GSB : gsb;
    if (GSB == 1) { /* blocks of 32: one unit holds blocks b (low nibbles) and b + 1 (high nibbles) */
        for (; b + 2 <= nb; b += 2) {
            __m256i w0, w1;
            q4_unit(wr + b * 16, &w0, &w1);
            for (int r = 0; r < MR; ++r) {
                const int8_t* xa = xq + r * Kp + b * 32;
                const __m256i z = _mm256_setzero_si256();
                __m256i p0 = part_i32(part_add(z, w0, xa)), p1 = part_i32(part_add(z, w1, xa + 32));
                facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), block_scale(ws, xd, b, r, nb, ROWD), facc[r]);
                const int r1 = MR == 1 ? 1 : r;
                facc[r1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), block_scale(ws, xd, b + 1, r, nb, ROWD), facc[r1]);
            }
        }
    } else if (GSB == 2 || GSB == 4) { /* blocks of 1 or 2 units: unpack the block's weights once into registers,
            then one activation row at a time (few live registers: the fp32 accumulators stay in registers); a last
            block cut short by Kp (block 128, Kp % 128 == 64) is left to the generic loop below */
#define Q4_GB(BB, FI)                                                                                   \
    do {                                                                                                \
        const int64_t bb = (BB);                                                                        \
        __m256i wv[4];                                                                                  \
        for (int u = 0; u < GSB / 2; ++u) q4_unit(wr + bb * GSB * 16 + u * 32, &wv[2 * u], &wv[2 * u + 1]); \
        for (int r = 0; r < MR; ++r) {                                                                  \
            const int8_t* xa = xq + bb * GSB * 32 + r * Kp;                                             \
            __m256i h = q4_unit_dot(_mm256_setzero_si256(), wv[0], wv[1], xa);                          \
            if (GSB == 4) h = q4_unit_dot(h, wv[2], wv[3], xa + 64);                                    \
            facc[FI] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(part_i32(h)), block_scale(ws, xd, bb, r, nb, ROWD), \
                                       facc[FI]);                                                       \
            __asm__ volatile("" : "+x"(facc[FI])); /* keep it in a register; one row at a time */       \
        }                                                                                               \
    } while (0)
        if (MR == 1)
            for (; (b + 2) * GSB <= nsb; b += 2) {
                Q4_GB(b, 0);
                Q4_GB(b + 1, 1);
            }
        for (; (b + 1) * GSB <= nsb; ++b) Q4_GB(b, r);
#undef Q4_GB
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
                    __m256i w0, w1;
                    q4_unit(wb + u * 32, &w0, &w1);
                    for (int r = 0; r < MR; ++r)
                        hacc[r] = q4_unit_dot(hacc[r], w0, w1, xb + r * Kp + u * 64);
                }
                for (int r = 0; r < MR; ++r) iacc[r] = _mm256_add_epi32(iacc[r], part_i32(hacc[r]));
            }
            for (int r = 0; r < MR; ++r) {
                facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r]), block_scale(ws, xd, b, r, nb, ROWD), facc[r]);
            }
        }
    }
    for (; b < nb; ++b) {
        const int64_t j0 = b * gsb, j1 = lb_min(j0 + gsb, nsb);
        Q4_BLOCK();
    }
    if (MR == 1) facc[0] = _mm256_add_ps(facc[0], facc[1]);
    hsum_rows(facc, MR, out);
}

/* 8-bit codes. With VNNI one vpdpbusd takes 32 u8 codes x 32 s8 activations. Without, maddubs would saturate
   (2 * 255 * 127 > 32767), so the codes are widened to int16 once per weight vector (lb_w8 holds both halves) and
   the activations once per call (lb_act8: int16, see gemm_tiles), leaving one madd + one add per 16 products and row
   (it widened both operands for every (weight row, activation row) before: 0.26-0.5x fbgemm at M >= 32). */
#if LB_VNNI
typedef int8_t lb_act8;
typedef struct { __m256i v; } lb_w8;
static inline lb_w8 q8_load(const uint8_t* p) { return (lb_w8){_mm256_loadu_si256((const __m256i*)p)}; }
#else
typedef int16_t lb_act8;
typedef struct { __m256i lo, hi; } lb_w8;
static inline lb_w8 q8_load(const uint8_t* p) {
    return (lb_w8){_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)p)),
                   _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(p + 16)))};
}
#endif

/* p + the int32 partial dots (4 products per lane) of 32 codes w with 32 activations at xa. */
static inline __m256i q8_dot(__m256i p, lb_w8 w, const lb_act8* xa) {
#if LB_VNNI
    return LB_DPBUSD(p, w.v, _mm256_loadu_si256((const __m256i*)xa));
#else
    const __m256i lo = _mm256_madd_epi16(w.lo, _mm256_loadu_si256((const __m256i*)xa));
    const __m256i hi = _mm256_madd_epi16(w.hi, _mm256_loadu_si256((const __m256i*)(xa + 16)));
    return _mm256_add_epi32(p, _mm256_add_epi32(lo, hi));
#endif
}

/* The whole blocks of GSB (1, 2 or 4) sub-blocks of one 8-bit weight row: the block's weight vectors are loaded
   once and reused for every activation row, one int32 dot chain per row, then one convert + fma. Returns the number
   of blocks done. (The generic loop's per-block bounds and chunking made blocks of 32 run at 0.4-0.9x torch fp32.)
   With one row, blocks alternate between two fp32 chains (facc[0], facc[1]) so the fma latency does not serialize. */
static inline __attribute__((always_inline)) int64_t q8_short_blocks(
        const uint8_t* wr, const float* ws, int64_t nsb, int64_t nb, const lb_act8* xq, int64_t Kp, const float* xd,
        int64_t ds, const int MR, const int GSB, const int ROWD, __m256* facc) {
    int64_t b = 0;
    for (; (b + 1) * GSB <= nsb && b < nb; ++b) {
        lb_w8 wv[4];
        for (int j = 0; j < GSB; ++j) wv[j] = q8_load(wr + (b * GSB + j) * 32);
        for (int r = 0; r < MR; ++r) {
            const lb_act8* xa = xq + r * Kp + b * GSB * 32;
            __m256i h = q8_dot(_mm256_setzero_si256(), wv[0], xa);
            for (int j = 1; j < GSB; ++j) h = q8_dot(h, wv[j], xa + j * 32);
            const int fi = MR == 1 ? (int)(b & 1) : r;
            facc[fi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), block_scale(ws, xd, b, r, ds, ROWD), facc[fi]);
        }
    }
    return b;
}

/* Independent int32 dot chains per activation row in q8_row's long blocks: vpdpbusd's latency (4-5 cycles), not
   its throughput, bounded one chain per row (M = 1 per channel: 0.55x fbgemm); without VNNI the chain is one add. */
#define LB_Q8_CH(MR) (LB_VNNI ? ((MR) == 1 ? 4 : 2) : (MR) == 1 ? 2 : 1)

/* Dot of one 8-bit weight row (Kp bytes, blocks of gsb sub-blocks of 32) with MR activation rows (see q4_row).
   int32 lanes hold 1024 sub-blocks of 255 * 127 * 4 (< 2**31), so longer blocks are flushed to fp32 in pieces.
   nsb, nb: the sub-blocks and blocks to walk (a K-chunk's, see gemm_tiles); ds: xd's row stride. */
static inline __attribute__((always_inline)) void q8_row(
        const uint8_t* wr, const float* ws, int64_t nsb, int64_t gsb, int64_t nb,
        const lb_act8* xq, int64_t Kp, const float* xd, int64_t ds, const int MR, const int ROWD, float* out) {
    const int CH = LB_Q8_CH(MR);
    __m256 facc[4];
    for (int r = 0; r < 4; ++r) facc[r] = _mm256_setzero_ps();
    int64_t b0 = 0;
    switch (gsb) {
        case 1: b0 = q8_short_blocks(wr, ws, nsb, nb, xq, Kp, xd, ds, MR, 1, ROWD, facc); break;
        case 2: b0 = q8_short_blocks(wr, ws, nsb, nb, xq, Kp, xd, ds, MR, 2, ROWD, facc); break;
        case 4: b0 = q8_short_blocks(wr, ws, nsb, nb, xq, Kp, xd, ds, MR, 4, ROWD, facc); break;
        default: break;
    }
    if (MR == 1) facc[0] = _mm256_add_ps(facc[0], facc[1]);
    for (int64_t b = b0; b < nb; ++b) {
        const int64_t j1 = lb_min((b + 1) * gsb, nsb);
        for (int64_t j0 = b * gsb; j0 < j1; j0 += 1024) {
            __m256i iacc[8];
            for (int i = 0; i < MR * CH; ++i) iacc[i] = _mm256_setzero_si256();
            const int64_t je = lb_min(j0 + 1024, j1);
            int64_t j = j0;
            for (; j + CH <= je; j += CH)
                for (int c = 0; c < CH; ++c) {
                    const lb_w8 w = q8_load(wr + (j + c) * 32);
                    for (int r = 0; r < MR; ++r)
                        iacc[r * CH + c] = q8_dot(iacc[r * CH + c], w, xq + r * Kp + (j + c) * 32);
                }
            for (; j < je; ++j) {
                const lb_w8 w = q8_load(wr + j * 32);
                for (int r = 0; r < MR; ++r) iacc[r * CH] = q8_dot(iacc[r * CH], w, xq + r * Kp + j * 32);
            }
            for (int r = 0; r < MR; ++r) {
                __m256i t = iacc[r * CH];
                for (int c = 1; c < CH; ++c) t = _mm256_add_epi32(t, iacc[r * CH + c]);
                facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), block_scale(ws, xd, b, r, ds, ROWD), facc[r]);
            }
        }
    }
    hsum_rows(facc, MR, out);
}

/* Two weight rows (blocks of 64 codes, row scales at the end) x 4 activation rows: each activation vector feeds
   both weight rows. out[4 * c + r] = raw dot of weight row c with activation row r. */
static void q4_pair_g2(const uint8_t* wr0, const uint8_t* wr1, const float* ws0, const float* ws1, int64_t nb,
                       const int8_t* xq, int64_t Kp, float* out) {
    __m256 fa[4], fb[4];
    for (int r = 0; r < 4; ++r) fa[r] = fb[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        __m256i a0, a1, c0, c1;
        q4_unit(wr0 + b * 32, &a0, &a1);
        q4_unit(wr1 + b * 32, &c0, &c1);
        const __m256 sa = _mm256_broadcast_ss(ws0 + b), sb = _mm256_broadcast_ss(ws1 + b);
        for (int r = 0; r < 4; ++r) {
            const int8_t* xa = xq + r * Kp + b * 64;
            const __m256i z = _mm256_setzero_si256();
            __m256i ha = q4_unit_dot(z, a0, a1, xa), hb = q4_unit_dot(z, c0, c1, xa);  /* loads of xa are shared */
            fa[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(part_i32(ha)), sa, fa[r]);
            fb[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(part_i32(hb)), sb, fb[r]);
            __asm__ volatile("" : "+x"(fa[r]), "+x"(fb[r]));
        }
    }
    __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(fa[0], fa[1]), _mm256_hadd_ps(fa[2], fa[3]));
    __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(fb[0], fb[1]), _mm256_hadd_ps(fb[2], fb[3]));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t0), _mm256_extractf128_ps(t0, 1)));
    _mm_storeu_ps(out + 4, _mm_add_ps(_mm256_castps256_ps128(t1), _mm256_extractf128_ps(t1, 1)));
}

static inline float dotf(const float* a, const float* b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    float s = hsum8(acc);
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}
#elif LB_NEON
typedef int8_t lb_act8; /* the 8-bit kernels' activations, as stored */
#include "lowbit_cpu_rows_neon.h"  /* q4_row, q8_row, dotf for aarch64 */
#else
typedef int8_t lb_act8; /* the 8-bit kernels' activations, as stored */
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
            acc += ws[b] * (ROWD ? 1.f : xd[r * nb + b]) * (float)idot;
        }
        out[r] = acc;
    }
}

static inline void q8_row(const uint8_t* wr, const float* ws, int64_t nsb, int64_t gsb, int64_t nb,
                          const int8_t* xq, int64_t Kp, const float* xd, int64_t ds, const int MR, const int ROWD,
                          float* out) {
    for (int r = 0; r < MR; ++r) {
        float acc = 0.f;
        for (int64_t b = 0; b < nb; ++b) {
            const int64_t k1 = lb_min((b + 1) * gsb, nsb) * 32;
            for (int64_t k0 = b * gsb * 32; k0 < k1; k0 += 32768) { /* int32 holds 32768 * 255 * 127 */
                int32_t idot = 0;
                for (int64_t k = k0, ke = lb_min(k0 + 32768, k1); k < ke; ++k) idot += wr[k] * xq[r * Kp + k];
                acc += ws[b] * (ROWD ? 1.f : xd[r * ds + b]) * (float)idot;
            }
        }
        out[r] = acc;
    }
}

/* 16 partial sums: vectorizable without -ffast-math, and a shorter rounding chain than one running sum */
static inline float dotf(const float* a, const float* b, int64_t n) {
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; ++l) acc[l] += a[i + l] * b[i + l];
    for (; i < n; ++i) acc[i % 16] += a[i] * b[i];
    for (int w = 8; w > 0; w /= 2)
        for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
    return acc[0];
}
#endif
