/* lowbit native CPU kernels, part 5 (AVX2 without VNNI): the register-tiled GEMM for M >= LB_TILE_MIN_M, both
   containers. Included once by lowbit_cpu.c after lowbit_cpu_rows.h (relies on `q4_unit`, `lb_min`).

   The AVX2 form of lowbit_cpu_tile512.h. Outputs lie across lanes: a tile of T2N = 16 weight rows is transposed,
   one chunk of T2KC codes at a time, into a buffer where one 32-bit group of codes of the 16 rows fills two 8-lane
   vectors; each activation row broadcasts one group and a micro-tile of 4 rows x 16 outputs accumulates in 8
   registers. The activations are re-laid chunk by chunk once per call. 8-bit codes may come pre-tiled
   (`lb_gemm_q8t`: per tile, groups of 2 u8 codes of the 16 rows, scales across lanes, made once at load): a chunk
   is then only widened to int16 into the buffer, no transpose.
   8-bit codes: vpmaddubsw would saturate on u8 codes x s8 activations (2 * 255 * 127 > 32767; fbgemm avoids it by
   cutting activations to 7 bits), so groups are 2 codes widened to int16 (activations likewise) and vpmaddwd + vpaddd
   add 16 products per lane pair; one convert + fma per (row, block piece: a chunk per channel, 32 codes at
   precision Normal). The row kernels load 9 vectors per 128 products where this loads 2 + 4 broadcasts (their load
   ports bounded them at ~0.55x fbgemm's AVX2 kernel at M >= 32; this: ~0.7-0.75x; the bound is vpmaddwd, one
   multiply per 16 products where fbgemm's 7-bit vpmaddubsw takes 32).
   4-bit codes: groups of 4 u8 codes, vpmaddubsw + vpaddw into int16 for 32 codes (8 * 2 * 15 * 127 < 32767), then
   vpmaddwd with ones, one convert and one fma per (row, 8 outputs, 32 codes) at every precision: the per-32
   activation scales of precision Normal cost what the per-row scale costs (the row kernels: 1.6x). */

#define LB_T2N 16
#define LB_T2KC 512 /* codes per chunk: the buffer is 16 rows x 512 codes x 2 bytes = 16 KiB (measured at
                            M 32 / 128: 256 1.10x / 1.12x slower, 1024 about the same) */
#define LB_T2MR 4
#ifndef LB_T2_PF8
#define LB_T2_PF8 3 /* 8-bit: prefetch the chunk this many ahead (0: none; 2048 x 5632, M 8 / 32: 3.04 -> 2.17,
                       7.13 -> 6.41 ms) */
#endif
#ifndef LB_T2_UNROLL
#define LB_T2_UNROLL 4 /* the 8-bit group loop unrolled: 3% faster at M 32 / 128 (4096 x 4096; its loop overhead
                          was 3 of ~25 uops per step) */
#endif
#define LB_PRAGMA(x) _Pragma(#x)
#define LB_UNROLL(n) LB_PRAGMA(GCC unroll n)

/* acc += madd(w, a) in place: with the intrinsics gcc copies every accumulator each step and spills one to the
   stack (a store-to-load chain per step: 2.7x slower, measured). */
static inline __m256i lb_madd_acc(__m256i acc, __m256i w, __m256i a) {
    __m256i t;
    __asm__("vpmaddwd %2, %3, %1\n\tvpaddd %1, %0, %0" : "+x"(acc), "=&x"(t) : "x"(w), "x"(a));
    return acc;
}

/* In-place 8 x 8 transpose of 32-bit elements. */
static inline void lb_transpose8(__m256i* r) {
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int j = 0; j < 4; ++j) {
        r[j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x20);
        r[4 + j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x31);
    }
}

/* buf[g * 16 + i] (32-bit) = tile row i's codes 2g, 2g + 1 as two int16 (BITS 8: pack_q8 bytes) or 4g..4g + 3 as
   four u8 (BITS 4: pack_q4 nibbles), for the chunk [c0, c1) (multiples of 64); rows >= nn are zero. */
