/* lowbit native CPU kernels, part 6: the decode row kernels (one activation row, M = 1) on 512-bit vectors
   (AVX-512 VNNI). Included once by lowbit_cpu.c after lowbit_cpu_sub.h; other ISAs define LB_GEMV 0 and keep the
   per-row kernels of lowbit_cpu_rows.h / lowbit_cpu_sub.h.

   Why: at M = 1 the 256-bit row kernels were compute-bound below the DRAM bandwidth (int4 blocks of 128 with scales
   per 32 activations: ~22 GB/s with the weight hot in L2, ~16-18 GB/s from DRAM against a ~21-25 GB/s read stream):
   one 32-byte unit (64 codes) cost a load, three mask/shift ops, two dots, two converts and three fp32 operations.
   Here one 64-byte load (two units) feeds two zmm dots, and the activation scales come as per-lane vectors, so the
   instruction count per weight byte is about halved.

   The activation row is prepared once per call (`gemv_prep`): for 4-bit weights each 128-code piece of xq is
   reordered to sub-blocks [0, 2, 1, 3] (a 64-byte weight load holds units 2p and 2p + 1; its low nibbles are
   sub-blocks 4p and 4p + 2, its high nibbles 4p + 1 and 4p + 3), a trailing unit (nsb % 4 == 2) keeps the natural
   order; 8-bit weights keep the natural order. dv holds 8 copies of each sub-block's activation scale, in the same
   order (scaled modes: per 32 columns, per weight block); with one scale per row the kernels return the raw dot
   and the epilogue applies the scale, as the other row kernels do. */

#if LB_VNNI == 2
#define LB_GEMV 1
#ifndef LB_GEMV_PF
#define LB_GEMV_PF 0
#endif

/* The block shapes the zmm kernels take: 4-bit gsb 1, 2 or a multiple of 4; 8-bit gsb 1 or even. */
static inline int gemv_fits(int64_t gsb, const int BITS) {
    return BITS == 4 ? (gsb == 1 || gsb == 2 || gsb % 4 == 0) : (gsb == 1 || gsb % 2 == 0);
}

/* xp (Kp int8) and dv (Kp / 32 * 8 floats, unused when mode is LB_ACT_ROW) from xq, xd of one row (see above). */
static void gemv_prep(const int8_t* xq, const float* xd, int64_t Kp, int64_t gsb, int mode, const int BITS,
                      int8_t* xp, float* dv) {
    const int64_t nsb = Kp / 32, whole = BITS == 4 ? nsb / 4 * 4 : 0;
    for (int64_t j = 0; j < nsb; ++j) {
        const int64_t q = j & 3, pj = j < whole && (q == 1 || q == 2) ? (j ^ 3) : j; /* 1 <-> 2 within a piece */
        memcpy(xp + pj * 32, xq + j * 32, 32);
        const float d = mode == LB_ACT_32 ? xd[j] : mode == LB_ACT_BLOCK ? xd[j / gsb] : 1.f;
        for (int i = 0; i < 8; ++i) dv[pj * 8 + i] = d;
    }
}

/* Per-lane weight scales of one 4-bit piece p: [s(4p) x8 | s(4p+2) x8] (lo) and [s(4p+1) x8 | s(4p+3) x8] (hi)
   for gsb 1; [s(2p) x8 | s(2p+1) x8] (both) for gsb 2. */
static inline __m512 gemv_lanes(const float* s, const __m512i idx) {
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_loadu_ps(s)));
}

/* The same from two scales (s[0], s[1]; no read past them: the last row's scales end the tensor). */
static inline __m512 gemv_lanes2(const float* s, const __m512i idx) {
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_castpd_ps(_mm_load_sd((const double*)s))));
}

static inline __m512i gemv_idx(int a, int b) {
    return _mm512_setr_epi32(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b);
}

