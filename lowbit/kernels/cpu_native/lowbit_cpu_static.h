/* lowbit native CPU kernels, part 3: static W8A8 (int8 activations with a FIXED scale x int8 weights -> int32).

   Math (symmetric; a = activation step, c = clamp, s[n] = weight scale, see lowbit/kernels/cpu_static_int8.py):
       xq = clamp(round_half_even(x / a), -c, c);  acc[m, n] = sum_k xq[m, k] * wq[n, k];
       y[m, n] = acc[m, n] * (a * s[n]) + bias[n], then max(y, 0) when relu is set (Conv + ReLU fused).
   vpdpbusd multiplies u8 by s8, so with VNNI activations are stored as u8 = xq + 128 and the kernel subtracts
   128 * sum_k wq[n, k] (precomputed once per weight, `wsum`) from each accumulator: exact in int32 while
   K * 255 * 127 < 2**31 (K <= 65536, checked by the caller). Without VNNI the shift is 0 (codes stay s8): AVX2 uses
   the sign trick (maddubs(|x|, sign(w, x)): pairs of 127 * 127, no saturation), plain C multiplies.
   Weight layout (`pack_static_native`, done in torch): panels of NR output channels (64 with AVX-512, else 16;
   lb_static_nr()); within a panel, for each group of 4 input channels, NR x 4 bytes (channel-major): each 64-byte
   line feeds 16 int32 lanes per 4 k.
   Included once at the end of lowbit_cpu.c (relies on its macros and lb_min). */

#ifndef LBS_ZMM
#define LBS_ZMM (LB_VNNI == 2)
#endif
#if LBS_ZMM
/* AVX-512: tiles of MR rows x NV zmm of 16 channels. Measured on Zen 4 (one core, 4096^2): 6 x 4 (24 accumulators)
   in inline asm ~190-200 GMAC/s, the machine's vpdpbusd peak within 5%; the same in C ~100 (gcc spills the
   accumulators); 8 x 2 in C (LBS_ASM=0, the fallback for compilers without GNU asm) ~160-190; 12 x 1 and 16 x 1 ~160
   (a broadcast per dot). */
#ifndef LBS_ASM
#define LBS_ASM 1
#endif
#if LBS_ASM
#define LBS_MR 6
#define LBS_NV 4
#else
#define LBS_MR 8
#define LBS_NV 2
#endif
#define LBS_NR (16 * LBS_NV)
#else
#define LBS_ASM 0
#define LBS_NR 16
#define LBS_MR 6
#endif
#ifndef LBS_KC
#define LBS_KC (LBS_ZMM ? 1024 : 16384 / LBS_NR) /* a K block of one panel, 16-32 KB: in L1 while the row tiles use it */
#endif
#if LB_VNNI
#define LBS_SHIFT 128
#else
#define LBS_SHIFT 0
#endif

/* The shift this build adds to activation codes (128 with VNNI, else 0): the code a zero (padding) takes. */
int lb_static_shift(void) { return LBS_SHIFT; }

static inline uint8_t lbs_code(float x, float a, float c) {
    float q = nearbyintf(x / a); /* division, not x * (1 / a): the same code as torch.div(x, a).round() */
    q = q > c ? c : (q < -c ? -c : q);
    if (q != q) q = 0.f; /* NaN: any code (the caller marks the row NaN) */
    return (uint8_t)((int32_t)q + LBS_SHIFT);
}

/* Activation layout ("tiled"): tiles of MR rows; in a tile, for each group of 4 input channels, MR x 4 bytes, so the
   GEMM reads one sequential stream. Row m's code k sits at xt[(m / MR) * Kp * MR + (k / 4) * MR * 4 + (m % MR) * 4
   + k % 4]; rows past M in the last tile and columns past K hold the zero code. lb_static_mr() gives MR. */
int lb_static_mr(void) { return LBS_MR; }
/* Output channels per weight panel of this build (the layout `pack_static_w8` writes). */
int lb_static_nr(void) { return LBS_NR; }

