/* lowbit native CPU kernels, part 4: the row kernels for activations quantized per 32 columns (precision Normal:
   llama.cpp's Q8_0 granularity, whatever the weight block). Included once by lowbit_cpu.c after lowbit_cpu_rows.h
   (relies on its helpers and `lb_min`); AVX2 (all x86 variants), NEON and plain C.

   out[r] = sum_b s_b * sum_{j in block b} d[r, j] * idot[r, j]: one int dot per sub-block j of 32 codes, converted
   and scaled by its own activation scale d[r, j] (xd row stride nsb = Kp / 32); the weight scale s_b is applied once
   per block. The zero term (xs per weight block) and the bias are the caller's, as for the other modes. */

#if LB_AVX2
/* t = cvt(p) * d (broadcast), the sub-block's scaled dot. */
static inline __m256 sub_scaled(__m256i p, const float* d) {
    return _mm256_mul_ps(_mm256_cvtepi32_ps(part_i32(p)), _mm256_broadcast_ss(d));
}

/* Two fp32 chains per row for one or two rows (fma latency, not throughput, would bound one chain), one for more;
   the chain index is always a compile-time constant (a runtime index would put the accumulators in memory). */
#define LB_SUB_CHAINS(MR) ((MR) <= 2 ? 2 : 1)

/* out[r] = the sum of row r's chains, reduced. */
static inline void sub_finish(__m256* facc, const int MR, float* out) {
    const int C = LB_SUB_CHAINS(MR);
    __m256 rows[4];
    for (int r = 0; r < MR; ++r) rows[r] = C == 2 ? _mm256_add_ps(facc[2 * r], facc[2 * r + 1]) : facc[r];
    hsum_rows(rows, MR, out);
}

/* facc[r * C + CH] += s * (d[r, j] * dot(w0, x_rj) + d[r, j + 1] * dot(w1, x_r(j+1))) for MR rows: one unit (two
   sub-blocks) of a weight row. */
#define LB_SUB_UNIT(W0, W1, J, CH)                                                                      \
    for (int r = 0; r < MR; ++r) {                                                                      \
        const int8_t* xa = xq + r * Kp + (J) * 32;                                                      \
        const float* d = xd + r * nsb + (J);                                                            \
        __m256 t = sub_scaled(part_add(z, W0, xa), d);                                                  \
        t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(part_i32(part_add(z, W1, xa + 32))), _mm256_broadcast_ss(d + 1), t); \
        facc[r * C + (CH)] = _mm256_fmadd_ps(t, s, facc[r * C + (CH)]);                                 \
    }

/* The sub-blocks of weight block B (scale s) into chains A (first of each unit pair, single sub-blocks) and O. */
#define LB_SUB_BLOCK4(B, A, O)                                                                          \
    do {                                                                                                \
        const int64_t j1 = lb_min(((B) + 1) * gsb, nsb);                                                \
        const __m256 s = _mm256_broadcast_ss(ws + (B));                                                 \
        int64_t j = (B) * gsb;                                                                          \
        if (j & 1) {                                                                                    \
            LB_SUB_SINGLE(j, A);                                                                        \
            ++j;                                                                                        \
        }                                                                                               \
        for (; j + 4 <= j1; j += 4) {                                                                   \
            __m256i w0, w1, w2, w3;                                                                     \
            q4_unit(wr + j * 16, &w0, &w1);                                                             \
            q4_unit(wr + j * 16 + 32, &w2, &w3);                                                        \
            LB_SUB_UNIT(w0, w1, j, A)                                                                   \
            LB_SUB_UNIT(w2, w3, j + 2, O)                                                               \
        }                                                                                               \
        if (j + 2 <= j1) {                                                                              \
            __m256i w0, w1;                                                                             \
            q4_unit(wr + j * 16, &w0, &w1);                                                             \
            LB_SUB_UNIT(w0, w1, j, A)                                                                   \
            j += 2;                                                                                     \
        }                                                                                               \
        if (j < j1) LB_SUB_SINGLE(j, A);                                                                \
    } while (0)

/* One 4-bit weight row x MR activation rows. GSB (sub-blocks per weight block) 1, 2 or 4: whole blocks in pairs,
   one unit (two sub-blocks, one load) per step, alternating chains; GSB 0 (any block, and what is left): block by
   block, units two at a time, one per chain, a sub-block alone (a block of odd length, or starting at an odd
   sub-block) from its own load. Compute-bound (M >= 4) it costs ~1.5x the per-row kernel: two converts and three
   fp32 operations per unit and row instead of one and one (a combined scale buffer, s_b * d_j precomputed per
   weight row, measured no faster: building it cost what it saved). */