/* The 16 lane dots of one 4-bit piece's low (a) and high (b) nibbles, converted; scaled by dv when SCALED. */
#define GEMV_Q4_PIECE(P, TA, TB)                                                                        \
    do {                                                                                                \
        if (LB_GEMV_PF) _mm_prefetch((const char*)(wr + (P) * 64 + LB_GEMV_PF), _MM_HINT_T0);            \
        const __m512i v_ = _mm512_loadu_si512((const void*)(wr + (P) * 64));                            \
        const __m512i lo_ = _mm512_and_si512(v_, m4), hi_ = _mm512_and_si512(_mm512_srli_epi16(v_, 4), m4); \
        const __m512i a_ = _mm512_dpbusd_epi32(z, lo_, _mm512_loadu_si512((const void*)(xp + (P) * 128))); \
        const __m512i b_ = _mm512_dpbusd_epi32(z, hi_, _mm512_loadu_si512((const void*)(xp + (P) * 128 + 64))); \
        TA = _mm512_cvtepi32_ps(a_);                                                                    \
        TB = _mm512_cvtepi32_ps(b_);                                                                    \
        if (SCALED) {                                                                                   \
            TA = _mm512_mul_ps(TA, _mm512_loadu_ps(dv + (P) * 32));                                     \
            TB = _mm512_mul_ps(TB, _mm512_loadu_ps(dv + (P) * 32 + 16));                                \
        }                                                                                               \
    } while (0)

/* The same summed (a's and b's lanes share their weight scales: gsb 2 and up): one fp32 vector T. */
#define GEMV_Q4_PIECE_SUM(P, T)                                                                         \
    do {                                                                                                \
        if (LB_GEMV_PF) _mm_prefetch((const char*)(wr + (P) * 64 + LB_GEMV_PF), _MM_HINT_T0);            \
        const __m512i v_ = _mm512_loadu_si512((const void*)(wr + (P) * 64));                            \
        const __m512i lo_ = _mm512_and_si512(v_, m4), hi_ = _mm512_and_si512(_mm512_srli_epi16(v_, 4), m4); \
        const __m512i xa_ = _mm512_loadu_si512((const void*)(xp + (P) * 128));                          \
        const __m512i xb_ = _mm512_loadu_si512((const void*)(xp + (P) * 128 + 64));                     \
        if (SCALED) {                                                                                   \
            const __m512 ta_ = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(z, lo_, xa_)),       \
                                             _mm512_loadu_ps(dv + (P) * 32));                           \
            T = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(z, hi_, xb_)),                   \
                                _mm512_loadu_ps(dv + (P) * 32 + 16), ta_);                              \
        } else {                                                                                        \
            T = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, lo_, xa_), hi_, xb_));    \
        }                                                                                               \
    } while (0)

/* f * d (one scale per row: the dots were raw) minus the zero term sum_b wsz[b] * xs[b], reduced to one float. */
static inline float gemv_finish(__m512 f, float d, const float* wsz, const float* xs, int64_t nb, const int SCALED) {
    if (!SCALED) f = _mm512_mul_ps(f, _mm512_set1_ps(d));
    int64_t b = 0;
    for (; b + 16 <= nb; b += 16) f = _mm512_fnmadd_ps(_mm512_loadu_ps(wsz + b), _mm512_loadu_ps(xs + b), f);
    if (b < nb) {
        const __mmask16 m = (__mmask16)((1u << (nb - b)) - 1);
        f = _mm512_fnmadd_ps(_mm512_maskz_loadu_ps(m, wsz + b), _mm512_maskz_loadu_ps(m, xs + b), f);
    }
    return _mm512_reduce_add_ps(f);
}

/* y[n] of one 4-bit weight row (Kp / 2 bytes, gsb sub-blocks of 32 per block, scales ws, scale * zero wsz) with
   the prepared row (xp, dv; d: the row scale when not SCALED; xs: the zero term's activation sums), bias aside.
   GSB: 1, 2, 4 at compile time, 0 = a multiple of 4 at run time. */
