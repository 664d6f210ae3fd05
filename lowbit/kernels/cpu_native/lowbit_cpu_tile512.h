/* lowbit native CPU kernels, part 3 (AVX-512 VNNI only): the register-tiled GEMM for M >= LB_TILE_MIN_M.
   Included once by lowbit_cpu.c after lowbit_cpu_rows.h (relies on its macros and `lb_min`).

   The row kernels put K across vector lanes, so every (weight row, activation row, block) ends in a convert, an fma
   and finally a horizontal sum. Here outputs lie across lanes instead (as in fbgemm / oneDNN): a tile of TN = 32
   weight rows is transposed, one K-chunk of KC codes at a time, into a buffer where 4 consecutive codes of the 32
   rows fill two 64-byte vectors; each activation row then broadcasts 4 int8 values and one vpdpbusd adds 4 products
   to 16 outputs. A 4 x 32 micro-tile keeps 8 int32 accumulators over a whole block (at most KC codes), then one
   convert + fma per (row, block) with the combined scale s_b * d_rb, and the zero term xs_rb * wsz_b as one fnmadd.
   The weights are decoded once per chunk and reused by every activation row; y itself carries the fp32 sums from
   one chunk to the next. The stored layout (pack_q4 / pack_q8) is transposed chunk by chunk on every call and the
   scales are put across lanes once per call; 8-bit codes may instead come pre-tiled (`lb_gemm_q8t`: the layout of
   buf for the whole row, made once at load, scales across lanes likewise), read in place. The activations are
   re-laid chunk by chunk once per call (scratch, freed on return).
   Measured on Zen 4 (1 thread, 4096 x 4096): 1.2-1.9x the row kernels at M 32..128; below M 16 the per-chunk
   transpose (about 1 ms per 16 M codes) costs more than it saves. Pre-tiled 8-bit codes skip it: M 4 / 8 / 32
   1.39 / 1.71 / 4.12 -> 0.86 / 1.16 / 3.70 ms. */

#define LB_TN 32
#ifndef LB_MR
#define LB_MR 4 /* activation rows per micro-tile (<= 8; 6 and 8 measured slower on Zen 4) */
#endif
#ifndef LB_TILE_PF_AHEAD8
#define LB_TILE_PF_AHEAD8 3 /* 8-bit: 48 KiB ahead (M 4 / 8, 2048 x 5632: 0.86 -> 0.79, 1.10 -> 1.03 ms) */
#endif
#ifndef LB_TILE_PF_HINT8
#define LB_TILE_PF_HINT8 _MM_HINT_T1 /* 8-bit rows of 4096 codes are 4 KiB apart: a chunk's 32 rows x 8 lines land in
                                        8 L1 sets and evict each other before the pack reads them; into L2 they stay
                                        (4096 x 4096, M 2 / 32: 1.29 -> 1.02 ms, 3.85 -> 3.71 ms) */
#endif
#ifndef LB_TILE_PF_STEPT
#define LB_TILE_PF_STEPT 8 /* pre-tiled codes: a prefetch per 8 lines (the chunk is one stream; a prefetch per line made
                               M = 1 4096 x 4096 0.57 ms, per 4..16 lines 0.39; M 8 1.19 -> 1.06) */
#endif
#ifndef LB_KC
#define LB_KC 512 /* codes per chunk: the 32-row buffer is 16 KiB (L1); int32 lanes hold 128 * 4 * 255 * 127;
                     512 measured 3-8% faster than 256 at M 128, even at M 32 */
#endif

/* acc += dot4(w u8, a s8) per int32 lane, in place: with the intrinsic gcc copies every accumulator each step. */
static inline __m512i lb_dpbusd512(__m512i acc, __m512i w, __m512i a) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(w), "v"(a));
    return acc;
}

