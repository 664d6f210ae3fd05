/* lowbit native CPU kernels, part 3b: the static W8A8 pointwise (1x1, stride 1, groups 1) conv on NCHW, no im2col
   and no transpose (lowbit.kernels.cpu_static_int8.native_conv1x1_static is the Python side).

   Math per image (a = activation step, c = clamp, s[o] = weight scale, P = H * W pixels, Kp = C rounded up to 4):
       xq[k, p] = clamp(round_half_even(x[k, p] / a), -c, c)          (x: the image, (C, P) = NCHW as is)
       y[o, p]  = act(sum_k wq[o, k] * xq[k, p] * (a * s[o]) + bias[o])     act: 0 none, 1 ReLU, 2 ReLU6, 3 hard-swish
   The GEMM of lowbit_cpu_static.h with the roles swapped: the weight is the tiled "row" operand (MR output channels
   per tile, codes + shift, laid out once by `pack_static_pw`) and each panel of NR pixels of the image is quantized
   straight from NCHW into the "panel" operand (per 4 channels, NR x 4 bytes), so the output tile (MR channels x NR
   pixels) lands in NCHW rows directly. With VNNI the weight codes carry the +128 shift (the u8 operand); the kernel
   subtracts 128 * sum_k xq[k, p] per pixel. Included once after lowbit_cpu_static.h (lbs_tile, LBS_*). */

/* Pixels [p0, p0 + nn) of image x (C, P), nn <= NR, quantized into panel (Kp / 4 groups of NR x 4 s8 codes; pixels
   past nn and channels past C hold 0) and their code sums into xsum (NR); returns how many were NaN / inf. */