static void lb_t2_pack(const uint8_t* w, int64_t row_bytes, int64_t nn, int64_t c0, int64_t c1, uint32_t* buf,
                       const int BITS) {
    for (int64_t k = c0; k < c1; k += BITS == 8 ? 16 : 64) {
        for (int h = 0; h < 2; ++h) {
            __m256i r[8], s[8];
            for (int i = 0; i < 8; ++i) {
                const uint8_t* wr = w + (h * 8 + i) * row_bytes;
                if (h * 8 + i >= nn) {
                    r[i] = s[i] = _mm256_setzero_si256();
                } else if (BITS == 8) {
                    r[i] = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(wr + k)));
                    s[i] = _mm256_setzero_si256(); /* unused */
                } else {
                    q4_unit(wr + k / 2, &r[i], &s[i]); /* codes k..k+31, k+32..k+63 */
                }
            }
            lb_transpose8(r);
            uint32_t* dst = buf + (k - c0) / (BITS == 8 ? 2 : 4) * LB_T2N + h * 8;
            for (int g = 0; g < 8; ++g) _mm256_storeu_si256((__m256i*)(dst + g * LB_T2N), r[g]);
            if (BITS == 4) {
                lb_transpose8(s);
                for (int g = 0; g < 8; ++g) _mm256_storeu_si256((__m256i*)(dst + (8 + g) * LB_T2N), s[g]);
            }
        }
    }
}

/* buf (int16) = the pre-tiled u8 codes src of one chunk of kc codes (16 rows x kc, see lb_gemm_q8t), widened. */
static void lb_t2_widen(const uint8_t* src, int64_t kc, uint32_t* buf) {
    for (int64_t i = 0; i < kc * LB_T2N; i += 16)
        _mm256_storeu_si256((__m256i*)((int16_t*)buf + i), _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(src + i))));
}

/* acc (int16) += maddubs(w u8, a s8) in place (see lb_madd_acc). */
static inline __m256i lb_maddubs_acc(__m256i acc, __m256i w, __m256i a) {
    __m256i t;
    __asm__("vpmaddubsw %3, %2, %1\n\tvpaddw %1, %0, %0" : "+x"(acc), "=&x"(t) : "x"(w), "x"(a));
    return acc;
}

/* The 4-bit form of lb_t2_rows: 32 codes at a time (8 steps of maddubs, u8 codes <= 15 x s8 activations: int16
   lanes hold 8 * 2 * 15 * 127 < 32767), widened by madd with ones and converted once per (row, 8 outputs, 32
   codes), then one fma with the combined scale s_b * d (d per 32 codes, per block or per row alike). */
static inline __attribute__((always_inline)) void lb_t2_rows4(
        const uint32_t* buf, int64_t c0, int64_t c1, int64_t gk, int64_t nb, const float* wst, const float* wzt,
        const int8_t* xa, int64_t xstride, const float* xd, int64_t dstride, int sub, const float* xs, float* f,
        const int MR) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t s0 = c0; s0 < c1;) {
        const int64_t b = s0 / gk, s1 = lb_min(c1, (b + 1) * gk);
        if (b >= nb) break;
        const float* sb = wst + b * LB_T2N;
        const float* zb = wzt + b * LB_T2N;
        for (int64_t q0 = s0; q0 < s1; q0 += 32) {
            __m256i acc[2 * LB_T2MR];
            for (int i = 0; i < 2 * MR; ++i) acc[i] = _mm256_setzero_si256();
            const uint32_t* bp = buf + (q0 - c0) / 4 * LB_T2N;
            const int8_t* xp = xa + (q0 - c0);
            for (int g = 0; g < 8; ++g) {
                const __m256i w0 = _mm256_loadu_si256((const __m256i*)(bp + g * LB_T2N));
                const __m256i w1 = _mm256_loadu_si256((const __m256i*)(bp + g * LB_T2N + 8));
                for (int r = 0; r < MR; ++r) {
                    int32_t a4;
                    memcpy(&a4, xp + r * xstride + g * 4, 4);
                    const __m256i a = _mm256_set1_epi32(a4);
                    acc[2 * r] = lb_maddubs_acc(acc[2 * r], w0, a);
                    acc[2 * r + 1] = lb_maddubs_acc(acc[2 * r + 1], w1, a);
                }
            }
            for (int r = 0; r < MR; ++r) {
                const __m256 d = _mm256_set1_ps(xd[r * dstride + (sub ? q0 / 32 : b)]);
                for (int h = 0; h < 2; ++h) {
                    const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(acc[2 * r + h], ones));
                    __m256 fv = _mm256_loadu_ps(f + r * LB_T2N + 8 * h);
                    fv = _mm256_fmadd_ps(p, _mm256_mul_ps(_mm256_loadu_ps(sb + 8 * h), d), fv);
                    if (q0 == b * gk)
                        fv = _mm256_fnmadd_ps(_mm256_set1_ps(xs[r * nb + b]), _mm256_loadu_ps(zb + 8 * h), fv);
                    _mm256_storeu_ps(f + r * LB_T2N + 8 * h, fv);
                }
            }
        }
        s0 = s1;
    }
}

