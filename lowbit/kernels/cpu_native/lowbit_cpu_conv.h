/* lowbit native CPU kernels, part 4: 2-D convolution on packed weights (lowbit.kernels.cpu_conv is the Python side).
   Included once at the end of lowbit_cpu.c (relies on quant_block, lb_min, lb_gemm_q4/q8 defined there); plain C
   that every ISA variant compiles (the inner loops are written so -O3 vectorizes them with the variant's flags).

   Geometry `geo` (int64[LB_GEO]): B, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, groups. x is fp32 NCHW
   contiguous, y fp32 (B, O, OH, OW) contiguous. act: 0 none, 1 ReLU, 2 ReLU6, 3 hard-swish (after the bias).

   lb_dwconv: depthwise (groups == C, O a multiple of C), a direct kernel: per output channel its K = kh * kw codes
   (uint8, one per byte) are dequantized into registers (w = (q - z) * s per block of gk), then each output row is
   accumulated kernel tap by kernel tap over a contiguous run of input pixels (vectorized over the row), in fp32:
   no activation rounding, no im2col.
   lb_conv_q: every other conv: per group, im2col fused with the int8 activation quantization (one row per output
   pixel, K = C/groups * kh * kw in the weight's (c, kh, kw) order; no float patch matrix), the Linear GEMM on the
   group's packed rows (lb_gemm_q4 / lb_gemm_q8), then bias + act + the (pixel, channel) -> NCHW transpose. A 1x1
   conv of stride 1 gathers one channel column per row: the same GEMM on the NHWC view. */

#define LB_GEO 16
#define LB_DW_MAX_K 64 /* taps per depthwise channel held in registers (up to 8x8) */

static inline float lb_act(float v, int act) {
    if (act == 1) return v > 0.f ? v : 0.f;
    if (act == 2) return v < 0.f ? 0.f : v > 6.f ? 6.f : v;
    if (act == 3) {
        float r = v + 3.f;
        r = r < 0.f ? 0.f : r > 6.f ? 6.f : r;
        return v * r * (1.f / 6.f);
    }
    return v;
}

/* Channel plane xp (H, W) -> zero-padded rows split by column phase: padded column c of padded row r lands at
   buf[(r * sw + c % sw) * Wq + c / sw], so a tap's inputs for consecutive output columns are contiguous whatever the
   stride. Hp = H + 2 ph + extra rows a tap may reach, Wq = the per-phase row length. */
static void dw_pad(const float* xp, const int64_t* geo, int64_t Hp, int64_t Wq, float* buf) {
    const int64_t H = geo[2], W = geo[3], sw = geo[8], ph = geo[9], pw = geo[10];
    memset(buf, 0, (size_t)((Hp * sw + 1) * Wq) * sizeof(float));
    for (int64_t h = 0; h < H; ++h) {
        const float* xr = xp + h * W;
        float* rows = buf + (h + ph) * sw * Wq;
        if (sw == 1) {
            memcpy(rows + pw, xr, (size_t)W * sizeof(float));
            continue;
        }
        for (int64_t p = 0; p < sw; ++p) /* phase p holds padded columns p, p + sw, ...: input column c - pw */
            for (int64_t i = 0, c = p; i < Wq && c < W + pw; ++i, c += sw)
                if (c >= pw) rows[p * Wq + i] = xr[c - pw];
    }
}

#define LB_DW_V 16 /* output columns accumulated in registers at once: two vectors of 8 */
/* 8 floats as one GCC/Clang vector (SSE/AVX/NEON, whatever the variant's flags give), unaligned loads allowed */
typedef float lb_v8 __attribute__((vector_size(32), aligned(4)));

/* One output plane of one depthwise channel from its padded, phase-split plane: yp (OH, OW) = sum over taps of
   w[tap] * input + bias, then act; 16 columns at a time with the accumulators in registers. */
static void dw_plane(const float* buf, int64_t Wq, const float* w, float bias, int act, const int64_t* geo,
                     float* yp) {
    const int64_t kh = geo[5], kw = geo[6], sh = geo[7], sw = geo[8], dh = geo[11], dw = geo[12];
    const int64_t OH = geo[13], OW = geo[14], K = kh * kw;
    const float* src[LB_DW_MAX_K];
    for (int64_t oh = 0; oh < OH; ++oh) {
        for (int64_t i = 0; i < kh; ++i)
            for (int64_t j = 0; j < kw; ++j) {
                const int64_t c = j * dw;
                src[i * kw + j] = buf + ((oh * sh + i * dh) * sw + c % sw) * Wq + c / sw;
            }
        float* yr = yp + oh * OW;
        /* whole vectors also past OW on the last block: the plane's rows carry LB_DW_V columns of slack */
        for (int64_t ow = 0; ow < OW; ow += LB_DW_V) {
            lb_v8 a0 = {bias, bias, bias, bias, bias, bias, bias, bias}, a1 = a0;
            for (int64_t t = 0; t < K; ++t) {
                const float* s = src[t] + ow;
                a0 += w[t] * *(const lb_v8*)s;
                a1 += w[t] * *(const lb_v8*)(s + 8);
            }
            float acc[LB_DW_V];
            memcpy(acc, &a0, sizeof a0);
            memcpy(acc + 8, &a1, sizeof a1);
            const int64_t n = lb_min(LB_DW_V, OW - ow);
            for (int64_t v = 0; v < n; ++v) yr[ow + v] = act ? lb_act(acc[v], act) : acc[v];
        }
    }
}

