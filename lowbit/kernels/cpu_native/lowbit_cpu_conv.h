/* lowbit native CPU kernels, part 4: 2-D convolution on packed weights (lowbit.kernels.cpu_conv is the Python side).
   Included once at the end of lowbit_cpu.c (relies on quant_block, lb_min, lb_gemm_q4/q8 defined there); the
   depthwise kernel and the shared geometry / activation helpers are in lowbit_cpu_dwconv.h.

   lb_conv_q: every conv but depthwise: per image, group and chunk of output pixels, im2col fused with the int8
   activation quantization (one row per output pixel, K = C/groups * kh * kw in the weight's (c, kh, kw) order; no
   float patch matrix, no whole-image im2col), the Linear GEMM on the group's packed rows (lb_gemm_q4 / lb_gemm_q8),
   then bias + act + the (pixel, channel) -> NCHW transpose. A 1x1 conv of stride 1 gathers one channel column per
   row: the same GEMM on the NHWC view. */

#include "lowbit_cpu_dwconv.h" /* lb_dwconv, LB_GEO, lb_act */

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
    if (mode == LB_ACT_ROW) {
        const int32_t s = quant_block(xr, K, q, &d);
        if (nb == 1) { /* one block: quant_block's sum is the block's */
            xd[0] = d;
            xs[0] = d * (float)s;
            memset(q + K, 0, (size_t)(Kp - K));
            return;
        }
    }
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

/* 4 floats as one GCC/Clang vector, unaligned: the patch copy moves a kernel row of up to 4 taps in one load and
   store on every variant (the plain C build lowers it to scalars). */
typedef float lb_v4 __attribute__((vector_size(16), aligned(4)));

/* Channels [c0, c1) of group g of image b, zero-padded, into xp (Cg, Hp, Wp): padded pixel (r, col) at
   xp[(c * Hp + r) * Wp + col] (Wp may exceed W + 2 pw: the patch copy reads whole vectors past the last tap). */
static void pad_planes(const float* x, const int64_t* geo, int64_t g, int64_t b, int64_t c0, int64_t c1, int64_t Hp,
                       int64_t Wp, float* xp) {
    const int64_t C = geo[1], H = geo[2], W = geo[3], ph = geo[9], pw = geo[10], Cg = C / geo[15];
    for (int64_t c = c0; c < c1; ++c) {
        const float* src = x + ((b * C + g * Cg + c) * H) * W;
        for (int64_t r = 0; r < Hp; ++r) {
            float* d = xp + (c * Hp + r) * Wp;
            const int64_t ih = r - ph;
            if (ih < 0 || ih >= H) {
                memset(d, 0, (size_t)Wp * sizeof(float));
                continue;
            }
            memset(d, 0, (size_t)pw * sizeof(float));
            memcpy(d + pw, src + ih * W, (size_t)W * sizeof(float));
            memset(d + pw + W, 0, (size_t)(Wp - pw - W) * sizeof(float));
        }
    }
}

#define LB_PATCH_RUN 8 /* output pixels of one row whose patches are gathered together (their taps share lines) */

/* The patches of np (<= LB_PATCH_RUN) output pixels of one row, the first at padded (r0, c0), the next sw columns
   on, in (c, kh, kw) order from the padded planes xp into buf + p * bstride (K floats each, written 4 at a time:
   bstride >= K + 3); column dilation 1. Tap row by tap row for all np pixels at once: pixel by pixel the kh * Cg
   source rows (46 KiB for 64 channels of 56) fell out of L1 between neighbours. */
static inline void padded_patches(const float* xp, int64_t Cg, int64_t Hp, int64_t Wp, int64_t kh, int64_t kw,
                                  int64_t dh, int64_t sw, int64_t r0, int64_t c0, int64_t np, float* restrict buf,
                                  int64_t bstride) {
    const float* s = xp + r0 * Wp + c0;
    for (int64_t c = 0; c < Cg; ++c, s += Hp * Wp)
        for (int64_t i = 0; i < kh; ++i, buf += kw) {
            const float* si = s + i * dh * Wp;
            if (kw <= 4 && np == LB_PATCH_RUN) { /* the usual full run: a constant trip count, unrolled */
                for (int64_t p = 0; p < LB_PATCH_RUN; ++p) *(lb_v4*)(buf + p * bstride) = *(const lb_v4*)(si + p * sw);
            } else if (kw <= 4) {
                for (int64_t p = 0; p < np; ++p) *(lb_v4*)(buf + p * bstride) = *(const lb_v4*)(si + p * sw);
            } else {
                for (int64_t p = 0; p < np; ++p)
                    for (int64_t j = 0; j < kw; j += 4)
                        *(lb_v4*)(buf + p * bstride + j) = *(const lb_v4*)(si + p * sw + j);
            }
        }
}

/* Where a conv's patches come from (lb_conv_q): a 1x1 conv of stride 1 without padding reads the pixel's channel
   column directly; with column dilation 1 each image's group is first copied zero-padded (pad_planes, Cg * Hp * Wp
   floats), so that a patch is Cg * kh contiguous runs of kw floats with no bounds test (the per-tap tests cost 2 ms
   of resnet18's 3.4 ms 56x56 conv); else im2col_row. */