/* MR activation rows x the 16 tile rows over the chunk [c0, c1): f[r * 16 + j] += sum over the chunk's blocks of
   s_b * d_rb * idot_rb - (blocks starting here) xs_rb * wsz_b. xa: row r's code k (int16) at xa[r * xstride + k];
   wst, wzt: the tile's ws and wsz across lanes (16 per block); sub: activation scales per 32 codes. */
static inline __attribute__((always_inline)) void lb_t2_rows(
        const uint32_t* buf, int64_t c0, int64_t c1, int64_t gk, int64_t nb, const float* wst, const float* wzt,
        const int16_t* xa, int64_t xstride, const float* xd, int64_t dstride, int sub, const float* xs, float* f,
        const int MR) {
    for (int64_t s0 = c0; s0 < c1;) {
        const int64_t b = s0 / gk, s1 = lb_min(lb_min(c1, (b + 1) * gk), sub ? s0 + 32 : c1);
        if (b >= nb) break; /* codes past the last block: zero activations */
        __m256i acc[2 * LB_T2MR];
        for (int i = 0; i < 2 * MR; ++i) acc[i] = _mm256_setzero_si256();
        const uint32_t* bp = buf + (s0 - c0) / 2 * LB_T2N;
        const int16_t* xp = xa + (s0 - c0);
        LB_UNROLL(LB_T2_UNROLL)
        for (int64_t g = 0; g < (s1 - s0) / 2; ++g) {
            const __m256i w0 = _mm256_loadu_si256((const __m256i*)(bp + g * LB_T2N));
            const __m256i w1 = _mm256_loadu_si256((const __m256i*)(bp + g * LB_T2N + 8));
            for (int r = 0; r < MR; ++r) {
                int32_t a2;
                memcpy(&a2, xp + r * xstride + g * 2, 4);
                const __m256i a = _mm256_set1_epi32(a2);
                acc[2 * r] = lb_madd_acc(acc[2 * r], w0, a);
                acc[2 * r + 1] = lb_madd_acc(acc[2 * r + 1], w1, a);
            }
        }
        const float* sb = wst + b * LB_T2N;
        const float* zb = wzt + b * LB_T2N;
        for (int r = 0; r < MR; ++r) {
            const __m256 d = _mm256_set1_ps(xd[r * dstride + (sub ? s0 / 32 : b)]);
            for (int h = 0; h < 2; ++h) {
                __m256 fv = _mm256_loadu_ps(f + r * LB_T2N + 8 * h);
                fv = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[2 * r + h]), _mm256_mul_ps(_mm256_loadu_ps(sb + 8 * h), d),
                                     fv);
                if (s0 == b * gk)
                    fv = _mm256_fnmadd_ps(_mm256_set1_ps(xs[r * nb + b]), _mm256_loadu_ps(zb + 8 * h), fv);
                _mm256_storeu_ps(f + r * LB_T2N + 8 * h, fv);
            }
        }
        s0 = s1;
    }
}

