/* lowbit native CPU kernels, part 3c: the static W8A8 depthwise conv on channels-last (NHWC) images
   (lowbit.kernels.cpu_static_nhwc is the Python side; the dense and 1x1 convs on NHWC are lb_static_im2col_nhwc /
   lb_static_quant + lb_static_gemm of lowbit_cpu_static.h). Included after lowbit_cpu_conv.h (lb_min, LB_GEO).

   Math per image (a = activation step, c = clamp, s[ch] = weight scale, wq[t, ch] the weight codes of tap t):
       xq[h, w, ch] = clamp(round_half_even(x[h, w, ch] / a), -c, c)          (0 in the zero padding)
       y[oh, ow, ch] = act(sum_t xq[tap t of (oh, ow), ch] * wq[t, ch] * (a * s[ch]) + bias[ch])
   The input rows are rounded once into their codes (as floats) in a small ring of padded rows; each output pixel then
   accumulates its taps vector by vector along the channels (16 at a time, GCC vector extensions:
   whatever the variant's flags make of them), 4 output pixels per weight load, the products summed in fp32, exact (integers below 2**24: taps <= 64, |codes| <= 127). Plain C. */

typedef float lbn_f16 __attribute__((vector_size(64), aligned(4)));
#define LBN_V 16

/* n floats -> their codes clamp(rint(x / a), -c, c) as floats (torch.div's codes); returns non-zero when any is NaN
   / inf (their codes are meaningless: the caller marks the image). */
static int64_t lbn_quant(const float* restrict x, int64_t n, float a, float c, float* restrict q) {
    int64_t bad = 0, i = 0;
#if LBS_ZMM
    {
        const __m512 va = _mm512_set1_ps(a), hi = _mm512_set1_ps(c), lo = _mm512_set1_ps(-c);
        const __m512 vinv = _mm512_set1_ps(1.f / a), tie = _mm512_set1_ps(LB_DW_TIE);
        __m512 nan = _mm512_setzero_ps();
        for (; i + 16 <= n; i += 16) {
            const __m512 xv = _mm512_loadu_ps(x + i);
            nan = _mm512_add_ps(nan, _mm512_sub_ps(xv, xv));
            __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(xv, vinv), lo), hi);
            __m512 r = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            if (_mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, r)), tie, _CMP_GT_OQ)) {
                v = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(xv, va), lo), hi);
                r = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            }
            _mm512_storeu_ps(q + i, r);
        }
        bad += _mm512_cmp_ps_mask(nan, nan, _CMP_UNORD_Q) != 0;
    }
#endif
#if LB_AVX2
    const __m256 va = _mm256_set1_ps(a), hi = _mm256_set1_ps(c), lo = _mm256_set1_ps(-c);
    const __m256 sgn = _mm256_set1_ps(-0.0f);
    const __m256 vinv = _mm256_set1_ps(1.f / a), tie = _mm256_set1_ps(LB_DW_TIE);
    __m256 nan = _mm256_setzero_ps(); /* sums x - x: NaN once any x was NaN / inf */
    for (; i + 8 <= n; i += 8) {
        const __m256 xv = _mm256_loadu_ps(x + i);
        nan = _mm256_add_ps(nan, _mm256_sub_ps(xv, xv));
        /* x * (1 / a) (the division's code but near a tie: that vector is redone with it, as lb_dwconv does) */
        __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(xv, vinv), lo), hi); /* NaN: lo or hi, any code */
        __m256 r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        if (_mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sgn, _mm256_sub_ps(v, r)), tie, _CMP_GT_OQ))) {
            v = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(xv, va), lo), hi);
            r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        }
        _mm256_storeu_ps(q + i, r);
    }
    bad += _mm256_movemask_ps(_mm256_cmp_ps(nan, nan, _CMP_UNORD_Q)) != 0;
#endif
    for (; i < n; ++i) {
        const float v = x[i];
        bad += !(fabsf(v) < INFINITY);
        float r = rintf(v / a);
        r = r > c ? c : r;
        r = r < -c ? -c : r;
        q[i] = r == r ? r : 0.f;
    }
    return bad;
}