/* In-place 16 x 16 transpose of 32-bit elements: r[i] lane j -> r[j] lane i. */
static inline void lb_transpose16(__m512i* r) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* u[i + j]: column 4L + j of rows i..i+3, in 128-bit lane L */
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int j = 0; j < 4; ++j) {
        const __m512i alo = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x44), ahi = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xEE);
        const __m512i blo = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x44);
        const __m512i bhi = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xEE);
        r[j] = _mm512_shuffle_i32x4(alo, blo, 0x88);
        r[4 + j] = _mm512_shuffle_i32x4(alo, blo, 0xDD);
        r[8 + j] = _mm512_shuffle_i32x4(ahi, bhi, 0x88);
        r[12 + j] = _mm512_shuffle_i32x4(ahi, bhi, 0xDD);
    }
}

/* dst[(t * nb + b) * 32 + j] = src[(32t + j) * nb + b] (0 for rows >= N): per-block scales of each 32-row tile
   across lanes, 16 x 16 at a time. */
static void lb_scales_t(const float* src, int64_t N, int64_t nb, float* dst) {
    for (int64_t n0 = 0; n0 < (N + LB_TN - 1) / LB_TN * LB_TN; n0 += 16) { /* pad rows of the last tile: 0 */
        for (int64_t b0 = 0; b0 < nb; b0 += 16) {
            const int64_t bn = lb_min(16, nb - b0);
            const __mmask16 mb = bn == 16 ? 0xFFFF : (__mmask16)((1u << bn) - 1);
            __m512i r[16];
            for (int64_t i = 0; i < 16; ++i)
                r[i] = n0 + i < N ? _mm512_castps_si512(_mm512_maskz_loadu_ps(mb, src + (n0 + i) * nb + b0))
                                  : _mm512_setzero_si512();
            lb_transpose16(r);
            float* d = dst + ((n0 / 32) * nb + b0) * LB_TN + n0 % 32;
            for (int64_t bb = 0; bb < bn; ++bb) _mm512_storeu_si512((void*)(d + bb * LB_TN), r[bb]);
        }
    }
}