/* dst[(t * nb + b) * 16 + j] = src[(16t + j) * nb + b] (0 for rows >= N): per-block scales across lanes. */
static void lb_t2_scales(const float* src, int64_t N, int64_t nb, float* dst) {
    const int64_t nt = (N + LB_T2N - 1) / LB_T2N;
    for (int64_t t = 0; t < nt; ++t)
        for (int64_t j = 0; j < LB_T2N; ++j) {
            const int64_t n = t * LB_T2N + j;
            for (int64_t b = 0; b < nb; ++b) dst[(t * nb + b) * LB_T2N + j] = n < N ? src[n * nb + b] : 0.f;
        }
}

/* The tiled 8-bit GEMM (arguments as gemm_tiles; sub: activation scales per 32 codes). Tasks are tiles of 16 weight
   rows; each walks K in chunks and, per chunk, all M activation rows 4 at a time; y carries the fp32 sums from one
   chunk to the next. The activations are widened to int16 and re-laid chunk by chunk (xc[c0 * M + m * kc + k]),
   once per call. Returns 0 when the scratch cannot be allocated (the caller then takes the row kernels). TILED
   (8-bit): w, ws and wsz are pre-tiled (lb_gemm_q8t's layout), else they are put across lanes here. */
static int gemm_tile256(const uint8_t* w, const float* ws, const float* wsz, int64_t N, int64_t Kp, int64_t gsb,
                        int64_t nb, const int8_t* xq, const float* xd, const float* xs, int64_t M, int sub,
                        const float* bias, float* y, int nt, const int BITS, const int TILED) {
    const int64_t ntile = (N + LB_T2N - 1) / LB_T2N, nst = ntile * LB_T2N * nb, gk = gsb * 32;
    const int64_t dstride = sub ? Kp / 32 : nb;
    const int64_t row_bytes = Kp * BITS / 8, xb = BITS == 8 ? 2 : 1; /* activation bytes per code */
    void* xc = malloc((size_t)(xb * M * Kp));
    float* wsT = TILED ? NULL : (float*)malloc(sizeof(float) * 2 * (size_t)nst);
    if (!xc || (!TILED && !wsT)) {
        free(xc);
        free(wsT);
        return 0;
    }
    if (!TILED) {
        lb_t2_scales(ws, N, nb, wsT);
        lb_t2_scales(wsz, N, nb, wsT + nst);
    }
    for (int64_t c0 = 0; c0 < Kp; c0 += LB_T2KC) {
        const int64_t kc = lb_min(LB_T2KC, Kp - c0);
        for (int64_t m = 0; m < M; ++m) {
            if (BITS == 4) {
                memcpy((int8_t*)xc + c0 * M + m * kc, xq + m * Kp + c0, (size_t)kc);
                continue;
            }
            for (int64_t k = 0; k < kc; k += 16)
                _mm256_storeu_si256((__m256i*)((int16_t*)xc + c0 * M + m * kc + k),
                                    _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(xq + m * Kp + c0 + k))));
        }
    }
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < ntile; ++t) {
        const int64_t n0 = t * LB_T2N, nn = lb_min(LB_T2N, N - n0);
        uint32_t buf[LB_T2KC / 2 * LB_T2N] __attribute__((aligned(32)));
        const float *wst = (TILED ? ws : wsT) + t * nb * LB_T2N, *wzt = (TILED ? wsz : wsT + nst) + t * nb * LB_T2N;
        for (int64_t m = 0; m < M; ++m) /* y starts as the bias */
            for (int64_t j = 0; j < nn; ++j) y[m * N + n0 + j] = bias ? bias[n0 + j] : 0.f;
        for (int64_t c0 = 0; c0 < Kp; c0 += LB_T2KC) {
            const int64_t c1 = lb_min(c0 + LB_T2KC, Kp);
            if (c0 / gk >= nb) break;
            if (TILED)
                lb_t2_widen(w + n0 * Kp + c0 * LB_T2N, c1 - c0, buf);
            else
                lb_t2_pack(w + n0 * row_bytes, row_bytes, nn, c0, c1, buf, BITS);
            /* 8-bit: the weight lines of the chunk LB_T2_PF8 ahead in this thread's walk (this tile's next chunks,
               then the next tile's), prefetched into L2 a share per micro-tile, as gemm_tile512 does */
            const int64_t nch = (lb_min(Kp, nb * gk) + LB_T2KC - 1) / LB_T2KC, vi = c0 / LB_T2KC + LB_T2_PF8;
            const int64_t tt = t + vi / nch, cc = vi % nch * LB_T2KC;
            const uint8_t* pw = !(BITS == 8 && LB_T2_PF8 && tt < ntile) ? NULL
                                : TILED ? w + tt * LB_T2N * Kp + cc * LB_T2N : w + tt * LB_T2N * row_bytes + cc;
            const int64_t lpr = lb_min(LB_T2KC, Kp - cc) / 64, nmt = (M + LB_T2MR - 1) / LB_T2MR;
            const int64_t plines = pw ? lb_min(LB_T2N, N - tt * LB_T2N) * lpr : 0;
            int64_t pl = 0, prw = 0, pcl = 0; /* lines issued; the next one's row and line in it */
            for (int64_t m = 0; m < M; m += LB_T2MR) {
                const int64_t mr = lb_min(LB_T2MR, M - m);
                for (const int64_t pe = plines * (m / LB_T2MR + 1) / nmt; pl < pe; ++pl) {
                    _mm_prefetch((const char*)(TILED ? pw + pl * 64 : pw + prw * row_bytes + pcl * 64), _MM_HINT_T1);
                    if (++pcl == lpr) {
                        pcl = 0;
                        ++prw;
                    }
                }
                float f[LB_T2MR * LB_T2N];
                if (nn == LB_T2N)
                    for (int64_t r = 0; r < mr; ++r) {
                        _mm256_storeu_ps(f + r * LB_T2N, _mm256_loadu_ps(y + (m + r) * N + n0));
                        _mm256_storeu_ps(f + r * LB_T2N + 8, _mm256_loadu_ps(y + (m + r) * N + n0 + 8));
                    }
                else
                    for (int64_t r = 0; r < mr; ++r)
                        for (int64_t j = 0; j < LB_T2N; ++j) f[r * LB_T2N + j] = j < nn ? y[(m + r) * N + n0 + j] : 0.f;
                const int64_t xo = c0 * M + m * (c1 - c0);
                const float *dr = xd + m * dstride, *sr = xs + m * nb;
#define LB_T2R(R)                                                                                                  \
    if (BITS == 8)                                                                                                 \
        lb_t2_rows(buf, c0, c1, gk, nb, wst, wzt, (const int16_t*)xc + xo, c1 - c0, dr, dstride, sub, sr, f, R);   \
    else                                                                                                           \
        lb_t2_rows4(buf, c0, c1, gk, nb, wst, wzt, (const int8_t*)xc + xo, c1 - c0, dr, dstride, sub, sr, f, R)
                switch (mr) {
                    case 4: LB_T2R(4); break;
                    case 3: LB_T2R(3); break;
                    case 2: LB_T2R(2); break;
                    default: LB_T2R(1); break;
                }
#undef LB_T2R
                if (nn == LB_T2N)
                    for (int64_t r = 0; r < mr; ++r) {
                        _mm256_storeu_ps(y + (m + r) * N + n0, _mm256_loadu_ps(f + r * LB_T2N));
                        _mm256_storeu_ps(y + (m + r) * N + n0 + 8, _mm256_loadu_ps(f + r * LB_T2N + 8));
                    }
                else
                    for (int64_t r = 0; r < mr; ++r)
                        for (int64_t j = 0; j < nn; ++j) y[(m + r) * N + n0 + j] = f[r * LB_T2N + j];
            }
        }
    }
    free(xc);
    free(wsT);
    return 1;
}