/* NP adjacent output pixels (NP = 1 or 4): the Cv-channel accumulators of their K = kh * kw taps into rows (NP rows
   of Cv floats). rp[i]: the padded code row of tap row i at the first pixel's first column; coff[j]: tap column j's
   offset in it; pstep: the distance between adjacent output pixels. Each weight vector is loaded once for the NP
   pixels. */
static inline __attribute__((always_inline)) void lbn_dw_pixels(const float* const* rp, const int64_t* coff,
                                                                int64_t kh, int64_t kw, int64_t pstep, const float* wf,
                                                                int64_t Cv, int NP, float* rows) {
    for (int64_t c0 = 0; c0 < Cv; c0 += LBN_V) {
        lbn_f16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int64_t i = 0; i < kh; ++i)
            for (int64_t j = 0; j < kw; ++j) {
                const float* p = rp[i] + coff[j] + c0;
                const lbn_f16 w = *(const lbn_f16*)(wf + (i * kw + j) * Cv + c0);
                a0 += *(const lbn_f16*)p * w;
                if (NP == 4) {
                    a1 += *(const lbn_f16*)(p + pstep) * w;
                    a2 += *(const lbn_f16*)(p + 2 * pstep) * w;
                    a3 += *(const lbn_f16*)(p + 3 * pstep) * w;
                }
            }
        *(lbn_f16*)(rows + c0) = a0;
        if (NP == 4) {
            *(lbn_f16*)(rows + Cv + c0) = a1;
            *(lbn_f16*)(rows + 2 * Cv + c0) = a2;
            *(lbn_f16*)(rows + 3 * Cv + c0) = a3;
        }
    }
}

/* y[ch] = act(row[ch] * scale[ch] + bias[ch]) for ch < C (lbs_act's codes), one loop per act (each vectorizes). */
static inline void lbn_dw_store(const float* restrict row, const float* restrict scale, const float* restrict bias,
                                int act, int64_t C, float* restrict y) {
    if (act == 0) {
        for (int64_t ch = 0; ch < C; ++ch) y[ch] = row[ch] * scale[ch] + bias[ch];
    } else if (act == 1) {
        for (int64_t ch = 0; ch < C; ++ch) {
            const float v = row[ch] * scale[ch] + bias[ch];
            y[ch] = v > 0.f ? v : 0.f;
        }
    } else if (act == 2) {
        for (int64_t ch = 0; ch < C; ++ch) {
            const float v = row[ch] * scale[ch] + bias[ch];
            y[ch] = v < 0.f ? 0.f : v > 6.f ? 6.f : v;
        }
    } else {
        for (int64_t ch = 0; ch < C; ++ch) {
            const float v = row[ch] * scale[ch] + bias[ch];
            float t = v + 3.f;
            t = t < 0.f ? 0.f : t > 6.f ? 6.f : t;
            y[ch] = v * t / 6.f;
        }
    }
}

/* Output rows [lo, hi) of one image xb (H, W, C) into yb (OH, OW, C). The input rows are rounded as the output rows
   reach them into a ring of `span` padded code rows (Wp * Cv floats each, zero columns and channels past C), so the
   image is read once and the codes stay in cache; rows in the zero padding read `zero`. Returns non-zero when
   the rows it rounded held NaN / inf. */
