/* lowbit native CPU kernels, part 5: fp32 activations (precision High), on the packed codes of either container.
   Included once by lowbit_cpu.c after lowbit_cpu_rows.h (relies on its helpers and `lb_min`); AVX2 (all x86
   variants), NEON and plain C.

   Each weight sub-block of 32 codes is dequantized in registers, w = q * s_b - (s_b * z_b) (one fused multiply-add
   per 8 or 4 codes: the rounding of (q - z) * s in fp32, up to one ulp), and multiplied into fp32 accumulators for up
   to 4 activation rows: no int8 rounding of activations, the error is fp32 summation's. lb_dequant writes the same
   w for a range of weight rows, for the caller's blocked GEMM at larger M (a tile at a time, never the whole
   weight). Activations x are fp32 (M, Kp), zero past K (padding codes then contribute 0 * w). */

#if LB_AVX2
/* The 32 codes of sub-block j as bytes, in order. */
static inline __m256i f32_codes(const uint8_t* wr, int64_t j, const int BITS) {
    return BITS == 4 ? load_q4(wr, j) : _mm256_loadu_si256((const __m256i*)(wr + j * 32));
}

/* The 8 codes in the low 8 bytes of c, dequantized: q * s - sz. */
static inline __m256 f32_w8(__m128i c, __m256 s, __m256 sz) {
    return _mm256_fmsub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c)), s, sz);
}

/* out[r] = sum_k w[k] * x[r, k] for one weight row and MR activation rows. Accumulator chains: 4 for one row, 2 per
   row otherwise (fma latency, not throughput, would bound a single chain). */
static inline __attribute__((always_inline)) void f32_row(
        const uint8_t* wr, const float* ws, const float* wsz, int64_t nsb, int64_t gsb, int64_t nb,
        const float* x, int64_t Kp, const int MR, const int BITS, float* out) {
    const int C = MR == 1 ? 4 : 2;
    __m256 facc[8];
    for (int i = 0; i < 8; ++i) facc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const __m256 s = _mm256_broadcast_ss(ws + b), sz = _mm256_broadcast_ss(wsz + b);
        for (int64_t j = b * gsb, j1 = lb_min((b + 1) * gsb, nsb); j < j1; ++j) {
            const __m256i v = f32_codes(wr, j, BITS);
            const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
            const __m128i c[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
            for (int g = 0; g < 4; ++g) {
                const __m256 w = f32_w8(c[g], s, sz);
                for (int r = 0; r < MR; ++r)
                    facc[r * C + g % C] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + r * Kp + j * 32 + 8 * g),
                                                          facc[r * C + g % C]);
            }
        }
    }
    __m256 rows[4];
    for (int r = 0; r < MR; ++r) {
        rows[r] = _mm256_add_ps(facc[r * C], facc[r * C + 1]);
        if (C == 4) rows[r] = _mm256_add_ps(rows[r], _mm256_add_ps(facc[2], facc[3]));
    }
    hsum_rows(rows, MR, out);
}

