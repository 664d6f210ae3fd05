/* lowbit native CPU kernels, aarch64 part: the per-row dot kernels (`q4_row`, `q8_row`, `dotf`) in NEON. Included
   by lowbit_cpu_rows.h when LB_NEON is set (lowbit_cpu.c sets it from the target's features); not a public header:
   it relies on the macros and `lb_min` defined there.

   LB_NEON levels, one per build variant (build.py): 1 "neon" (armv8-a Advanced SIMD: widening multiplies and
   pairwise adds), 2 "dotprod" (sdot: 4 s8 products summed into each int32 lane), 3 "i8mm" (as 2, plus usdot for the
   u8 codes of the 8-bit container). usmmla (2 x 2 tiles of 8-code dots) is not used: with the weights in the row
   layout of pack_q4/pack_q8, the 64-bit zips it needs cost more instructions than they save (measured under qemu:
   1.2-1.4x the instructions of sdot or usdot per MAC at M = 16); it wants weights packed as interleaved row pairs.
   Codes of the 4-bit container (0..15) are valid s8, so sdot takes them as they are; 8-bit codes (0..255) are not:
   level 3 has the u8 x s8 form, levels 1 and 2 compute dot(w, a) = dot(w - 128, a) + 128 * sum(a) (w ^ 0x80 is
   w - 128 as s8). */

/* The 32 codes (0..15) of 4-bit sub-block j as two s8 vectors: unit j/2 is 32 bytes, low nibbles = even sub-block,
   high nibbles = odd. */
static inline int8x16x2_t neon_q4_sub(const uint8_t* wr, int64_t j) {
    const uint8_t* p = wr + (j >> 1) * 32;
    uint8x16_t v0 = vld1q_u8(p), v1 = vld1q_u8(p + 16);
    if (j & 1) {
        v0 = vshrq_n_u8(v0, 4);
        v1 = vshrq_n_u8(v1, 4);
    } else {
        v0 = vandq_u8(v0, vdupq_n_u8(0x0F));
        v1 = vandq_u8(v1, vdupq_n_u8(0x0F));
    }
    int8x16x2_t w = {{vreinterpretq_s8_u8(v0), vreinterpretq_s8_u8(v1)}};
    return w;
}

/* acc + the partial dots of 32 codes of the 4-bit container (0..15; w0, w1) with 32 s8 activations at xa. Level 1:
   int16 lanes hold four products (<= 4 * 15 * 127), added pairwise into int32. */
static inline int32x4_t neon_dot_q4(int32x4_t acc, int8x16_t w0, int8x16_t w1, const int8_t* xa) {
    const int8x16_t a0 = vld1q_s8(xa), a1 = vld1q_s8(xa + 16);
#if LB_NEON >= 2
    return vdotq_s32(vdotq_s32(acc, w0, a0), w1, a1);
#else
    int16x8_t p = vmull_s8(vget_low_s8(w0), vget_low_s8(a0));
    p = vmlal_high_s8(p, w0, a0);
    p = vmlal_s8(p, vget_low_s8(w1), vget_low_s8(a1));
    p = vmlal_high_s8(p, w1, a1);
    return vpadalq_s16(acc, p);
#endif
}

/* acc + the partial dots of 16 u8 codes with 16 s8 activations; levels 1 and 2 take the codes as w - 128 and add
   sum(a) into *asum (the caller adds 128 * asum, see the header comment). Level 1: int16 lanes hold two products
   (<= 2 * 128 * 127 < 32768), added pairwise into int32. */
static inline int32x4_t neon_dot_q8(int32x4_t acc, int32x4_t* asum, uint8x16_t w, int8x16_t a) {
#if LB_NEON >= 3
    (void)asum;
    return vusdotq_s32(acc, w, a);
#else
    const int8x16_t wc = vreinterpretq_s8_u8(veorq_u8(w, vdupq_n_u8(0x80)));
#if LB_NEON == 2
    *asum = vdotq_s32(*asum, vdupq_n_s8(1), a);
    return vdotq_s32(acc, wc, a);
#else
    *asum = vpadalq_s16(*asum, vpaddlq_s8(a));
    return vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(wc), vget_low_s8(a)), wc, a));
#endif
#endif
}

/* The 64 codes (0..15) of 4-bit unit u (codes 64u .. 64u + 63) as four s8 vectors, in order. */
static inline void neon_q4_unit(const uint8_t* wr, int64_t u, int8x16_t* w) {
    const uint8x16_t v0 = vld1q_u8(wr + u * 32), v1 = vld1q_u8(wr + u * 32 + 16), m = vdupq_n_u8(0x0F);
    w[0] = vreinterpretq_s8_u8(vandq_u8(v0, m));
    w[1] = vreinterpretq_s8_u8(vandq_u8(v1, m));
    w[2] = vreinterpretq_s8_u8(vshrq_n_u8(v0, 4));
    w[3] = vreinterpretq_s8_u8(vshrq_n_u8(v1, 4));
}

/* iacc[r] += the dots of units [u0, u0 + nu) with activation row r < MR; with one row, iacc[1] is a second chain
   (sdot latency, not throughput, would bound a single one). */
static inline __attribute__((always_inline)) void neon_q4_units(const uint8_t* wr, int64_t u0, int64_t nu,
                                                                const int8_t* xq, int64_t Kp, const int MR,
                                                                int32x4_t* iacc) {
    for (int64_t u = u0; u < u0 + nu; ++u) {
        int8x16_t w[4];
        neon_q4_unit(wr, u, w);
        for (int r = 0; r < MR; ++r) {
            const int8_t* xa = xq + r * Kp + u * 64;
            const int r2 = MR == 1 ? 1 : r;
            iacc[r] = neon_dot_q4(iacc[r], w[0], w[1], xa);
            iacc[r2] = neon_dot_q4(iacc[r2], w[2], w[3], xa + 32);
        }
    }
}