/* The 64 codes [k, k + 64) of one weight row as bytes in order (k a multiple of 64). */
static inline __m512i lb_codes64(const uint8_t* wr, int64_t k, const int BITS) {
    if (BITS == 8) return _mm512_loadu_si512((const void*)(wr + k));
    __m256i lo, hi;
    q4_unit(wr + k / 2, &lo, &hi);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* buf[g * 32 + i] (32-bit) = codes 4g..4g+3 of tile row i, for the chunk [c0, c1) (multiples of 64); rows >= nn
   are zero. */
static void lb_tile_pack(const uint8_t* w, int64_t row_bytes, int64_t nn, int64_t c0, int64_t c1, uint32_t* buf,
                         const int BITS) {
    for (int64_t k = c0; k < c1; k += 64) {
        for (int h = 0; h < 2; ++h) {
            __m512i r[16];
            for (int i = 0; i < 16; ++i)
                r[i] = h * 16 + i < nn ? lb_codes64(w + (h * 16 + i) * row_bytes, k, BITS) : _mm512_setzero_si512();
            lb_transpose16(r);
            uint32_t* dst = buf + (k - c0) / 4 * LB_TN + h * 16;
            for (int g = 0; g < 16; ++g) _mm512_storeu_si512((void*)(dst + g * LB_TN), r[g]);
        }
    }
}

/* MR (1..LB_MR) activation rows x the 32 tile rows over the chunk [c0, c1): y[r, 0..nn) += sum over the chunk's
   blocks of s_b * d_rb * idot_rb - (blocks starting here) xs_rb * wsz_b; y starts as the bias when c0 == 0.
   wst, wzt: the tile's ws and wsz across lanes (32 per block, see lb_scales_t); xq: row r's code k at
   xq[r * xstride + k]; sub: activation scales per 32 codes (xd[r * dstride + k / 32]: one convert per 32 codes),
   else per block (xd[r * dstride + b]); gsum (with sub): per-piece dots summed in fp32 per block, see g below. */
static inline __attribute__((always_inline)) void lb_tile_rows(
        const uint32_t* buf, int64_t c0, int64_t c1, int64_t gk, int64_t nb, const float* wst,
        const float* wzt, const int8_t* xq, int64_t xstride, const float* xd, int64_t dstride, int sub, const float* xs,
        const float* bt, float* y, int64_t N, __mmask16 m0, __mmask16 m1, const int gsum, const int MR) {
    __m512 f[16];
    for (int r = 0; r < MR; ++r) {
        f[2 * r] = c0 == 0 ? _mm512_loadu_ps(bt) : _mm512_maskz_loadu_ps(m0, y + r * N);
        f[2 * r + 1] = c0 == 0 ? _mm512_loadu_ps(bt + 16) : _mm512_maskz_loadu_ps(m1, y + r * N + 16);
    }
    for (int64_t s0 = c0; s0 < c1;) {
        const int64_t b = s0 / gk, se = lb_min(c1, (b + 1) * gk); /* [s0, se): one block's share of the chunk */
        if (b >= nb) break; /* codes past the last block: zero activations */
        const float* sb = wst + b * LB_TN;
        const float* zb = wzt + b * LB_TN;
        __m512 g[16]; /* gsum (8-bit, sub): sum over the segment's 32-code pieces of d_rj * idot_rj, s_b applied once
                         at its end (one convert + fma per piece instead of convert, multiply and fma); 4-bit keeps the
                         per-piece form, bit for bit as before */
        for (int64_t p0 = s0; p0 < se;) {
            const int64_t p1 = sub ? lb_min(p0 + 32, se) : se;
            __m512i acc[16];
            for (int i = 0; i < 2 * MR; ++i) acc[i] = _mm512_setzero_si512();
            const uint32_t* bp = buf + (p0 - c0) / 4 * LB_TN;
            const int8_t* xa = xq + p0;
            for (int64_t q = 0; q < (p1 - p0) / 4; ++q) {
                const __m512i w0 = _mm512_loadu_si512((const void*)(bp + q * LB_TN));
                const __m512i w1 = _mm512_loadu_si512((const void*)(bp + q * LB_TN + 16));
                for (int r = 0; r < MR; ++r) {
                    int32_t a4;
                    memcpy(&a4, xa + r * xstride + q * 4, 4);
                    const __m512i a = _mm512_set1_epi32(a4);
                    acc[2 * r] = lb_dpbusd512(acc[2 * r], w0, a);
                    acc[2 * r + 1] = lb_dpbusd512(acc[2 * r + 1], w1, a);
                }
            }
            for (int r = 0; r < MR; ++r) {
                if (gsum) {
                    const __m512 d = _mm512_set1_ps(xd[r * dstride + p0 / 32]);
                    for (int h = 0; h < 2; ++h) {
                        const __m512 t = _mm512_cvtepi32_ps(acc[2 * r + h]);
                        g[2 * r + h] = p0 == s0 ? _mm512_mul_ps(t, d) : _mm512_fmadd_ps(t, d, g[2 * r + h]);
                    }
                    continue;
                }
                const __m512 d = _mm512_set1_ps(xd[r * dstride + (sub ? p0 / 32 : b)]);
                for (int h = 0; h < 2; ++h) {
                    f[2 * r + h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[2 * r + h]),
                                                   _mm512_mul_ps(_mm512_loadu_ps(sb + 16 * h), d), f[2 * r + h]);
                    if (p0 == b * gk)
                        f[2 * r + h] = _mm512_fnmadd_ps(_mm512_set1_ps(xs[r * nb + b]), _mm512_loadu_ps(zb + 16 * h),
                                                        f[2 * r + h]);
                }
            }
            p0 = p1;
        }
        for (int r = 0; gsum && r < MR; ++r)
            for (int h = 0; h < 2; ++h) {
                f[2 * r + h] = _mm512_fmadd_ps(g[2 * r + h], _mm512_loadu_ps(sb + 16 * h), f[2 * r + h]);
                if (s0 == b * gk)
                    f[2 * r + h] = _mm512_fnmadd_ps(_mm512_set1_ps(xs[r * nb + b]), _mm512_loadu_ps(zb + 16 * h),
                                                    f[2 * r + h]);
            }
        s0 = se;
    }
    for (int r = 0; r < MR; ++r) {
        _mm512_mask_storeu_ps(y + r * N, m0, f[2 * r]);
        _mm512_mask_storeu_ps(y + r * N + 16, m1, f[2 * r + 1]);
    }
}