static inline __attribute__((always_inline)) void q4_row_sub(
        const uint8_t* wr, const float* ws, int64_t nsb, int64_t gsb, int64_t nb,
        const int8_t* xq, int64_t Kp, const float* xd, const int MR, float* out, const int GSB) {
    const int C = LB_SUB_CHAINS(MR);
    __m256 facc[4];
    for (int r = 0; r < 4; ++r) facc[r] = _mm256_setzero_ps();
    const __m256i z = _mm256_setzero_si256();
#define LB_SUB_SINGLE(J, CH)                                                                            \
    do {                                                                                                \
        const __m256i w = load_q4(wr, J);                                                               \
        for (int r = 0; r < MR; ++r)                                                                    \
            facc[r * C + (CH)] = _mm256_fmadd_ps(sub_scaled(part_add(z, w, xq + r * Kp + (J) * 32),     \
                                                            xd + r * nsb + (J)), s, facc[r * C + (CH)]); \
    } while (0)
    int64_t b = 0;
    if (GSB == 2 || GSB == 4) { /* whole blocks of 1 or 2 units, a fixed count (the generic loop's bookkeeping
                                   per block cost more than the block's dots at M = 1: 0.60 -> 0.38 ms, 4096^2) */
        for (; b + 2 <= nb && (b + 2) * GSB <= nsb; b += 2)
            for (int h = 0; h < 2; ++h) {
                const __m256 s = _mm256_broadcast_ss(ws + b + h);
                for (int u = 0; u < GSB / 2; ++u) {
                    const int64_t j = (b + h) * GSB + 2 * u;
                    __m256i w0, w1;
                    q4_unit(wr + j * 16, &w0, &w1);
                    if ((h + u) & 1) { LB_SUB_UNIT(w0, w1, j, C - 1) } else { LB_SUB_UNIT(w0, w1, j, 0) }
                }
            }
    } else if (GSB == 1) { /* blocks of 32: one unit holds blocks b and b + 1 */
        for (; b + 2 <= nb; b += 2) {
            __m256i w0, w1;
            q4_unit(wr + b * 16, &w0, &w1);
            const __m256 s0 = _mm256_broadcast_ss(ws + b), s1 = _mm256_broadcast_ss(ws + b + 1);
            for (int r = 0; r < MR; ++r) {
                const int8_t* xa = xq + r * Kp + b * 32;
                const float* d = xd + r * nsb + b;
                facc[r * C] = _mm256_fmadd_ps(sub_scaled(part_add(z, w0, xa), d), s0, facc[r * C]);
                facc[r * C + C - 1] = _mm256_fmadd_ps(sub_scaled(part_add(z, w1, xa + 32), d + 1), s1,
                                                      facc[r * C + C - 1]);
            }
        }
    }
    for (; b < nb; ++b) LB_SUB_BLOCK4(b, 0, C - 1);
#undef LB_SUB_SINGLE
    sub_finish(facc, MR, out);
}

/* One 8-bit weight row x MR activation rows (q8_dot: int32 lanes, no flush needed within 32 codes); sub-blocks
   two at a time, one per chain. */
static inline __attribute__((always_inline)) void q8_row_sub(
        const uint8_t* wr, const float* ws, int64_t nsb, int64_t gsb, int64_t nb,
        const lb_act8* xq, int64_t Kp, const float* xd, int64_t ds, const int MR, float* out) {
    const int C = MR == 1 ? 4 : LB_SUB_CHAINS(MR); /* one row: 4 fp32 chains (2 left M = 1 at 0.66x per row) */
    __m256 facc[4];
    for (int r = 0; r < 4; ++r) facc[r] = _mm256_setzero_ps();
    const __m256i z = _mm256_setzero_si256();
#define LB_SUB8(J, CH)                                                                                  \
    do {                                                                                                \
        const lb_w8 w = q8_load(wr + (J) * 32);                                                         \
        for (int r = 0; r < MR; ++r)                                                                    \
            facc[r * C + (CH)] = _mm256_fmadd_ps(                                                       \
                _mm256_mul_ps(_mm256_cvtepi32_ps(q8_dot(z, w, xq + r * Kp + (J) * 32)),                 \
                              _mm256_broadcast_ss(xd + r * ds + (J))), s, facc[r * C + (CH)]);          \
    } while (0)
    for (int64_t b = 0; b < nb; ++b) {
        const int64_t j1 = lb_min((b + 1) * gsb, nsb);
        const __m256 s = _mm256_broadcast_ss(ws + b);
        int64_t j = b * gsb;
        if (C == 4)
            for (; j + 4 <= j1; j += 4) {
                LB_SUB8(j, 0);
                LB_SUB8(j + 1, 1);
                LB_SUB8(j + 2, 2);
                LB_SUB8(j + 3, 3);
            }
        for (; j + 2 <= j1; j += 2) {
            LB_SUB8(j, 0);
            LB_SUB8(j + 1, C - 1);
        }
        if (j < j1) LB_SUB8(j, 0);
    }
#undef LB_SUB8
    if (C == 4) {
        facc[0] = _mm256_add_ps(_mm256_add_ps(facc[0], facc[1]), _mm256_add_ps(facc[2], facc[3]));
        facc[1] = _mm256_setzero_ps();
    }
    sub_finish(facc, MR, out);
}
#elif LB_NEON
/* The int32 partial dots of the 32 codes of sub-block j (4- or 8-bit container) with 32 activations at xa. */
static inline int32x4_t neon_sub_dot(const uint8_t* wr, int64_t j, const int8_t* xa, const int BITS) {
    if (BITS == 4) {
        const int8x16x2_t w = neon_q4_sub(wr, j);
        return neon_dot_q4(vdupq_n_s32(0), w.val[0], w.val[1], xa);
    }
    int32x4_t asum = vdupq_n_s32(0), acc = vdupq_n_s32(0);
    acc = neon_dot_q8(acc, &asum, vld1q_u8(wr + j * 32), vld1q_s8(xa));
    acc = neon_dot_q8(acc, &asum, vld1q_u8(wr + j * 32 + 16), vld1q_s8(xa + 16));
    return LB_NEON <= 2 ? vaddq_s32(acc, vshlq_n_s32(asum, 7)) : acc;
}