static inline uint8_t* lbs_row(uint8_t* xt, int64_t m, int64_t Kp) {
    return xt + (m / LBS_MR) * Kp * LBS_MR + (m % LBS_MR) * 4;
}
#define LBS_AT(row, k) ((row)[((k) >> 2) * (LBS_MR * 4) + ((k) & 3)])

#if LB_AVX2
/* 8 floats -> 8 codes (+ shift) in the low 8 bytes; *bad counts the NaN / inf among them. */
static inline __m128i lbs_codes8(const float* x, __m256 va, __m256 lo, __m256 hi, int64_t* bad) {
    const __m256 xv = _mm256_loadu_ps(x);
    const __m256 inf = _mm256_set1_ps(INFINITY), mag = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), xv);
    *bad += __builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(mag, inf, _CMP_NLT_UQ)));
    __m256 v = _mm256_round_ps(_mm256_div_ps(xv, va), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi); /* NaN becomes lo or hi: any code */
    __m256i i = _mm256_add_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(LBS_SHIFT));
    __m128i p = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1)); /* 0..255 fits */
    return LBS_SHIFT ? _mm_packus_epi16(p, p) : _mm_packs_epi16(p, p);
}
#endif

/* One row of K floats -> codes (+ shift) at its place in the tiled layout, padded to Kp with the zero code;
   returns how many of the floats are NaN or inf. */
static int64_t lbs_quant_row(const float* x, int64_t K, int64_t Kp, float a, float c, uint8_t* q) {
    int64_t k = 0, bad = 0;
#if LB_AVX2
    const __m256 va = _mm256_set1_ps(a), hi = _mm256_set1_ps(c), lo = _mm256_set1_ps(-c);
    for (; k + 8 <= K; k += 8) {
        const __m128i p = lbs_codes8(x + k, va, lo, hi, &bad);
        const int32_t g0 = _mm_cvtsi128_si32(p), g1 = _mm_extract_epi32(p, 1);
        memcpy(&LBS_AT(q, k), &g0, 4);
        memcpy(&LBS_AT(q, k + 4), &g1, 4);
    }
#endif
    for (; k < K; ++k) {
        bad += !isfinite(x[k]);
        LBS_AT(q, k) = lbs_code(x[k], a, c);
    }
    for (; k < Kp; ++k) LBS_AT(q, k) = (uint8_t)LBS_SHIFT;
    return bad;
}

/* n floats -> n codes (+ shift), contiguous; returns how many are NaN or inf. */
static int64_t lbs_quant_plain(const float* x, int64_t n, float a, float c, uint8_t* q) {
    int64_t k = 0, bad = 0;
#if LB_AVX2
    const __m256 va = _mm256_set1_ps(a), hi = _mm256_set1_ps(c), lo = _mm256_set1_ps(-c);
    for (; k + 8 <= n; k += 8) _mm_storel_epi64((__m128i*)(q + k), lbs_codes8(x + k, va, lo, hi, &bad));
#endif
    for (; k < n; ++k) {
        bad += !isfinite(x[k]);
        q[k] = lbs_code(x[k], a, c);
    }
    return bad;
}

/* Zero codes in the rows [M, tile end) of the last tile (they are computed, never stored). */
static void lbs_pad_rows(uint8_t* xt, int64_t M, int64_t Kp) {
    for (int64_t m = M; m % LBS_MR; ++m) {
        uint8_t* q = lbs_row(xt, m, Kp);
        for (int64_t k = 0; k < Kp; ++k) LBS_AT(q, k) = (uint8_t)LBS_SHIFT;
    }
}

/* x fp32 (M, K) -> xt (tiled, ceil(M / MR) * MR * Kp bytes): codes + shift with step a and clamp c. Returns the
   number of NaN / inf in x (their rows' codes are meaningless: the caller marks those rows). */
int64_t lb_static_quant(const float* x, int64_t M, int64_t K, int64_t Kp, float a, int clamp, uint8_t* xt, int nt) {
    int64_t bad = 0;
    #pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : bad) if (M * K > 65536)
    for (int64_t m = 0; m < M; ++m) bad += lbs_quant_row(x + m * K, K, Kp, a, (float)clamp, lbs_row(xt, m, Kp));
    lbs_pad_rows(xt, M, Kp);
    return bad;
}