typedef struct {
    int64_t Cg, K, L, Hp, Wp; /* channels per group, patch length, output pixels per image, padded plane */
    int pointwise, padded;
} lb_conv_src;

static lb_conv_src conv_src(const int64_t* geo) {
    lb_conv_src s;
    const int64_t kh = geo[5], kw = geo[6], sw = geo[8], OW = geo[14], kw4 = (kw + 3) / 4 * 4;
    s.Cg = geo[1] / geo[15];
    s.K = s.Cg * kh * kw;
    s.L = geo[13] * OW;
    s.pointwise = kh == 1 && kw == 1 && geo[7] == 1 && sw == 1 && geo[9] == 0 && geo[10] == 0;
    s.padded = !s.pointwise && geo[12] == 1;
    s.Hp = geo[2] + 2 * geo[9];
    s.Wp = geo[3] + 2 * geo[10] > (OW - 1) * sw + kw4 ? geo[3] + 2 * geo[10] : (OW - 1) * sw + kw4;
    const int64_t tile = (OW + 15) / 16 * 16 + (kw - 1) * geo[12]; /* the tile path reads whole tiles of 16 */
    s.Wp = sw == 1 && s.Wp < tile ? tile : s.Wp;
    return s;
}

/* The int8 rows of output pixels [l0, l1) of image b, group g, into xq (l1 - l0, Kp), xd / xs (l1 - l0, ...):
   each patch gathered (see lb_conv_src; xp: the padded planes when S->padded) and quantized as lb_quant_act. */
static void quant_pixels(const float* x, const float* xp, const int64_t* geo, const lb_conv_src* S, int64_t g,
                         int64_t b, int64_t l0, int64_t l1, int64_t Kp, int64_t gk, int64_t nb, int mode, int8_t* xq,
                         float* xd, float* xs, int nt) {
    const int64_t C = geo[1], HW = geo[2] * geo[3], kh = geo[5], kw = geo[6], OW = geo[14], sh = geo[7];
    const int64_t sw = geo[8], dh = geo[11], K = S->K, dstride = mode == LB_ACT_32 ? Kp / 32 : nb;
    const int64_t bstride = K + 4, nrun = (l1 - l0 + LB_PATCH_RUN - 1) / LB_PATCH_RUN;
    #pragma omp parallel num_threads(nt) if ((l1 - l0) * K > 65536)
    {
        float* buf = (float*)malloc((size_t)(LB_PATCH_RUN * bstride) * sizeof(float));
        #pragma omp for schedule(static)
        for (int64_t t = 0; t < nrun; ++t) {
            const int64_t end = lb_min(l0 + (t + 1) * LB_PATCH_RUN, l1);
            for (int64_t l = l0 + t * LB_PATCH_RUN; l < end;) {
                const int64_t oh = l / OW, ow = l % OW, np = lb_min(end - l, OW - ow); /* one output row */
                if (S->padded) {
                    padded_patches(xp, S->Cg, S->Hp, S->Wp, kh, kw, dh, sw, oh * sh, ow * sw, np, buf, bstride);
                } else if (S->pointwise) { /* channel by channel: np neighbours from one line, not Cg lines each */
                    const float* xc = x + (b * C + g * S->Cg) * HW + l;
                    for (int64_t c = 0; c < S->Cg; ++c, xc += HW)
                        for (int64_t p = 0; p < np; ++p) buf[p * bstride + c] = xc[p];
                } else {
                    for (int64_t p = 0; p < np; ++p) im2col_row(x, geo, g, b, oh, ow + p, buf + p * bstride);
                }
                for (int64_t p = 0; p < np; ++p, ++l) {
                    const int64_t m = l - l0;
                    quant_row(buf + p * bstride, K, Kp, gk, nb, mode, xq + m * Kp, xd + m * dstride, xs + m * nb);
                }
            }
        }
        free(buf);
    }
}

/* yg (l1 - l0, og) of image b, group g -> y (B, O, OH, OW) channels g*og.., pixels [l0, l1), with act (the bias is
   already in yg); in tiles of LB_SCATTER pixels (their og outputs read once, from L1, each channel's run written
   contiguously: a column at a time the reads strode og floats and cost 0.3 ms of a 56x56 x 64 conv). */
#define LB_SCATTER 16
static void scatter_nchw(const float* yg, const int64_t* geo, int64_t g, int64_t og, int64_t b, int64_t l0,
                         int64_t l1, int act, float* y, int nt) {
    const int64_t O = geo[4], L = geo[13] * geo[14], nl = (l1 - l0 + LB_SCATTER - 1) / LB_SCATTER;
    #pragma omp parallel for num_threads(nt) schedule(static) if ((l1 - l0) * og > 65536)
    for (int64_t t = 0; t < nl; ++t) {
        const int64_t lt = t * LB_SCATTER, nlt = lb_min(LB_SCATTER, l1 - l0 - lt);
        const float* src = yg + lt * og;
        float* dst = y + (b * O + g * og) * L + l0 + lt;
        for (int64_t n = 0; n < og; ++n) {
            float* d = dst + n * L;
            if (act == 0) for (int64_t l = 0; l < nlt; ++l) d[l] = src[l * og + n];
            else if (act == 1) for (int64_t l = 0; l < nlt; ++l) d[l] = src[l * og + n] > 0.f ? src[l * og + n] : 0.f;
            else for (int64_t l = 0; l < nlt; ++l) d[l] = lb_act(src[l * og + n], act);
        }
    }
}