static inline __attribute__((always_inline)) void row_sub_neon(
        const uint8_t* wr, const float* ws, int64_t nsb, int64_t gsb, int64_t nb,
        const int8_t* xq, int64_t Kp, const float* xd, int64_t ds, const int MR, float* out, const int BITS) {
    float32x4_t facc[4];
    for (int r = 0; r < MR; ++r) facc[r] = vdupq_n_f32(0.f);
    for (int64_t b = 0; b < nb; ++b) {
        const int64_t j1 = lb_min((b + 1) * gsb, nsb);
        for (int64_t j = b * gsb; j < j1; ++j)
            for (int r = 0; r < MR; ++r)
                facc[r] = vfmaq_n_f32(facc[r], vcvtq_f32_s32(neon_sub_dot(wr, j, xq + r * Kp + j * 32, BITS)),
                                      ws[b] * xd[r * ds + j]);
    }
    for (int r = 0; r < MR; ++r) out[r] = vaddvq_f32(facc[r]);
}

static inline __attribute__((always_inline)) void q4_row_sub(
        const uint8_t* wr, const float* ws, int64_t nsb, int64_t gsb, int64_t nb,
        const int8_t* xq, int64_t Kp, const float* xd, const int MR, float* out, const int GSB) {
    (void)GSB;
    row_sub_neon(wr, ws, nsb, gsb, nb, xq, Kp, xd, nsb, MR, out, 4);
}

static inline __attribute__((always_inline)) void q8_row_sub(
        const uint8_t* wr, const float* ws, int64_t nsb, int64_t gsb, int64_t nb,
        const int8_t* xq, int64_t Kp, const float* xd, int64_t ds, const int MR, float* out) {
    row_sub_neon(wr, ws, nsb, gsb, nb, xq, Kp, xd, ds, MR, out, 8);
}
#else
static inline void row_sub_c(const uint8_t* wr, const float* ws, int64_t nsb, int64_t gsb, int64_t nb,
                             const int8_t* xq, int64_t Kp, const float* xd, int64_t ds, const int MR, float* out,
                             const int BITS) {
    for (int r = 0; r < MR; ++r) {
        float acc = 0.f;
        for (int64_t b = 0; b < nb; ++b) {
            float bacc = 0.f;
            for (int64_t j = b * gsb, j1 = lb_min((b + 1) * gsb, nsb); j < j1; ++j) {
                const int8_t* a = xq + r * Kp + j * 32;
                int32_t idot = 0;
                if (BITS == 4) {
                    const uint8_t* p = wr + (j >> 1) * 32;
                    const int sh = (j & 1) ? 4 : 0;
                    for (int i = 0; i < 32; ++i) idot += ((p[i] >> sh) & 15) * a[i];
                } else {
                    for (int i = 0; i < 32; ++i) idot += wr[j * 32 + i] * a[i];
                }
                bacc += xd[r * ds + j] * (float)idot;
            }
            acc += ws[b] * bacc;
        }
        out[r] = acc;
    }
}

static inline void q4_row_sub(const uint8_t* wr, const float* ws, int64_t nsb, int64_t gsb, int64_t nb,
                              const int8_t* xq, int64_t Kp, const float* xd, const int MR, float* out, const int GSB) {
    (void)GSB;
    row_sub_c(wr, ws, nsb, gsb, nb, xq, Kp, xd, nsb, MR, out, 4);
}

static inline void q8_row_sub(const uint8_t* wr, const float* ws, int64_t nsb, int64_t gsb, int64_t nb,
                              const int8_t* xq, int64_t Kp, const float* xd, int64_t ds, const int MR, float* out) {
    row_sub_c(wr, ws, nsb, gsb, nb, xq, Kp, xd, ds, MR, out, 8);
}
#endif