static inline __attribute__((always_inline)) float gemv_q4_row(
        const uint8_t* wr, const float* ws, const float* wsz, const float* xs, int64_t nb, float d, int64_t nsb,
        int64_t gsb, const int8_t* xp, const float* dv, const int GSB, const int SCALED) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), z = _mm512_setzero_si512();
    __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps();
    const int64_t np = nsb / 4;
    int64_t p = 0;
    if (GSB == 1) {
        const __m512i i02 = gemv_idx(0, 2), i13 = gemv_idx(1, 3);
        for (; p < np; ++p) {
            __m512 ta, tb;
            GEMV_Q4_PIECE(p, ta, tb);
            f0 = _mm512_fmadd_ps(ta, gemv_lanes(ws + 4 * p, i02), f0);
            f1 = _mm512_fmadd_ps(tb, gemv_lanes(ws + 4 * p, i13), f1);
        }
    } else if (GSB == 2) {
        const __m512i i01 = gemv_idx(0, 1);
        for (; p + 2 <= np; p += 2) {
            __m512 t0, t1;
            GEMV_Q4_PIECE_SUM(p, t0);
            GEMV_Q4_PIECE_SUM(p + 1, t1);
            f0 = _mm512_fmadd_ps(t0, gemv_lanes2(ws + 2 * p, i01), f0);
            f1 = _mm512_fmadd_ps(t1, gemv_lanes2(ws + 2 * p + 2, i01), f1);
        }
        for (; p < np; ++p) {
            __m512 t0;
            GEMV_Q4_PIECE_SUM(p, t0);
            f0 = _mm512_fmadd_ps(t0, gemv_lanes2(ws + 2 * p, i01), f0);
        }
    } else if (GSB == 4) {
        for (; p + 2 <= np; p += 2) {
            __m512 t0, t1;
            GEMV_Q4_PIECE_SUM(p, t0);
            GEMV_Q4_PIECE_SUM(p + 1, t1);
            f0 = _mm512_fmadd_ps(t0, _mm512_set1_ps(ws[p]), f0);
            f1 = _mm512_fmadd_ps(t1, _mm512_set1_ps(ws[p + 1]), f1);
        }
        for (; p < np; ++p) {
            __m512 t0;
            GEMV_Q4_PIECE_SUM(p, t0);
            f0 = _mm512_fmadd_ps(t0, _mm512_set1_ps(ws[p]), f0);
        }
    } else { /* blocks of gsb / 4 pieces: fp32 sums per block, one scale at its end */
        const int64_t ppb = gsb / 4;
        for (int64_t b = 0; p < np; ++b) {
            __m512 ba = _mm512_setzero_ps(), bb = _mm512_setzero_ps();
            const int64_t pe = lb_min(p + ppb, np);
            for (; p + 2 <= pe; p += 2) {
                __m512 t0, t1;
                GEMV_Q4_PIECE_SUM(p, t0);
                GEMV_Q4_PIECE_SUM(p + 1, t1);
                ba = _mm512_add_ps(ba, t0);
                bb = _mm512_add_ps(bb, t1);
            }
            if (p < pe) {
                __m512 t0;
                GEMV_Q4_PIECE_SUM(p, t0);
                ba = _mm512_add_ps(ba, t0);
                ++p;
            }
            const __m512 sv = _mm512_set1_ps(ws[b]);
            f0 = _mm512_fmadd_ps(ba, sv, f0);
            f1 = _mm512_fmadd_ps(bb, sv, f1);
        }
    }
    if (nsb & 2) { /* a trailing unit: sub-blocks j, j + 1 in natural order, into lanes 0..7 of f1 */
        const int64_t j = 4 * np;
        __m256i lo, hi;
        q4_unit(wr + j * 16, &lo, &hi);
        const __m256i zy = _mm256_setzero_si256();
        __m256 ta = _mm256_cvtepi32_ps(LB_DPBUSD(zy, lo, _mm256_loadu_si256((const __m256i*)(xp + j * 32))));
        __m256 tb = _mm256_cvtepi32_ps(LB_DPBUSD(zy, hi, _mm256_loadu_si256((const __m256i*)(xp + j * 32 + 32))));
        if (SCALED) {
            ta = _mm256_mul_ps(ta, _mm256_loadu_ps(dv + j * 8));
            tb = _mm256_mul_ps(tb, _mm256_loadu_ps(dv + j * 8 + 8));
        }
        const __m256 t = _mm256_fmadd_ps(ta, _mm256_set1_ps(ws[j / gsb]), _mm256_mul_ps(tb, _mm256_set1_ps(ws[(j + 1) / gsb])));
        f1 = _mm512_add_ps(f1, _mm512_zextps256_ps512(t));
    }
    return gemv_finish(_mm512_add_ps(f0, f1), d, wsz, xs, nb, SCALED);
}
#undef GEMV_Q4_PIECE
#undef GEMV_Q4_PIECE_SUM