/* Dot of one 4-bit weight row with MR activation rows: out[r] = sum_b s_b * d_rb * idot_rb (int32 per block; a
   block of K codes holds at most 15 * 127 * K / 4 per lane). Whole 64-code units are taken in one step (GSB = 2 or
   4, sub-blocks per block known at compile time: a fixed count), single sub-blocks (blocks of 32 codes, a block cut
   short by Kp) one at a time. ROWD: the row scale is applied by the caller (see q4_row in lowbit_cpu_rows.h). */
static inline __attribute__((always_inline)) void q4_row(
        const uint8_t* wr, const float* ws, int64_t nsb, int64_t gsb, int64_t nb,
        const int8_t* xq, int64_t Kp, const float* xd, const int MR, const int GSB, const int ROWD, float* out) {
    float32x4_t facc[4];
    for (int r = 0; r < MR; ++r) facc[r] = vdupq_n_f32(0.f);
    for (int64_t b = 0; b < nb; ++b) {
        int32x4_t iacc[4];
        for (int r = 0; r < (MR == 1 ? 2 : MR); ++r) iacc[r] = vdupq_n_s32(0);
        if ((GSB == 2 || GSB == 4) && (b + 1) * GSB <= nsb) {
            neon_q4_units(wr, b * GSB / 2, GSB / 2, xq, Kp, MR, iacc);
        } else {
            int64_t j = b * gsb;
            const int64_t j1 = lb_min(j + gsb, nsb);
            if (!(j & 1)) {
                neon_q4_units(wr, j / 2, (j1 - j) / 2, xq, Kp, MR, iacc);
                j += (j1 - j) & ~(int64_t)1;
            }
            for (; j < j1; ++j) {
                const int8x16x2_t w = neon_q4_sub(wr, j);
                for (int r = 0; r < MR; ++r) {
                    const int8_t* xa = xq + r * Kp + j * 32;
                    iacc[r] = neon_dot_q4(iacc[r], w.val[0], w.val[1], xa);
                }
            }
        }
        if (MR == 1) iacc[0] = vaddq_s32(iacc[0], iacc[1]);
        for (int r = 0; r < MR; ++r)
            facc[r] = vfmaq_n_f32(facc[r], vcvtq_f32_s32(iacc[r]), ws[b] * (ROWD ? 1.f : xd[r * nb + b]));
    }
    for (int r = 0; r < MR; ++r) out[r] = vaddvq_f32(facc[r]);
}

/* Dot of one 8-bit weight row (Kp bytes, blocks of gsb sub-blocks of 32) with MR activation rows (with one row,
   iacc[1] is a second chain). int32 lanes hold 1024 sub-blocks of 255 * 127 * 8 (< 2**31), so longer blocks are
   flushed to fp32 in pieces. */
static inline __attribute__((always_inline)) void q8_row(
        const uint8_t* wr, const float* ws, int64_t nsb, int64_t gsb, int64_t nb,
        const int8_t* xq, int64_t Kp, const float* xd, int64_t ds, const int MR, const int ROWD, float* out) {
    float32x4_t facc[4];
    for (int r = 0; r < MR; ++r) facc[r] = vdupq_n_f32(0.f);
    for (int64_t b = 0; b < nb; ++b) {
        const int64_t j1 = lb_min((b + 1) * gsb, nsb);
        const float s = ws[b];
        for (int64_t j0 = b * gsb; j0 < j1; j0 += 1024) {
            int32x4_t iacc[4], asum[4];
            for (int r = 0; r < (MR == 1 ? 2 : MR); ++r) iacc[r] = asum[r] = vdupq_n_s32(0);
            for (int64_t j = j0, je = lb_min(j0 + 1024, j1); j < je; ++j) {
                const uint8x16_t w0 = vld1q_u8(wr + j * 32), w1 = vld1q_u8(wr + j * 32 + 16);
                for (int r = 0; r < MR; ++r) {
                    const int8_t* xa = xq + r * Kp + j * 32;
                    const int r2 = MR == 1 ? 1 : r;
                    iacc[r] = neon_dot_q8(iacc[r], &asum[r], w0, vld1q_s8(xa));
                    iacc[r2] = neon_dot_q8(iacc[r2], &asum[r2], w1, vld1q_s8(xa + 16));
                }
            }
            if (MR == 1) {
                iacc[0] = vaddq_s32(iacc[0], iacc[1]);
                asum[0] = vaddq_s32(asum[0], asum[1]);
            }
            for (int r = 0; r < MR; ++r) {
                const int32x4_t idot = LB_NEON <= 2 ? vaddq_s32(iacc[r], vshlq_n_s32(asum[r], 7)) : iacc[r];
                facc[r] = vfmaq_n_f32(facc[r], vcvtq_f32_s32(idot), s * (ROWD ? 1.f : xd[r * ds + b]));
            }
        }
    }
    for (int r = 0; r < MR; ++r) out[r] = vaddvq_f32(facc[r]);
}

static inline float dotf(const float* a, const float* b, int64_t n) {
    float32x4_t acc = vdupq_n_f32(0.f);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) acc = vfmaq_f32(acc, vld1q_f32(a + i), vld1q_f32(b + i));
    float s = vaddvq_f32(acc);
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}