/* The tiled GEMM (arguments as gemm_tiles, xc from gemm_tile512; gk = gsb * 32 codes per weight block). Tasks
   are tiles of 32 weight rows; each walks K in chunks and, per chunk, all M activation rows LB_MR at a time. */
static void gemm_tile512_run(const uint8_t* w, int64_t N, int64_t Kp,
                             int64_t gsb, int64_t nb, const int8_t* xc, const float* xd, int sub, const float* xs,
                             int64_t M, const float* wsT, const float* wszT, const float* bias, float* y, int nt,
                             const int BITS, const int TILED) {
    const int64_t row_bytes = Kp * BITS / 8, gk = gsb * 32, ntask = (N + LB_TN - 1) / LB_TN;
    const int64_t dstride = sub ? Kp / 32 : nb;
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < ntask; ++t) {
        const int64_t n0 = t * LB_TN, nn = lb_min(LB_TN, N - n0);
        const __mmask16 m0 = nn >= 16 ? 0xFFFF : (__mmask16)((1u << nn) - 1);
        const __mmask16 m1 = nn >= 32 ? 0xFFFF : nn > 16 ? (__mmask16)((1u << (nn - 16)) - 1) : 0;
        uint32_t buf[LB_KC / 4 * LB_TN] __attribute__((aligned(64)));
        float bt[LB_TN];
        const float *wst = wsT + t * nb * LB_TN, *wzt = wszT + t * nb * LB_TN;
        for (int64_t j = 0; j < LB_TN; ++j) bt[j] = bias && j < nn ? bias[n0 + j] : 0.f;
        for (int64_t c0 = 0; c0 < Kp; c0 += LB_KC) {
            const int64_t c1 = lb_min(c0 + LB_KC, Kp);
            if (c0 / gk >= nb) break;
            const uint32_t* wb = buf; /* the chunk's codes in the buf layout: pre-tiled ones in place */
            if (TILED)
                wb = (const uint32_t*)(w + n0 * Kp + c0 * LB_TN);
            else
                lb_tile_pack(w + n0 * row_bytes, row_bytes, nn, c0, c1, buf, BITS);
            /* the weight lines of the chunk D ahead in this thread's walk (this tile's next chunks, then the next
               tile's first; D = 1, 8-bit LB_TILE_PF_AHEAD8), prefetched a share per micro-tile: the pack's loads
               otherwise wait on L3/DRAM with nothing to overlap them (35% of the time at M = 32) */
            const int64_t nch = (lb_min(Kp, nb * gk) + LB_KC - 1) / LB_KC;
            const int64_t vi = c0 / LB_KC + (BITS == 8 ? LB_TILE_PF_AHEAD8 : 1), tt = t + vi / nch;
            const int64_t cc = vi % nch * LB_KC;
            const uint8_t* pw = tt >= ntask ? NULL : TILED ? w + tt * LB_TN * Kp + cc * LB_TN
                                                           : w + tt * LB_TN * row_bytes + cc * BITS / 8;
            const int64_t prow = pw ? lb_min(LB_TN, N - tt * LB_TN) : 0;
            const int64_t plines = pw ? prow * (lb_min(LB_KC, Kp - cc) * BITS / 8 / 64) : 0;
            const int64_t lpr = plines / (prow > 0 ? prow : 1), nmt = (M + LB_MR - 1) / LB_MR;
            int64_t pl = 0, prw = 0, pcl = 0; /* lines issued; the next one's row and line in it (no division) */
            for (int64_t m = 0; m < M; m += LB_MR) {
                const int64_t mr = lb_min(LB_MR, M - m);
                const int64_t pe = plines * (m / LB_MR + 1) / nmt;
                for (; TILED && pl < pe; pl += LB_TILE_PF_STEPT) /* the chunk is contiguous */
                    _mm_prefetch((const char*)(pw + pl * 64), LB_TILE_PF_HINT8);
                for (; !TILED && pl < pe; ++pl) {
                    if (BITS == 8)
                        _mm_prefetch((const char*)(pw + prw * row_bytes + pcl * 64), LB_TILE_PF_HINT8);
                    else
                        _mm_prefetch((const char*)(pw + prw * row_bytes + pcl * 64), _MM_HINT_T0);
                    if (++pcl == lpr) {
                        pcl = 0;
                        ++prw;
                    }
                }
                const int8_t* xr = xc + c0 * M + m * (c1 - c0) - c0; /* indexed by k as in xq */
                const float *dr = xd + m * dstride, *sr = xs + m * nb;
                float* yr = y + m * N + n0;
#define LB_TR(R) lb_tile_rows(wb, c0, c1, gk, nb, wst, wzt, xr, c1 - c0, dr, dstride, sub, sr, bt, yr, N, m0, m1, \
                             sub && BITS == 8, R)
                switch (mr) {
                    case 8: LB_TR(8); break;
                    case 7: LB_TR(7); break;
                    case 6: LB_TR(6); break;
                    case 5: LB_TR(5); break;
                    case 4: LB_TR(4); break;
                    case 3: LB_TR(3); break;
                    case 2: LB_TR(2); break;
                    default: LB_TR(1); break;
                }
#undef LB_TR
            }
        }
    }
}