/* out[0, n) = the dequantized codes [k0, k0 + n) of one weight row (n <= 32, within one sub-block). */
static inline void f32_dequant_sub(const uint8_t* wr, int64_t j, float s, float sz, float* out, int64_t n,
                                   const int BITS) {
    const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(sz);
    const __m256i v = f32_codes(wr, j, BITS);
    const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
    const __m128i c[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    if (n == 32) {
        for (int g = 0; g < 4; ++g) _mm256_storeu_ps(out + 8 * g, f32_w8(c[g], vs, vz));
        return;
    }
    float t[32];
    for (int g = 0; g < 4; ++g) _mm256_storeu_ps(t + 8 * g, f32_w8(c[g], vs, vz));
    memcpy(out, t, sizeof(float) * (size_t)n);
}
#elif LB_NEON
/* The 16 codes in c (bytes) dequantized into w[0..4): q * s - sz. */
static inline void neon_w16(uint8x16_t c, float32x4_t s, float32x4_t nsz, float32x4_t* w) {
    const uint16x8_t l = vmovl_u8(vget_low_u8(c)), h = vmovl_high_u8(c);
    w[0] = vfmaq_f32(nsz, vcvtq_f32_u32(vmovl_u16(vget_low_u16(l))), s);
    w[1] = vfmaq_f32(nsz, vcvtq_f32_u32(vmovl_high_u16(l)), s);
    w[2] = vfmaq_f32(nsz, vcvtq_f32_u32(vmovl_u16(vget_low_u16(h))), s);
    w[3] = vfmaq_f32(nsz, vcvtq_f32_u32(vmovl_high_u16(h)), s);
}

/* The 32 dequantized codes of sub-block j into w[0..8). */
static inline void neon_f32_sub(const uint8_t* wr, int64_t j, float s, float sz, const int BITS, float32x4_t* w) {
    const float32x4_t vs = vdupq_n_f32(s), nsz = vdupq_n_f32(-sz);
    if (BITS == 4) {
        const int8x16x2_t c = neon_q4_sub(wr, j);
        neon_w16(vreinterpretq_u8_s8(c.val[0]), vs, nsz, w);
        neon_w16(vreinterpretq_u8_s8(c.val[1]), vs, nsz, w + 4);
    } else {
        neon_w16(vld1q_u8(wr + j * 32), vs, nsz, w);
        neon_w16(vld1q_u8(wr + j * 32 + 16), vs, nsz, w + 4);
    }
}

static inline __attribute__((always_inline)) void f32_row(
        const uint8_t* wr, const float* ws, const float* wsz, int64_t nsb, int64_t gsb, int64_t nb,
        const float* x, int64_t Kp, const int MR, const int BITS, float* out) {
    float32x4_t facc[8];
    for (int i = 0; i < 8; ++i) facc[i] = vdupq_n_f32(0.f);
    for (int64_t b = 0; b < nb; ++b)
        for (int64_t j = b * gsb, j1 = lb_min((b + 1) * gsb, nsb); j < j1; ++j) {
            float32x4_t w[8];
            neon_f32_sub(wr, j, ws[b], wsz[b], BITS, w);
            for (int g = 0; g < 8; ++g)
                for (int r = 0; r < MR; ++r)
                    facc[2 * r + (g & 1)] = vfmaq_f32(facc[2 * r + (g & 1)], w[g],
                                                      vld1q_f32(x + r * Kp + j * 32 + 4 * g));
        }
    for (int r = 0; r < MR; ++r) out[r] = vaddvq_f32(vaddq_f32(facc[2 * r], facc[2 * r + 1]));
}

static inline void f32_dequant_sub(const uint8_t* wr, int64_t j, float s, float sz, float* out, int64_t n,
                                   const int BITS) {
    float32x4_t w[8];
    float t[32];
    neon_f32_sub(wr, j, s, sz, BITS, w);
    for (int g = 0; g < 8; ++g) vst1q_f32(t + 4 * g, w[g]);
    memcpy(out, t, sizeof(float) * (size_t)n);
}
#else
static inline int f32_code(const uint8_t* wr, int64_t k, const int BITS) {
    return BITS == 4 ? (wr[(k / 64) * 32 + k % 32] >> (k % 64 < 32 ? 0 : 4)) & 15 : wr[k];
}

static inline void f32_row(const uint8_t* wr, const float* ws, const float* wsz, int64_t nsb, int64_t gsb, int64_t nb,
                           const float* x, int64_t Kp, const int MR, const int BITS, float* out) {
    for (int r = 0; r < MR; ++r) {
        float acc = 0.f;
        for (int64_t b = 0; b < nb; ++b)
            for (int64_t k = b * gsb * 32, k1 = lb_min((b + 1) * gsb, nsb) * 32; k < k1; ++k)
                acc += fmaf((float)f32_code(wr, k, BITS), ws[b], -wsz[b]) * x[r * Kp + k];
        out[r] = acc;
    }
}

static inline void f32_dequant_sub(const uint8_t* wr, int64_t j, float s, float sz, float* out, int64_t n,
                                   const int BITS) {
    for (int64_t i = 0; i < n; ++i) out[i] = fmaf((float)f32_code(wr, j * 32 + i, BITS), s, -sz);
}
#endif

#define LB_F32_ROWS(BITS)                                                                               \
    switch (mr) {                                                                                       \
        case 4: f32_row(wr, sr, zr, nsb, gsb, nb, xr, Kp, 4, BITS, out); break;                         \
        case 3: f32_row(wr, sr, zr, nsb, gsb, nb, xr, Kp, 3, BITS, out); break;                         \
        case 2: f32_row(wr, sr, zr, nsb, gsb, nb, xr, Kp, 2, BITS, out); break;                         \
        default: f32_row(wr, sr, zr, nsb, gsb, nb, xr, Kp, 1, BITS, out); break;                        \
    }

/* y (M, N) = x @ dequant(w).T + bias with fp32 x (M, Kp, zero past K); w packed by pack_q4 (bits 4) or pack_q8
   (bits 8); ws, wsz (N, nb); gsb sub-blocks of 32 per weight block. Tasks of 16 weight rows, each walking all of
   M 4 rows at a time (the task's weight rows stay in L1/L2 while the activations stream). */
void lb_gemm_f32(const uint8_t* w, const float* ws, const float* wsz, int64_t N, int64_t Kp, int64_t gsb, int64_t nb,
                 const float* x, int64_t M, const float* bias, float* y, int nt, int bits) {
    const int64_t nsb = Kp / 32, row_bytes = Kp * (bits == 4 ? 4 : 8) / 8, ntask = (N + 15) / 16;
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < ntask; ++t) {
        const int64_t n1 = lb_min(t * 16 + 16, N);
        for (int64_t m0 = 0; m0 < M; m0 += 4) {
            const int64_t mr = lb_min(4, M - m0);
            const float* xr = x + m0 * Kp;
            for (int64_t n = t * 16; n < n1; ++n) {
                const uint8_t* wr = w + n * row_bytes;
                const float *sr = ws + n * nb, *zr = wsz + n * nb;
                float out[4];
                if (bits == 4) { LB_F32_ROWS(4) } else { LB_F32_ROWS(8) }
                for (int64_t r = 0; r < mr; ++r) y[(m0 + r) * N + n] = out[r] + (bias ? bias[n] : 0.f);
            }
        }
    }
}

/* out (n1 - n0, K) fp32 = the dequantized weight rows [n0, n1) (arguments as lb_gemm_f32). */
void lb_dequant(const uint8_t* w, const float* ws, const float* wsz, int64_t n0, int64_t n1, int64_t K, int64_t Kp,
                int64_t gsb, int64_t nb, float* out, int nt, int bits) {
    const int64_t row_bytes = Kp * (bits == 4 ? 4 : 8) / 8, gk = gsb * 32;
    #pragma omp parallel for num_threads(nt) schedule(static) if ((n1 - n0) * K > 65536)
    for (int64_t n = n0; n < n1; ++n) {
        const uint8_t* wr = w + n * row_bytes;
        float* o = out + (n - n0) * K;
        for (int64_t k = 0; k < K; k += 32) {
            const int64_t b = k / gk;
            if (bits == 4) f32_dequant_sub(wr, k / 32, ws[n * nb + b], wsz[n * nb + b], o + k, lb_min(32, K - k), 4);
            else f32_dequant_sub(wr, k / 32, ws[n * nb + b], wsz[n * nb + b], o + k, lb_min(32, K - k), 8);
        }
    }
}