/* y[n] of one 8-bit weight row (Kp bytes) with the prepared row (see gemv_q4_row): 64 bytes (sub-blocks 2q,
   2q + 1) per zmm dot.
   GSB 1: per-lane scales [s(2q) x8 | s(2q+1) x8]; otherwise (gsb even) per block: SCALED sums converted and
   scaled dots in fp32, unscaled (one scale per row) keeps int32 sums (at most 4 * 255 * 127 a lane per dot;
   flushed every 4096 dots) and converts once. */
static inline __attribute__((always_inline)) float gemv_q8_row(
        const uint8_t* wr, const float* ws, const float* wsz, const float* xs, int64_t nb, float d, int64_t nsb,
        int64_t gsb, const int8_t* xq, const float* dv, const int GSB, const int SCALED) {
    const __m512i z = _mm512_setzero_si512();
    __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps();
    const int64_t nq = nsb / 2;
#define GEMV_Q8_DOT(Q, ACC) _mm512_dpbusd_epi32(ACC, _mm512_loadu_si512((const void*)(wr + (Q) * 64)),          \
                                                _mm512_loadu_si512((const void*)(xq + (Q) * 64)))
    if (GSB == 1) {
        const __m512i i01 = gemv_idx(0, 1);
        int64_t q = 0;
        for (; q + 2 <= nq; q += 2) {
            __m512 t0 = _mm512_cvtepi32_ps(GEMV_Q8_DOT(q, z)), t1 = _mm512_cvtepi32_ps(GEMV_Q8_DOT(q + 1, z));
            if (SCALED) {
                t0 = _mm512_mul_ps(t0, _mm512_loadu_ps(dv + q * 16));
                t1 = _mm512_mul_ps(t1, _mm512_loadu_ps(dv + q * 16 + 16));
            }
            f0 = _mm512_fmadd_ps(t0, gemv_lanes2(ws + 2 * q, i01), f0);
            f1 = _mm512_fmadd_ps(t1, gemv_lanes2(ws + 2 * q + 2, i01), f1);
        }
        for (; q < nq; ++q) {
            __m512 t0 = _mm512_cvtepi32_ps(GEMV_Q8_DOT(q, z));
            if (SCALED) t0 = _mm512_mul_ps(t0, _mm512_loadu_ps(dv + q * 16));
            f0 = _mm512_fmadd_ps(t0, gemv_lanes2(ws + 2 * q, i01), f0);
        }
    } else {
        const int64_t qpb = gsb / 2;
        for (int64_t b = 0, q = 0; q < nq; ++b) {
            const int64_t qe = lb_min(q + qpb, nq);
            __m512 t0 = _mm512_setzero_ps(), t1 = _mm512_setzero_ps();
            if (SCALED) {
                for (; q + 2 <= qe; q += 2) {
                    t0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(GEMV_Q8_DOT(q, z)), _mm512_loadu_ps(dv + q * 16), t0);
                    t1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(GEMV_Q8_DOT(q + 1, z)), _mm512_loadu_ps(dv + q * 16 + 16),
                                         t1);
                }
                if (q < qe) {
                    t0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(GEMV_Q8_DOT(q, z)), _mm512_loadu_ps(dv + q * 16), t0);
                    ++q;
                }
            } else {
                while (q < qe) {
                    __m512i i0 = z, i1 = z, i2 = z, i3 = z;
                    const int64_t qc = lb_min(q + 4096, qe);
                    for (; q + 4 <= qc; q += 4) {
                        i0 = GEMV_Q8_DOT(q, i0);
                        i1 = GEMV_Q8_DOT(q + 1, i1);
                        i2 = GEMV_Q8_DOT(q + 2, i2);
                        i3 = GEMV_Q8_DOT(q + 3, i3);
                    }
                    for (; q < qc; ++q) i0 = GEMV_Q8_DOT(q, i0);
                    t0 = _mm512_add_ps(t0, _mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1)));
                    t1 = _mm512_add_ps(t1, _mm512_cvtepi32_ps(_mm512_add_epi32(i2, i3)));
                }
            }
            const __m512 sv = _mm512_set1_ps(ws[b]);
            f0 = _mm512_fmadd_ps(t0, sv, f0);
            f1 = _mm512_fmadd_ps(t1, sv, f1);
        }
    }