/* Columns of one image from its codes laid out channels-last (hwc: H * W pixels of Cp codes + shift, padded channels
   holding the zero code): cols (OH * OW rows of Kp = kh * kw * Cp codes, tiled), column k = (i, j, c), each (i, j)
   of a column copying Cp / 4 whole 4-byte groups; zero padding takes the zero code. */
static void lbs_cols(const uint8_t* hwc, int64_t H, int64_t W, int64_t Cp, int64_t kh, int64_t kw, int64_t sh,
                     int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t OH, int64_t OW, int64_t Kp,
                     uint8_t* cols, int nt) {
    const int64_t G = Cp / 4;
    const uint32_t zero4 = 0x01010101u * (uint32_t)LBS_SHIFT;
    (void)nt; /* unread without OpenMP */
    #pragma omp parallel for num_threads(nt) schedule(static) if (OH * OW * Kp > 262144)
    for (int64_t oy = 0; oy < OH; ++oy) {
        for (int64_t ox = 0; ox < OW; ++ox) {
            uint8_t* q = lbs_row(cols, oy * OW + ox, Kp);
            int64_t g = 0; /* 4-byte group of the column */
            for (int64_t i = 0; i < kh; ++i) {
                const int64_t y = oy * sh - ph + i * dh;
                for (int64_t j = 0; j < kw; ++j) {
                    const int64_t xx = ox * sw - pw + j * dw;
                    if (y < 0 || y >= H || xx < 0 || xx >= W) {
                        for (int64_t e = 0; e < G; ++e, ++g) memcpy(q + g * (LBS_MR * 4), &zero4, 4);
                    } else {
                        const uint8_t* src = hwc + (y * W + xx) * Cp;
                        for (int64_t e = 0; e < G; ++e, ++g) memcpy(q + g * (LBS_MR * 4), src + 4 * e, 4);
                    }
                }
            }
            for (; g < Kp / 4; ++g) memcpy(q + g * (LBS_MR * 4), &zero4, 4);
        }
    }
    lbs_pad_rows(cols, OH * OW, Kp);
}

/* im2col of one image x fp32 (C, H, W) with quantization: cols (OH * OW rows of Kp = kh * kw * Cp codes + shift,
   tiled), column k = (i, j, c) (channels innermost, padded to Cp, a multiple of 4, with zero codes): the order of
   a (O, kh, kw, Cp) weight. The image is quantized once (vectorized) and laid out channels-last (scratch: 2 * Cp *
   H * W bytes), then `lbs_cols`. Returns the number of NaN / inf in the image. */
int64_t lb_static_im2col(const float* x, int64_t C, int64_t H, int64_t W, int64_t Cp, int64_t kh, int64_t kw,
                      int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t OH, int64_t OW,
                      float a, int clamp, int64_t Kp, uint8_t* cols, uint8_t* scratch, int nt) {
    uint8_t* chw = scratch + Cp * H * W;
    uint8_t* hwc = scratch;
    const int64_t HW = H * W;
    const int64_t bad = lbs_quant_plain(x, C * HW, a, (float)clamp, chw);
    for (int64_t p = 0; p < HW; ++p) {
        uint8_t* d = hwc + p * Cp;
        for (int64_t ch = 0; ch < C; ++ch) d[ch] = chw[ch * HW + p];
        for (int64_t ch = C; ch < Cp; ++ch) d[ch] = (uint8_t)LBS_SHIFT;
    }
    lbs_cols(hwc, H, W, Cp, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, Kp, cols, nt);
    return bad;
}

/* The same from a channels-last image x fp32 (H, W, C): each pixel's C floats quantized straight into hwc (scratch:
   Cp * H * W bytes), no transpose. */