/* xq re-laid chunk by chunk: chunk [c0, c1) of row m at xc[c0 * M + m * (c1 - c0)], so the 4 rows of a micro-tile
   are (c1 - c0) bytes apart, not Kp (rows Kp = 4096 bytes apart share one L1 set and evict each other). Returns 0
   when the scratch cannot be allocated (the caller then takes the row kernels). TILED (8-bit): w, ws and wsz are
   already across lanes (lb_gemm_q8t's layout), else they are put there here. */
static int gemm_tile512(const uint8_t* w, const float* ws, const float* wsz, int64_t N, int64_t Kp, int64_t gsb,
                        int64_t nb, const int8_t* xq, const float* xd, const float* xs, int64_t M, int sub,
                        const float* bias, float* y, int nt, const int BITS, const int TILED) {
    const int64_t nst = (N + LB_TN - 1) / LB_TN * LB_TN * nb;
    int8_t* xc = (int8_t*)malloc((size_t)(M * Kp));
    float* wsT = TILED ? NULL : (float*)malloc(sizeof(float) * 2 * (size_t)nst);
    if (!xc || (!TILED && !wsT)) {
        free(xc);
        free(wsT);
        return 0;
    }
    if (!TILED) {
        lb_scales_t(ws, N, nb, wsT);
        lb_scales_t(wsz, N, nb, wsT + nst);
    }
    for (int64_t c0 = 0; c0 < Kp; c0 += LB_KC) {
        const int64_t kc = lb_min(LB_KC, Kp - c0);
        for (int64_t m = 0; m < M; ++m) memcpy(xc + c0 * M + m * kc, xq + m * Kp + c0, (size_t)kc);
    }
    if (TILED)
        gemm_tile512_run(w, N, Kp, gsb, nb, xc, xd, sub, xs, M, ws, wsz, bias, y, nt, 8, 1);
    else
        gemm_tile512_run(w, N, Kp, gsb, nb, xc, xd, sub, xs, M, wsT, wsT + nst, bias, y, nt, BITS, 0);
    free(xc);
    free(wsT);
    return 1;
}