static int64_t lbn_dw_rows(const float* xb, const int64_t* geo, const float* wf, const float* scale,
                           const float* bias, int act, float a, float clamp, float* yb, int64_t lo, int64_t hi,
                           float* ring, int64_t span, const float* zero, float* rows) {
    const int64_t C = geo[1], H = geo[2], W = geo[3], kh = geo[5], kw = geo[6], sh = geo[7], sw = geo[8];
    const int64_t ph = geo[9], pw = geo[10], dh = geo[11], dw = geo[12], OW = geo[14];
    const int64_t Cv = (C + LBN_V - 1) / LBN_V * LBN_V, Wp = W + 2 * pw;
    int64_t coff[LB_DW_MAX_K], bad = 0, next = -1; /* next: the first input row not yet in the ring */
    const float* rp[LB_DW_MAX_K];
    for (int64_t j = 0; j < kw; ++j) coff[j] = j * dw * Cv;
    for (int64_t r = 0; r < span; ++r) memset(ring + r * Wp * Cv, 0, (size_t)(Wp * Cv) * sizeof(float));
    for (int64_t oy = lo; oy < hi; ++oy) {
        const int64_t top = oy * sh - ph;
        if (next < top) next = top;
        for (; next <= top + (kh - 1) * dh; ++next) {
            if (next < 0 || next >= H) continue;
            float* r = ring + (next % span) * Wp * Cv + pw * Cv;
            for (int64_t w = 0; w < W; ++w) bad += lbn_quant(xb + (next * W + w) * C, C, a, clamp, r + w * Cv);
        }
        for (int64_t i = 0; i < kh; ++i) {
            const int64_t ih = top + i * dh;
            rp[i] = ih < 0 || ih >= H ? zero : ring + (ih % span) * Wp * Cv;
        }
        float* yr = yb + oy * OW * C;
        int64_t ox = 0;
        for (; ox + 4 <= OW; ox += 4) {
            const float* r4[LB_DW_MAX_K];
            for (int64_t i = 0; i < kh; ++i) r4[i] = rp[i] + ox * sw * Cv;
            if (kh == 3 && kw == 3) /* the common windows with their tap loops unrolled */
                lbn_dw_pixels(r4, coff, 3, 3, sw * Cv, wf, Cv, 4, rows);
            else if (kh == 5 && kw == 5)
                lbn_dw_pixels(r4, coff, 5, 5, sw * Cv, wf, Cv, 4, rows);
            else
                lbn_dw_pixels(r4, coff, kh, kw, sw * Cv, wf, Cv, 4, rows);
            for (int e = 0; e < 4; ++e) lbn_dw_store(rows + e * Cv, scale, bias, act, C, yr + (ox + e) * C);
        }
        for (; ox < OW; ++ox) {
            const float* r1[LB_DW_MAX_K];
            for (int64_t i = 0; i < kh; ++i) r1[i] = rp[i] + ox * sw * Cv;
            lbn_dw_pixels(r1, coff, kh, kw, 0, wf, Cv, 1, rows);
            lbn_dw_store(rows, scale, bias, act, C, yr + ox * C);
        }
    }
    return bad;
}

/* Depthwise conv (groups == C == O) of x fp32 (B, H, W, C) channels-last -> y fp32 (B, OH, OW, C) channels-last;
   geo: the LB_GEO geometry of lowbit_cpu_dwconv.h; wf fp32 (kh * kw, Cv): the weight codes as floats, Cv = C
   rounded up to 16 (zeros past C); scale = a * s and bias fp32 (Cv) (bias zeros when the conv has none); act: 0
   none, 1 ReLU, 2 ReLU6, 3 hard-swish. Threads split the output rows. Returns non-zero when x held NaN / inf (-1: more
   than LB_DW_MAX_K taps). */
int64_t lb_static_dw_nhwc(const float* x, const int64_t* geo, const float* wf, const float* scale, const float* bias,
                          int act, float a, int clamp, float* y, int nt) {
    const int64_t B = geo[0], C = geo[1], H = geo[2], W = geo[3], kh = geo[5], kw = geo[6], pw = geo[10];
    const int64_t dh = geo[11], OH = geo[13], OW = geo[14];
    const int64_t Cv = (C + LBN_V - 1) / LBN_V * LBN_V, Wp = W + 2 * pw, span = (kh - 1) * dh + 1;
    if (kh * kw > LB_DW_MAX_K) return -1;
    if (OH * OW * Cv * kh * kw <= 262144) nt = 1;
    int64_t bad = 0;
    float* zero = (float*)calloc((size_t)(Wp * Cv), sizeof(float));
    (void)nt; /* unread without OpenMP */
    #pragma omp parallel num_threads(nt) reduction(+ : bad)
    {
        int64_t id, n;
        lb_team(&id, &n);
        float* ring = (float*)aligned_alloc(64, (size_t)((span * Wp + 4) * Cv) * sizeof(float));
        float* rows = ring + span * Wp * Cv;
        for (int64_t b = 0; b < B; ++b)
            bad += lbn_dw_rows(x + b * H * W * C, geo, wf, scale, bias, act, a, (float)clamp, y + b * OH * OW * C,
                               OH * id / n, OH * (id + 1) / n, ring, span, zero, rows);
        free(ring);
    }
    free(zero);
    return bad;
}