int64_t lb_static_im2col_nhwc(const float* x, int64_t C, int64_t H, int64_t W, int64_t Cp, int64_t kh, int64_t kw,
                              int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t OH,
                              int64_t OW, float a, int clamp, int64_t Kp, uint8_t* cols, uint8_t* scratch, int nt) {
    int64_t bad = 0;
    for (int64_t p = 0; p < H * W; ++p) {
        uint8_t* d = scratch + p * Cp;
        bad += lbs_quant_plain(x + p * C, C, a, (float)clamp, d);
        for (int64_t ch = C; ch < Cp; ++ch) d[ch] = (uint8_t)LBS_SHIFT;
    }
    lbs_cols(scratch, H, W, Cp, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, Kp, cols, nt);
    return bad;
}

#if LBS_ZMM && LBS_ASM
/* acc[r][0..64) += the dots of rows 0..R-1 of one activation tile (see lbs_tile), one function per R. zmm27: the
   broadcast activations of a row, zmm28..31: the 4 weight lines of a k step; the accumulators are asm outputs. */
#define LBS_DECL(R) __m512i c##R##0, c##R##1, c##R##2, c##R##3
#define LBS_ZERO(R) "vpxord %[c" #R "0], %[c" #R "0], %[c" #R "0]\n\t" "vpxord %[c" #R "1], %[c" #R "1], %[c" #R "1]\n\t" \
                    "vpxord %[c" #R "2], %[c" #R "2], %[c" #R "2]\n\t" "vpxord %[c" #R "3], %[c" #R "3], %[c" #R "3]\n\t"
#define LBS_DOTS(R) "vpbroadcastd " #R "*4(%[x]), %%zmm27\n\t"                                                \
                    "vpdpbusd %%zmm28, %%zmm27, %[c" #R "0]\n\t" "vpdpbusd %%zmm29, %%zmm27, %[c" #R "1]\n\t"   \
                    "vpdpbusd %%zmm30, %%zmm27, %[c" #R "2]\n\t" "vpdpbusd %%zmm31, %%zmm27, %[c" #R "3]\n\t"