#if LB_AVX2
#include "lowbit_cpu_conv_tile.h" /* conv_tiles: the implicit-GEMM tile, pixels across lanes */
#else
static int conv_tiles(const float* x, const int64_t* geo, const lb_conv_src* S, const uint8_t* w, const float* ws,
                      const float* wsz, int64_t Kp, int64_t gk, int64_t nb, int mode, int bits, const float* bias,
                      int act, float* y, int nt) {
    (void)x, (void)geo, (void)S, (void)w, (void)ws, (void)wsz, (void)Kp, (void)gk, (void)nb, (void)mode, (void)bits;
    (void)bias, (void)act, (void)y, (void)nt;
    return 0; /* no tile path without AVX2: the general one serves */
}
#endif

#ifndef LB_CONV_CHUNK
#define LB_CONV_CHUNK (192 * 1024) /* int8 patch bytes per chunk of output pixels: the chunk's rows stay in L2 */
#endif

/* Dense or grouped conv on a packed weight (N = O rows of Kp codes: pack_q4 when bits == 4, pack_q8 when 8; scale /
   scale * zero fp32 (O, nb); gsb sub-blocks of 32 per block, gk = gsb * 32 or Kp per channel). mode: the
   activation scheme (LB_ACT_*). Per image and group, the output pixels go in chunks of about LB_CONV_CHUNK / Kp:
   their patches quantized (quant_pixels), the Linear GEMM on them, bias + act + NCHW (scatter_nchw); the im2col
   is never whole (scratch ~LB_CONV_CHUNK * 1.5 bytes and the padded planes). Out of memory: y is NaN. */
void lb_conv_q(const float* x, const int64_t* geo, const uint8_t* w, const float* ws, const float* wsz, int64_t Kp,
               int64_t gsb, int64_t nb, int mode, int bits, const float* bias, int act, float* y, int nt) {
    const int64_t groups = geo[15], og = geo[4] / groups, B = geo[0];
    const int64_t gk = gsb > 0 ? gsb * 32 : Kp, row_bytes = Kp * bits / 8;
    const lb_conv_src S = conv_src(geo);
    if (conv_tiles(x, geo, &S, w, ws, wsz, Kp, gk, nb, mode, bits, bias, act, y, nt)) return;
    const int64_t ch = lb_min(S.L, LB_CONV_CHUNK / Kp > 16 ? LB_CONV_CHUNK / Kp / 16 * 16 : 16);
    const int64_t dstride = mode == LB_ACT_32 ? Kp / 32 : nb;
    int8_t* xq = (int8_t*)malloc((size_t)(ch * Kp));
    float* xd = (float*)malloc((size_t)(ch * dstride) * sizeof(float));
    float* xs = (float*)malloc((size_t)(ch * nb) * sizeof(float));
    float* yg = (float*)malloc((size_t)(ch * og) * sizeof(float));
    float* xp = S.padded ? (float*)malloc((size_t)(S.Cg * S.Hp * S.Wp) * sizeof(float)) : NULL;
    if (!xq || !xd || !xs || !yg || (S.padded && !xp)) {
        for (int64_t i = 0; i < B * geo[4] * S.L; ++i) y[i] = NAN;
    } else {
        for (int64_t b = 0; b < B; ++b)
            for (int64_t g = 0; g < groups; ++g) {
                if (S.padded) {
                    #pragma omp parallel for num_threads(nt) schedule(static) if (S.Cg * S.Hp * S.Wp > 65536)
                    for (int64_t c = 0; c < S.Cg; ++c) pad_planes(x, geo, g, b, c, c + 1, S.Hp, S.Wp, xp);
                }
                const uint8_t* wg = w + g * og * row_bytes;
                const float *wsg = ws + g * og * nb, *wzg = wsz + g * og * nb, *bg = bias ? bias + g * og : NULL;
                for (int64_t l0 = 0; l0 < S.L; l0 += ch) {
                    const int64_t l1 = lb_min(l0 + ch, S.L);
                    quant_pixels(x, xp, geo, &S, g, b, l0, l1, Kp, gk, nb, mode, xq, xd, xs, nt);
                    if (bits == 4)
                        lb_gemm_q4(wg, wsg, wzg, og, Kp, gsb, nb, xq, xd, xs, l1 - l0, mode, bg, yg, nt);
                    else
                        lb_gemm_q8(wg, wsg, wzg, og, Kp, gsb, nb, xq, xd, xs, l1 - l0, mode, bg, yg, nt);
                    scatter_nchw(yg, geo, g, og, b, l0, l1, act, y, nt);
                }
            }
    }
    free(xq);
    free(xd);
    free(xs);
    free(yg);
    free(xp);
}