/* Depthwise conv: q uint8 (O, K) codes, ws / wz fp32 (O, nb) scale and zero per block of gk taps; bias (O,) or
   NULL. Output channel o reads input channel o / (O / C); its input plane is padded once per channel. */
void lb_dwconv(const float* x, const int64_t* geo, const uint8_t* q, const float* ws, const float* wz, int64_t gk,
               int64_t nb, const float* bias, int act, float* y, int nt) {
    const int64_t B = geo[0], C = geo[1], H = geo[2], W = geo[3], O = geo[4], K = geo[5] * geo[6];
    const int64_t sh = geo[7], sw = geo[8], ph = geo[9], pw = geo[10], OH = geo[13], OW = geo[14], mult = O / C;
    /* rows and phase columns any tap reaches, plus the padding: (OH - 1) * sh + (kh - 1) * dh + 1 rows */
    const int64_t reach = (OH - 1) * sh + (geo[5] - 1) * geo[11] + 1, Hp = reach > H + 2 * ph ? reach : H + 2 * ph;
    const int64_t span = (OW - 1) * sw + (geo[6] - 1) * geo[12] + 1, Wp = span > W + 2 * pw ? span : W + 2 * pw;
    const int64_t Wq = (Wp + sw - 1) / sw + LB_DW_V;
    #pragma omp parallel num_threads(nt) if (B * O * OH * OW * K > 65536)
    {
        float* buf = (float*)malloc((size_t)((Hp * sw + 1) * Wq) * sizeof(float));
        int64_t held = -1; /* the (b, input channel) plane in buf */
        #pragma omp for schedule(static)
        for (int64_t bo = 0; bo < B * O; ++bo) {
            const int64_t b = bo / O, o = bo % O;
            float w[LB_DW_MAX_K];
            for (int64_t k = 0; k < K; ++k) {
                const int64_t blk = k / gk;
                w[k] = ((float)q[o * K + k] - wz[o * nb + blk]) * ws[o * nb + blk];
            }
            if (b * C + o / mult != held) {
                held = b * C + o / mult;
                dw_pad(x + held * H * W, geo, Hp, Wq, buf);
            }
            dw_plane(buf, Wq, w, bias ? bias[o] : 0.f, act, geo, y + bo * OH * OW);
        }
        free(buf);
    }
}

/* The patch of output pixel (b, oh, ow) for group g, in (c, kh, kw) order, into buf (K floats; zero padding). */
static void im2col_row(const float* x, const int64_t* geo, int64_t g, int64_t b, int64_t oh, int64_t ow, float* buf) {
    const int64_t C = geo[1], H = geo[2], W = geo[3], kh = geo[5], kw = geo[6], sh = geo[7], sw = geo[8];
    const int64_t ph = geo[9], pw = geo[10], dh = geo[11], dw = geo[12], Cg = C / geo[15];
    const int64_t ih0 = oh * sh - ph, iw0 = ow * sw - pw;
    for (int64_t c = 0; c < Cg; ++c) {
        const float* xp = x + (b * C + g * Cg + c) * H * W;
        for (int64_t i = 0; i < kh; ++i) {
            const int64_t ih = ih0 + i * dh;
            float* dst = buf + (c * kh + i) * kw;
            if (ih < 0 || ih >= H) {
                for (int64_t j = 0; j < kw; ++j) dst[j] = 0.f;
                continue;
            }
            const float* xr = xp + ih * W;
            for (int64_t j = 0; j < kw; ++j) {
                const int64_t iw = iw0 + j * dw;
                dst[j] = (iw >= 0 && iw < W) ? xr[iw] : 0.f;
            }
        }
    }
}

/* One quantized activation row from its K floats: what lb_quant_act does for one row with `mode` (LB_ACT_*, see
   lowbit_cpu.c); xd holds nb scales (block, row) or Kp / 32 (per 32 columns). */