#define LBS_OUT(R) [c##R##0] "=&v"(c##R##0), [c##R##1] "=&v"(c##R##1), [c##R##2] "=&v"(c##R##2), [c##R##3] "=&v"(c##R##3)
#define LBS_ADD1(P, C) _mm512_storeu_si512((void*)(P), _mm512_add_epi32(_mm512_loadu_si512((const void*)(P)), C))
#define LBS_ADD(R) LBS_ADD1(acc + R * LBS_NR, c##R##0); LBS_ADD1(acc + R * LBS_NR + 16, c##R##1); \
                   LBS_ADD1(acc + R * LBS_NR + 32, c##R##2); LBS_ADD1(acc + R * LBS_NR + 48, c##R##3)
#define LBS_TILE_FN(NAME, DECLS, ZEROS, DOTS, OUTS, ADDS)                                                     \
    static inline __attribute__((always_inline)) void NAME(const uint8_t* xt, int64_t Kp, const int8_t* wp,  \
                                                           int32_t* acc) {                                   \
        const int8_t* w = wp;                                                                                 \
        const uint8_t* x = xt;                                                                                \
        const int8_t* we = wp + Kp * LBS_NR;                                                                  \
        DECLS;                                                                                                \
        __asm__ volatile(ZEROS "1:\n\t"                                                                      \
                         "vmovdqu64 (%[w]), %%zmm28\n\t" "vmovdqu64 64(%[w]), %%zmm29\n\t"                  \
                         "vmovdqu64 128(%[w]), %%zmm30\n\t" "vmovdqu64 192(%[w]), %%zmm31\n\t"              \
                         DOTS "add $256, %[w]\n\t" "add $24, %[x]\n\t" "cmp %[we], %[w]\n\t" "jb 1b\n\t"   \
                         : OUTS, [w] "+r"(w), [x] "+r"(x)                                                     \
                         : [we] "r"(we)                                                                       \
                         : "zmm27", "zmm28", "zmm29", "zmm30", "zmm31", "cc", "memory");                       \
        ADDS;                                                                                                 \
    }
#define LBS_C ,
LBS_TILE_FN(lbs_tile_r1, LBS_DECL(0), LBS_ZERO(0), LBS_DOTS(0), LBS_OUT(0), LBS_ADD(0))
LBS_TILE_FN(lbs_tile_r2, LBS_DECL(0); LBS_DECL(1), LBS_ZERO(0) LBS_ZERO(1), LBS_DOTS(0) LBS_DOTS(1),
            LBS_OUT(0) LBS_C LBS_OUT(1), LBS_ADD(0); LBS_ADD(1))
LBS_TILE_FN(lbs_tile_r3, LBS_DECL(0); LBS_DECL(1); LBS_DECL(2), LBS_ZERO(0) LBS_ZERO(1) LBS_ZERO(2),
            LBS_DOTS(0) LBS_DOTS(1) LBS_DOTS(2), LBS_OUT(0) LBS_C LBS_OUT(1) LBS_C LBS_OUT(2),
            LBS_ADD(0); LBS_ADD(1); LBS_ADD(2))
LBS_TILE_FN(lbs_tile_r4, LBS_DECL(0); LBS_DECL(1); LBS_DECL(2); LBS_DECL(3),
            LBS_ZERO(0) LBS_ZERO(1) LBS_ZERO(2) LBS_ZERO(3), LBS_DOTS(0) LBS_DOTS(1) LBS_DOTS(2) LBS_DOTS(3),
            LBS_OUT(0) LBS_C LBS_OUT(1) LBS_C LBS_OUT(2) LBS_C LBS_OUT(3), LBS_ADD(0); LBS_ADD(1); LBS_ADD(2); LBS_ADD(3))
LBS_TILE_FN(lbs_tile_r5, LBS_DECL(0); LBS_DECL(1); LBS_DECL(2); LBS_DECL(3); LBS_DECL(4),
            LBS_ZERO(0) LBS_ZERO(1) LBS_ZERO(2) LBS_ZERO(3) LBS_ZERO(4),
            LBS_DOTS(0) LBS_DOTS(1) LBS_DOTS(2) LBS_DOTS(3) LBS_DOTS(4),
            LBS_OUT(0) LBS_C LBS_OUT(1) LBS_C LBS_OUT(2) LBS_C LBS_OUT(3) LBS_C LBS_OUT(4),
            LBS_ADD(0); LBS_ADD(1); LBS_ADD(2); LBS_ADD(3); LBS_ADD(4))
LBS_TILE_FN(lbs_tile_r6, LBS_DECL(0); LBS_DECL(1); LBS_DECL(2); LBS_DECL(3); LBS_DECL(4); LBS_DECL(5),
            LBS_ZERO(0) LBS_ZERO(1) LBS_ZERO(2) LBS_ZERO(3) LBS_ZERO(4) LBS_ZERO(5),
            LBS_DOTS(0) LBS_DOTS(1) LBS_DOTS(2) LBS_DOTS(3) LBS_DOTS(4) LBS_DOTS(5),
            LBS_OUT(0) LBS_C LBS_OUT(1) LBS_C LBS_OUT(2) LBS_C LBS_OUT(3) LBS_C LBS_OUT(4) LBS_C LBS_OUT(5),
            LBS_ADD(0); LBS_ADD(1); LBS_ADD(2); LBS_ADD(3); LBS_ADD(4); LBS_ADD(5))
#undef LBS_C
#undef LBS_TILE_FN
#undef LBS_ADD
#undef LBS_ADD1
#undef LBS_OUT
#undef LBS_DOTS
#undef LBS_ZERO
#undef LBS_DECL
#endif

/* acc[r][0..NR) = sum_k xt[r, k] * w[panel channel, k] for the first MR rows of one activation tile (raw, shift
   included) over Kp input channels (one K block), added to acc; xt: the tile at the block (groups of
   LBS_MR x 4 bytes), wp: the panel at the block. */
static inline __attribute__((always_inline)) void lbs_tile(const uint8_t* restrict xt, int64_t Kp,
                                                           const int8_t* restrict wp, const int MR,
                                                           int32_t* restrict acc) {
#if LBS_ZMM && LBS_ASM
    /* 6 rows x 64 channels = 24 zmm accumulators in registers (gcc spills them when written in C); per 4 input
       channels: 4 weight lines, one broadcast per row, 4 vpdpbusd per row. Kp > 0 (a multiple of 4). A last tile
       of M has only MR rows computed (lbs_tile_r<MR>). */
    switch (MR) {
        case 6: lbs_tile_r6(xt, Kp, wp, acc); break;
        case 5: lbs_tile_r5(xt, Kp, wp, acc); break;
        case 4: lbs_tile_r4(xt, Kp, wp, acc); break;
        case 3: lbs_tile_r3(xt, Kp, wp, acc); break;
        case 2: lbs_tile_r2(xt, Kp, wp, acc); break;
        default: lbs_tile_r1(xt, Kp, wp, acc); break;
    }
#elif LBS_ZMM
    (void)MR; /* always the whole tile: rows past M hold zero codes (lbs_pad_rows) and are never stored */
    __m512i c[LBS_MR][LBS_NV];
    for (int r = 0; r < LBS_MR; ++r)
        for (int v = 0; v < LBS_NV; ++v) c[r][v] = _mm512_setzero_si512();
    for (int64_t k = 0; k < Kp; k += 4) {
        __m512i wv[LBS_NV];
        for (int v = 0; v < LBS_NV; ++v) wv[v] = _mm512_loadu_si512((const void*)(wp + k * LBS_NR + 64 * v));
        for (int r = 0; r < LBS_MR; ++r) {
            int32_t xv;
            memcpy(&xv, xt + k * LBS_MR + r * 4, 4);
            const __m512i xb = _mm512_set1_epi32(xv);
            for (int v = 0; v < LBS_NV; ++v) c[r][v] = _mm512_dpbusd_epi32(c[r][v], xb, wv[v]);
        }
    }
    for (int r = 0; r < LBS_MR; ++r)
        for (int v = 0; v < LBS_NV; ++v) {
            int32_t* p = acc + r * LBS_NR + 16 * v;
            _mm512_storeu_si512((void*)p, _mm512_add_epi32(_mm512_loadu_si512((const void*)p), c[r][v]));
        }
#elif LB_VNNI
    __m256i c0[LBS_MR], c1[LBS_MR];
    for (int r = 0; r < MR; ++r) {
        c0[r] = _mm256_loadu_si256((const __m256i*)(acc + r * LBS_NR));
        c1[r] = _mm256_loadu_si256((const __m256i*)(acc + r * LBS_NR + 8));
    }
    for (int64_t k = 0; k < Kp; k += 4) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i*)(wp + k * LBS_NR));
        const __m256i w1 = _mm256_loadu_si256((const __m256i*)(wp + k * LBS_NR + 32));
        for (int r = 0; r < MR; ++r) {
            int32_t xv;
            memcpy(&xv, xt + k * LBS_MR + r * 4, 4);
            const __m256i xb = _mm256_set1_epi32(xv);
            c0[r] = LB_DPBUSD(c0[r], xb, w0);
            c1[r] = LB_DPBUSD(c1[r], xb, w1);
        }
    }
    for (int r = 0; r < MR; ++r) {
        _mm256_storeu_si256((__m256i*)(acc + r * LBS_NR), c0[r]);
        _mm256_storeu_si256((__m256i*)(acc + r * LBS_NR + 8), c1[r]);
    }