static int64_t lbs_pw_pack(const float* x, int64_t C, int64_t P, int64_t p0, int64_t nn, int64_t Kp, float a, float c,
                           int8_t* restrict panel, int32_t* restrict xsum) {
    int64_t bad = 0;
    memset(xsum, 0, LBS_NR * sizeof(int32_t));
    for (int64_t g = 0; g < Kp / 4; ++g) {
        int8_t* dst = panel + g * LBS_NR * 4;
        int64_t j = 0;
#if LB_AVX2
        if (4 * g + 4 <= C) {
            const __m256 va = _mm256_set1_ps(a), hi = _mm256_set1_ps(c), lo = _mm256_set1_ps(-c);
            const __m256 inf = _mm256_set1_ps(INFINITY), sgn = _mm256_set1_ps(-0.0f);
            const __m256i m8 = _mm256_set1_epi32(0xff);
            for (; j + 8 <= nn; j += 8) {
                __m256i word = _mm256_setzero_si256(), sum = _mm256_loadu_si256((const __m256i*)(xsum + j));
                for (int i = 0; i < 4; ++i) {
                    const __m256 xv = _mm256_loadu_ps(x + (4 * g + i) * P + p0 + j);
                    bad += __builtin_popcount((unsigned)_mm256_movemask_ps(
                        _mm256_cmp_ps(_mm256_andnot_ps(sgn, xv), inf, _CMP_NLT_UQ)));
                    __m256 v = _mm256_round_ps(_mm256_div_ps(xv, va), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                    const __m256i q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
                    sum = _mm256_add_epi32(sum, q);
                    word = _mm256_or_si256(word, _mm256_slli_epi32(_mm256_and_si256(q, m8), 8 * i));
                }
                _mm256_storeu_si256((__m256i*)(dst + 4 * j), word);
                _mm256_storeu_si256((__m256i*)(xsum + j), sum);
            }
        }
#endif
        for (; j < LBS_NR; ++j)
            for (int64_t i = 0; i < 4; ++i) {
                const int64_t k = 4 * g + i;
                int8_t q = 0;
                if (j < nn && k < C) {
                    const float v = x[k * P + p0 + j];
                    bad += !isfinite(v);
                    q = (int8_t)((int32_t)lbs_code(v, a, c) - LBS_SHIFT);
                }
                dst[4 * j + i] = q;
                xsum[j] += q;
            }
    }
    return bad;
}

/* NR outputs of one channel: out[j] = act((ar[j] - shift * xsum[j]) * s + b), one loop per act (each vectorizes). */
static inline __attribute__((always_inline)) void lbs_pw_row(const int32_t* restrict ar, const int32_t* restrict xsum,
                                                             float s, float b, int act, float* restrict out) {
    if (act == 0) {
        for (int64_t j = 0; j < LBS_NR; ++j) out[j] = (float)(ar[j] - LBS_SHIFT * xsum[j]) * s + b;
    } else if (act == 1) {
        for (int64_t j = 0; j < LBS_NR; ++j) {
            const float v = (float)(ar[j] - LBS_SHIFT * xsum[j]) * s + b;
            out[j] = v > 0.f ? v : 0.f;
        }
    } else if (act == 2) {
        for (int64_t j = 0; j < LBS_NR; ++j) {
            const float v = (float)(ar[j] - LBS_SHIFT * xsum[j]) * s + b;
            out[j] = v < 0.f ? 0.f : v > 6.f ? 6.f : v;
        }
    } else {
        for (int64_t j = 0; j < LBS_NR; ++j) {
            const float v = (float)(ar[j] - LBS_SHIFT * xsum[j]) * s + b;
            float t = v + 3.f;
            t = t < 0.f ? 0.f : t > 6.f ? 6.f : t;
            out[j] = v * t / 6.f; /* torch's hardswish: x * relu6(x + 3) / 6 */
        }
    }
}

/* One output tile: y[r * ldy + j] = lbs_pw_row for mr channels x nn pixels (a partial panel through a buffer). */
static void lbs_pw_epilogue(const int32_t* restrict acc, int64_t mr, int64_t nn, const int32_t* restrict xsum,
                            const float* scale, const float* bias, int act, float* y, int64_t ldy) {
    for (int64_t r = 0; r < mr; ++r) {
        const float s = scale[r], b = bias ? bias[r] : 0.f;
        if (nn == LBS_NR) {
            lbs_pw_row(acc + r * LBS_NR, xsum, s, b, act, y + r * ldy);
        } else {
            float z[LBS_NR];
            lbs_pw_row(acc + r * LBS_NR, xsum, s, b, act, z);
            memcpy(y + r * ldy, z, (size_t)nn * sizeof(float));
        }
    }
}

/* y (B, O, P) fp32 = the pointwise conv of x (B, C, P) fp32 (see the top of this file). wt: the weight tiles from
   `pack_static_pw` (ceil(O / MR) tiles of MR rows x Kp codes + shift, the layout of lbs_row), scale = a * s fp32
   (O), bias fp32 (O) or NULL. Threads split the pixel panels of each image. Returns how many NaN / inf x held (the
   caller marks those images). */
int64_t lb_static_conv1x1(const float* x, int64_t B, int64_t C, int64_t P, int64_t Kp, const uint8_t* wt, int64_t O,
                          const float* scale, const float* bias, int act, float a, int clamp, float* y, int nt) {
    const int64_t npan = (P + LBS_NR - 1) / LBS_NR;
    int64_t bad = 0;
    (void)nt; /* unread without OpenMP */
    for (int64_t b = 0; b < B; ++b) {
        const float* xb = x + b * C * P;
        float* yb = y + b * O * P;
        #pragma omp parallel num_threads(nt) reduction(+ : bad) if (npan > 1 && P * C * O > 1048576)
        {
            int8_t* panel = (int8_t*)aligned_alloc(64, (size_t)(Kp * LBS_NR));
            int32_t xsum[LBS_NR] __attribute__((aligned(64)));
            int32_t acc[LBS_MR * LBS_NR] __attribute__((aligned(64)));
            #pragma omp for schedule(static)
            for (int64_t p = 0; p < npan; ++p) {
                const int64_t p0 = p * LBS_NR, nn = lb_min(LBS_NR, P - p0);
                bad += lbs_pw_pack(xb, C, P, p0, nn, Kp, a, (float)clamp, panel, xsum);
                for (int64_t o0 = 0; o0 < O; o0 += LBS_MR) {
                    const int mr = (int)lb_min(LBS_MR, O - o0);
                    memset(acc, 0, sizeof(acc));
                    lbs_tile(wt + o0 * Kp, Kp, panel, mr, acc);
                    lbs_pw_epilogue(acc, mr, nn, xsum, scale + o0, bias ? bias + o0 : NULL, act, yb + o0 * P + p0, P);
                }
            }
            free(panel);
        }
    }
    return bad;
}