static void quant_row(const float* xr, int64_t K, int64_t Kp, int64_t gk, int64_t nb, int mode, int8_t* q,
                      float* xd, float* xs) {
    float d = 0.f;
    if (mode == LB_ACT_32) {
        for (int64_t b = 0; b < nb; ++b) xs[b] = 0.f;
        for (int64_t j = 0; j < Kp / 32; ++j) {
            const int64_t lo = j * 32, hi = lb_min(lo + 32, K);
            xd[j] = 0.f;
            if (hi <= lo) continue;
            const int32_t s = quant_block(xr + lo, hi - lo, q + lo, &xd[j]);
            xs[lo / gk] += xd[j] * (float)s;
        }
        memset(q + K, 0, (size_t)(Kp - K));
        return;
    }
    if (mode == LB_ACT_ROW) quant_block(xr, K, q, &d);
    for (int64_t b = 0; b < nb; ++b) {
        const int64_t lo = b * gk, hi = lb_min(lo + gk, K);
        int32_t s = 0;
        if (mode == LB_ACT_ROW) {
            for (int64_t k = lo; k < hi; ++k) s += q[k];
        } else if (hi > lo) {
            s = quant_block(xr + lo, hi - lo, q + lo, &d);
        }
        xd[b] = d;
        xs[b] = d * (float)s;
    }
    memset(q + K, 0, (size_t)(Kp - K));
}

/* im2col of group g fused with the int8 quantization: xq (M, Kp), xd / xs (M, nb), M = B * OH * OW. A 1x1 conv
   of stride 1 without padding reads the pixel's channel column directly. */
static void im2col_quant(const float* x, const int64_t* geo, int64_t g, int64_t Kp, int64_t gk, int64_t nb,
                         int mode, int8_t* xq, float* xd, float* xs, int nt) {
    const int64_t C = geo[1], H = geo[2], W = geo[3], kh = geo[5], kw = geo[6], OH = geo[13], OW = geo[14];
    const int64_t Cg = C / geo[15], K = Cg * kh * kw, M = geo[0] * OH * OW, HW = H * W;
    const int pointwise = kh == 1 && kw == 1 && geo[7] == 1 && geo[8] == 1 && geo[9] == 0 && geo[10] == 0;
    #pragma omp parallel num_threads(nt) if (M * K > 65536)
    {
        float* buf = (float*)malloc((size_t)K * sizeof(float));
        #pragma omp for schedule(static)
        for (int64_t m = 0; m < M; ++m) {
            const int64_t b = m / (OH * OW), l = m % (OH * OW);
            if (pointwise) {
                const float* xp = x + (b * C + g * Cg) * HW + l;
                for (int64_t c = 0; c < Cg; ++c) buf[c] = xp[c * HW];
            } else {
                im2col_row(x, geo, g, b, l / OW, l % OW, buf);
            }
            quant_row(buf, K, Kp, gk, nb, mode, xq + m * Kp, xd + m * (mode == LB_ACT_32 ? Kp / 32 : nb), xs + m * nb);
        }
        free(buf);
    }
}

/* yg (M, og) of group g -> y (B, O, OH, OW) channels g*og.., with act (the bias is already in yg). */
static void scatter_nchw(const float* yg, const int64_t* geo, int64_t g, int64_t og, int act, float* y, int nt) {
    const int64_t O = geo[4], L = geo[13] * geo[14], B = geo[0];
    #pragma omp parallel for num_threads(nt) schedule(static) if (B * L * og > 65536)
    for (int64_t bn = 0; bn < B * og; ++bn) {
        const int64_t b = bn / og, n = bn % og;
        const float* src = yg + b * L * og + n;
        float* dst = y + (b * O + g * og + n) * L;
        for (int64_t l = 0; l < L; ++l) dst[l] = lb_act(src[l * og], act);
    }
}

/* Dense or grouped conv on a packed weight (N = O rows of Kp codes: pack_q4 when bits == 4, pack_q8 when 8; scale /
   scale * zero fp32 (O, nb); gsb sub-blocks of 32 per block, gk = gsb * 32 or Kp per channel). Scratch from the
   caller: xq int8 (M, Kp), xd fp32 (M, nb) or (M, Kp / 32) for mode LB_ACT_32, xs fp32 (M, nb), yg fp32
   (M, O / groups). mode: the activation scheme (LB_ACT_*). */
void lb_conv_q(const float* x, const int64_t* geo, const uint8_t* w, const float* ws, const float* wsz, int64_t Kp,
               int64_t gsb, int64_t nb, int mode, int bits, const float* bias, int act, int8_t* xq, float* xd,
               float* xs, float* yg, float* y, int nt) {
    const int64_t groups = geo[15], og = geo[4] / groups, M = geo[0] * geo[13] * geo[14];
    const int64_t gk = gsb > 0 ? gsb * 32 : Kp, row_bytes = Kp * bits / 8;
    for (int64_t g = 0; g < groups; ++g) {
        im2col_quant(x, geo, g, Kp, gk, nb, mode, xq, xd, xs, nt);
        const uint8_t* wg = w + g * og * row_bytes;
        const float* bg = bias ? bias + g * og : NULL;
        if (bits == 4)
            lb_gemm_q4(wg, ws + g * og * nb, wsz + g * og * nb, og, Kp, gsb, nb, xq, xd, xs, M, mode, bg, yg, nt);
        else
            lb_gemm_q8(wg, ws + g * og * nb, wsz + g * og * nb, og, Kp, gsb, nb, xq, xd, xs, M, mode, bg, yg, nt);
        scatter_nchw(yg, geo, g, og, act, y, nt);
    }
}