#elif LB_AVX2
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i c0[LBS_MR], c1[LBS_MR];
    for (int r = 0; r < MR; ++r) {
        c0[r] = _mm256_loadu_si256((const __m256i*)(acc + r * LBS_NR));
        c1[r] = _mm256_loadu_si256((const __m256i*)(acc + r * LBS_NR + 8));
    }
    for (int64_t k = 0; k < Kp; k += 4) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i*)(wp + k * LBS_NR));
        const __m256i w1 = _mm256_loadu_si256((const __m256i*)(wp + k * LBS_NR + 32));
        for (int r = 0; r < MR; ++r) {
            int32_t xv;
            memcpy(&xv, xt + k * LBS_MR + r * 4, 4);
            const __m256i xb = _mm256_set1_epi32(xv), ax = _mm256_abs_epi8(xb);
            c0[r] = _mm256_add_epi32(c0[r], _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(w0, xb)), ones));
            c1[r] = _mm256_add_epi32(c1[r], _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(w1, xb)), ones));
        }
    }
    for (int r = 0; r < MR; ++r) {
        _mm256_storeu_si256((__m256i*)(acc + r * LBS_NR), c0[r]);
        _mm256_storeu_si256((__m256i*)(acc + r * LBS_NR + 8), c1[r]);
    }