#undef GEMV_Q8_DOT
    return gemv_finish(_mm512_add_ps(f0, f1), d, wsz, xs, nb, SCALED);
}

/* y[n] (bias aside) of weight row n, BITS 4 or 8, for one (gsb, SCALED) case. */
#define GEMV_ROW(GSB, SCALED)                                                                           \
    (BITS == 8 ? gemv_q8_row(w + n * row_bytes, ws + n * nb, wsz + n * nb, xs, nb, d, nsb, gsb, xp, dv, GSB, SCALED) \
               : gemv_q4_row(w + n * row_bytes, ws + n * nb, wsz + n * nb, xs, nb, d, nsb, gsb, xp, dv, GSB, SCALED))

#define GEMV_ROWS(SCALED)                                                                               \
    switch (BITS == 8 && gsb != 1 ? 0 : gsb) {                                                          \
        case 1: for (; n < n1; ++n) y[n] = GEMV_ROW(1, SCALED) + (bias ? bias[n] : 0.f); break;         \
        case 2: for (; n < n1; ++n) y[n] = GEMV_ROW(2, SCALED) + (bias ? bias[n] : 0.f); break;         \
        case 4: for (; n < n1; ++n) y[n] = GEMV_ROW(4, SCALED) + (bias ? bias[n] : 0.f); break;         \
        default: for (; n < n1; ++n) y[n] = GEMV_ROW(0, SCALED) + (bias ? bias[n] : 0.f); break;        \
    }

/* y (1, N) = x_q @ dequant(w).T + bias for one activation row (lb_gemm_q4 / lb_gemm_q8's arguments at M = 1),
   threads splitting the rows in contiguous runs of LB_GEMV_NC; returns 0 (nothing done) for a block shape the
   zmm kernels do not take (gemv_fits, or blocks not covering Kp) or when the prepared row's scratch cannot be
   allocated. */
#define LB_GEMV_NC 16
static inline __attribute__((always_inline)) int gemv_q(
        const uint8_t* w, const float* ws, const float* wsz, int64_t N, int64_t Kp, int64_t gsb, int64_t nb,
        const int8_t* xq, const float* xd, const float* xs, int mode, const float* bias, float* y, int nt,
        const int BITS) {
    /* the kernels read a weight scale for every 32-column piece up to Kp: blocks of 32 with K % 64 in 1..32 leave
       the last piece without one (reading on went past the scales: NaN * 0 when the bytes there were NaN) */
    if (!gemv_fits(gsb, BITS) || nb * gsb < Kp / 32) return 0;
    /* the prepared row: 2 * Kp bytes, on the stack up to K = 16384 (a malloc + free per call cost ~0.3 us) */
    _Alignas(64) int8_t local[2 * 16384];
    int8_t* xp = Kp <= 16384 ? local : (int8_t*)malloc((size_t)(2 * Kp));
    if (!xp) return 0;
    float* dv = (float*)(xp + Kp);
    gemv_prep(xq, xd, Kp, gsb, mode, BITS, xp, dv);
    const int64_t row_bytes = Kp * BITS / 8, nsb = Kp / 32, ntask = (N + LB_GEMV_NC - 1) / LB_GEMV_NC;
    const float d = mode == LB_ACT_ROW ? xd[0] : 1.f;
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < ntask; ++t) {
        int64_t n = t * LB_GEMV_NC;
        const int64_t n1 = lb_min(n + LB_GEMV_NC, N);
        if (mode == LB_ACT_ROW) { GEMV_ROWS(0) } else { GEMV_ROWS(1) }
    }
    if (xp != local) free(xp);
    return 1;
}
#undef GEMV_ROWS
#undef GEMV_ROW
#else
#define LB_GEMV 0
#endif