#else
    for (int r = 0; r < MR; ++r) {
        int32_t* ar = acc + r * LBS_NR;
        const int8_t* xr = (const int8_t*)(xt + r * 4); /* shift 0: the codes are s8 */
        for (int64_t k = 0; k < Kp; k += 4)
            for (int n = 0; n < LBS_NR; ++n)
                for (int j = 0; j < 4; ++j) ar[n] += (int32_t)xr[k * LBS_MR + j] * wp[k * LBS_NR + n * 4 + j];
    }
#endif
}

/* The epilogue's activation: act 1 ReLU, 2 ReLU6, 3 hard-swish (torch's x * relu6(x + 3) / 6), else none; NaN
   stays NaN. */
static inline float lbs_act(float v, int act) {
    if (act == 1) return !(v > 0.f) && v == v ? 0.f : v;
    if (act == 2) return v < 0.f ? 0.f : v > 6.f ? 6.f : v;
    if (act == 3) {
        float t = v + 3.f;
        t = t < 0.f ? 0.f : t > 6.f ? 6.f : t;
        return v * t / 6.f;
    }
    return v;
}

/* y[r, n] = act((acc - shift * wsum[n]) * scale[n] + bias[n]) for mr rows x nn (<= NR) columns, act = `relu`
   (0 none, 1 ReLU, 2 ReLU6, 3 hard-swish: lbs_act); y addressed with strides ldm (rows) and ldn (columns). */
static const float lbs_zeros[LBS_NR]; /* the bias of a layer without one */

/* One row of the epilogue into out[0..nn): one loop per act, each vectorizes. */
static inline void lbs_epi_row(const int32_t* restrict ar, const int32_t* restrict wsum, const float* restrict scale,
                               const float* restrict bias, int act, int64_t nn, float* restrict out) {
    if (act == 0) {
        for (int64_t j = 0; j < nn; ++j) out[j] = (float)(ar[j] - LBS_SHIFT * wsum[j]) * scale[j] + bias[j];
    } else if (act == 1) {
        for (int64_t j = 0; j < nn; ++j) {
            const float v = (float)(ar[j] - LBS_SHIFT * wsum[j]) * scale[j] + bias[j];
            out[j] = v > 0.f || v != v ? v : 0.f; /* NaN stays NaN */
        }
    } else if (act == 2) {
        for (int64_t j = 0; j < nn; ++j) {
            const float v = (float)(ar[j] - LBS_SHIFT * wsum[j]) * scale[j] + bias[j];
            out[j] = v < 0.f ? 0.f : v > 6.f ? 6.f : v;
        }
    } else {
        for (int64_t j = 0; j < nn; ++j)
            out[j] = lbs_act((float)(ar[j] - LBS_SHIFT * wsum[j]) * scale[j] + bias[j], act);
    }
}

static void lbs_epilogue(const int32_t* acc, int64_t mr, int64_t nn, const int32_t* wsum, const float* scale,
                         const float* bias, int relu, float* y, int64_t ldm, int64_t ldn) {
    for (int64_t r = 0; r < mr; ++r) {
        float z[LBS_NR];
        float* yr = y + r * ldm;
        lbs_epi_row(acc + r * LBS_NR, wsum, scale, bias ? bias : lbs_zeros, relu, nn, ldn == 1 ? yr : z);
        if (ldn != 1)
            for (int64_t j = 0; j < nn; ++j) yr[j * ldn] = z[j];
    }
}

#define LBS_TILE(MR) lbs_tile(xt + m0 * Kp + k0 * LBS_MR, kn, wp + k0 * LBS_NR, MR, cbuf + (m0 - mc) * LBS_NR)
#ifndef LBS_MC
/* rows per activation chunk (a multiple of MR): the weights stream from memory once per chunk; the int32 partial
   sums of a chunk x one panel (cbuf, on the stack) stay within 128 KB */
#define LBS_MC (32768 / LBS_NR / LBS_MR * LBS_MR)
#endif

/* y = epilogue(x @ w.T): xt (tiled, M rows of Kp codes) from lb_static_quant / lb_static_im2col; w packed (Np / NR
   panels of Kp * NR bytes, Np = N rounded up to NR); wsum int32 (Np); scale = a * s fp32 (Np); bias fp32 (Np) or
   NULL; relu: the act of lbs_act (1: ReLU); y[m * ldm + n * ldn] fp32. Activations are walked in chunks of MC
   rows (the weights are read from memory once per chunk), panels split over threads; within a panel, K blocks of KC (in L1) x every row tile of the chunk,
   int32 partial sums in cbuf. */
void lb_static_gemm(const uint8_t* xt, int64_t M, int64_t Kp, const int8_t* w, const int32_t* wsum,
                    const float* scale, const float* bias, int64_t N, int relu, float* y, int64_t ldm, int64_t ldn,
                    int nt) {
    const int64_t np = (N + LBS_NR - 1) / LBS_NR;
    for (int64_t mc = 0; mc < M; mc += LBS_MC) {
        const int64_t mc_end = lb_min(mc + LBS_MC, M);
        #pragma omp parallel for num_threads(nt) schedule(static) if (np > 1 && (mc_end - mc) * N * Kp > 65536)
        for (int64_t p = 0; p < np; ++p) {
            const int8_t* wp = w + p * Kp * LBS_NR;
            const int64_t n0 = p * LBS_NR, nn = lb_min(LBS_NR, N - n0);
            if (Kp <= LBS_KC) { /* one K block: each tile's sums go straight to the epilogue (no cbuf pass) */
                for (int64_t m0 = mc; m0 < mc_end; m0 += LBS_MR) {
                    int32_t tacc[LBS_MR * LBS_NR] __attribute__((aligned(64)));
                    const int64_t mr = lb_min(LBS_MR, mc_end - m0);
                    memset(tacc, 0, sizeof(tacc));
#if LBS_ZMM && !LBS_ASM
                    lbs_tile(xt + m0 * Kp, Kp, wp, LBS_MR, tacc);
#else
                    lbs_tile(xt + m0 * Kp, Kp, wp, (int)mr, tacc);
#endif
                    lbs_epilogue(tacc, mr, nn, wsum + n0, scale + n0, bias ? bias + n0 : NULL, relu,
                                 y + m0 * ldm + n0 * ldn, ldm, ldn);
                }
                continue;
            }
            int32_t cbuf[LBS_MC * LBS_NR]; /* the rows of this chunk's tiles only are used (and cleared) */
            memset(cbuf, 0, (size_t)((mc_end - mc + LBS_MR - 1) / LBS_MR * LBS_MR * LBS_NR) * sizeof(int32_t));
            for (int64_t k0 = 0; k0 < Kp; k0 += LBS_KC) {
                const int64_t kn = lb_min(LBS_KC, Kp - k0);
                for (int64_t m0 = mc; m0 < mc_end; m0 += LBS_MR) {
#if LBS_ZMM && !LBS_ASM
                    LBS_TILE(LBS_MR); /* whole tiles: rows past M hold zero codes and are never stored */
#else
                    switch (lb_min(LBS_MR, mc_end - m0)) {
                        case 6: LBS_TILE(6); break;
                        case 5: LBS_TILE(5); break;
                        case 4: LBS_TILE(4); break;
                        case 3: LBS_TILE(3); break;
                        case 2: LBS_TILE(2); break;
                        default: LBS_TILE(1); break;
                    }
#endif
                }
            }
            for (int64_t m0 = mc; m0 < mc_end; m0 += LBS_MR)
                lbs_epilogue(cbuf + (m0 - mc) * LBS_NR, lb_min(LBS_MR, mc_end - m0), nn, wsum + n0, scale + n0,
                             bias ? bias + n0 : NULL, relu, y + m0 * ldm + n0 * ldn, ldm, ldn);
        }
    }
}
#undef LBS_TILE
