/* Checks the native convolution kernels on packed weights (lb_conv_q of lowbit_cpu_conv.h / lowbit_cpu_conv_tile.h,
   lb_dwconv of lowbit_cpu_dwconv.h; lowbit_cpu.c linked in) against a reference computed here in double from the
   same codes, scales and inputs:
   - lb_conv_q: each output pixel's patch (c, kh, kw order, zero padding) rounded to int8 as lb_quant_act does (per
     weight block, per row, per 32 columns: exact in float, written out here), then bias + sum over 32-column pieces
     of d * (s * sum q * a - s * z * sum a), then the activation. Dense k x k (stride 1 and 2, padded planes, row
     and column dilation through im2col, non-square kernels, kernels wider than 4), 1x1 (the NHWC column path and
     strided), grouped, several pixel chunks, and planes big enough for the AVX2 pixel tile (stride 1 and 2, odd O,
     partial tiles); codes of 2..4 bits (pack_q4) and 5..8 (pack_q8), per-row and 32/64/128 blocks, no bias or a
     bias, the four fused activations, 1 and 2 threads, 1 and 2 images.
   - lb_dwconv: w = (q - z) * s per block of gk taps, fp32 products of the input (or of its static INT8 codes,
     round_half_even(x / step) clamped, with exact ties), 3x3 / 5x5 / 7x7, stride 1 and 2, dilation, channel
     multiplier 2, planes of both fill paths, the NaN / inf count.
   |y - ref| <= TOL * the sum of |terms| (x 1.5 after hard-swish, whose slope reaches 1.5): a wrong tap, code, scale
   or a dropped zero term costs ~1 / K of it or more. Built and run by tests/kernels/test_native_arm.py as
   test_rows.c is. Usage: test_conv <expected lb_isa()>; prints a summary line; exits 1 on any failure. */
#include "driver.h"

void lb_conv_q(const float* x, const int64_t* geo, const uint8_t* w, const float* ws, const float* wsz, int64_t Kp,
               int64_t gsb, int64_t nb, int mode, int bits, const float* bias, int act, float* y, int nt);
int64_t lb_dwconv(const float* x, const int64_t* geo, const uint8_t* q, const float* ws, const float* wz, int64_t gk,
                  int64_t nb, const float* bias, int act, float step, float clamp, float* y, int nt);

#define TOL 2e-5

typedef struct {
    int B, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, groups;
} Geo;

/* geo as the kernels read it (lowbit.kernels.cpu_conv.geometry); returns the output pixels per image. */
static int geometry(const Geo* g, int64_t* geo) {
    const int OH = (g->H + 2 * g->ph - g->dh * (g->kh - 1) - 1) / g->sh + 1;
    const int OW = (g->W + 2 * g->pw - g->dw * (g->kw - 1) - 1) / g->sw + 1;
    const int64_t v[16] = {g->B, g->C, g->H, g->W, g->O, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw,
                           OH, OW, g->groups};
    memcpy(geo, v, sizeof(v));
    return OH * OW;
}

/* x[b, c, oh * sh - ph + i * dh, ow * sw - pw + j * dw], 0 in the padding */
static float tap(const float* x, const Geo* g, int b, int c, int oh, int ow, int i, int j) {
    const int ih = oh * g->sh - g->ph + i * g->dh, iw = ow * g->sw - g->pw + j * g->dw;
    return ih < 0 || ih >= g->H || iw < 0 || iw >= g->W ? 0.f : x[(((size_t)b * g->C + c) * g->H + ih) * g->W + iw];
}

/* One patch row of K floats as lb_quant_act rounds it in scheme `mode` (0 per block of gk, 1 per row, 2 per 32):
   codes q (Kp, 0 past K) and the scale of each 32-column piece d (Kp / 32). */
static void quant_row_ref(const float* p, int K, int Kp, int gk, int mode, int8_t* q, float* d) {
    memset(q, 0, (size_t)Kp);
    const int span = mode == 1 ? Kp : mode == 0 ? gk : 32; /* the columns sharing one scale */
    for (int lo = 0; lo < K; lo += span) {
        const int hi = lo + span < K ? lo + span : K;
        float s;
        ref_quant_block(p + lo, hi - lo, q + lo, &s);
        for (int j = lo / 32; j * 32 < lo + span && j < Kp / 32; ++j) d[j] = s;
    }
}

typedef struct {
    Geo g;
    int bits, gk, mode, bias, act, nt; /* gk 0: one block per output channel */
} ConvCase;

/* lb_conv_q on random codes, scales and input; returns the largest relative error (see TOL). */
static double run_conv(const ConvCase* c) {
    const Geo* g = &c->g;
    int64_t geo[16];
    const int L = geometry(g, geo), OW = (int)geo[14];
    const int Cg = g->C / g->groups, og = g->O / g->groups, K = Cg * g->kh * g->kw, Kp = (K + 63) / 64 * 64;
    const int gk = c->gk ? c->gk : Kp, nb = (K + gk - 1) / gk, qmax = (1 << c->bits) - 1, O = g->O;
    const size_t nx = (size_t)g->B * g->C * g->H * g->W, ny = (size_t)g->B * O * L;
    float *x = malloc(sizeof(float) * nx), *y = malloc(sizeof(float) * ny), *bias = guarded(O);
    uint8_t *codes = malloc((size_t)O * K), *w = malloc((size_t)O * Kp);
    float *ws = guarded((size_t)O * nb), *wz = guarded((size_t)O * nb);
    float *wsz = guarded((size_t)O * nb), *p = malloc(sizeof(float) * K), *d = malloc(sizeof(float) * Kp / 32);
    int8_t* q = malloc((size_t)Kp);
    for (size_t i = 0; i < nx; ++i) x[i] = activation();
    for (int i = 0; i < O * K; ++i) codes[i] = (uint8_t)(next_u32() % (qmax + 1));
    for (int i = 0; i < O * nb; ++i) {
        ws[i] = uniform(0.002f, 0.03f);
        wz[i] = uniform(0.f, (float)qmax);
        wsz[i] = ws[i] * wz[i];
    }
    for (int o = 0; o < O; ++o) bias[o] = uniform(-1.f, 1.f);
    for (size_t i = 0; i < ny; ++i) y[i] = NAN; /* an output never written fails */
    pack(codes, O, K, Kp, c->bits, w);
    lb_conv_q(x, geo, w, ws, wsz, Kp, gk / 32, nb, c->mode, c->bits <= 4 ? 4 : 8, c->bias ? bias : NULL, c->act, y,
              c->nt);
    double worst = 0.;
    for (int b = 0; b < g->B; ++b)
        for (int gi = 0; gi < g->groups; ++gi)
            for (int l = 0; l < L; ++l) {
                const int oh = l / OW, ow = l % OW;
                for (int cc = 0, k = 0; cc < Cg; ++cc)
                    for (int i = 0; i < g->kh; ++i)
                        for (int j = 0; j < g->kw; ++j, ++k) p[k] = tap(x, g, b, gi * Cg + cc, oh, ow, i, j);
                quant_row_ref(p, K, Kp, gk, c->mode, q, d);
                for (int o = gi * og; o < (gi + 1) * og; ++o) {
                    double ref = c->bias ? bias[o] : 0., mag = fabs(ref);
                    for (int k0 = 0; k0 < K; k0 += 32) { /* one 32-column piece: its scale d, its block */
                        const int blk = o * nb + k0 / gk, k1 = k0 + 32 < K ? k0 + 32 : K;
                        double dot = 0., adot = 0., asum = 0.;
                        for (int k = k0; k < k1; ++k) {
                            dot += (double)codes[(size_t)o * K + k] * q[k];
                            adot += fabs((double)codes[(size_t)o * K + k] * q[k]);
                            asum += q[k];
                        }
                        ref += d[k0 / 32] * ((double)ws[blk] * dot - (double)wsz[blk] * asum);
                        mag += d[k0 / 32] * (ws[blk] * adot + fabs(wsz[blk] * asum));
                    }
                    const double e = rel_err(y[((size_t)b * O + o) * L + l], act_ref(ref, c->act), mag);
                    worst = e > worst || isnan(e) ? e : worst;
                }
            }
    free(x); free(y); free(bias); free(codes); free(w); free(ws); free(wz); free(wsz); free(p); free(d); free(q);
    return worst;
}

typedef struct {
    Geo g; /* groups = C, O = C * multiplier */
    int bits, gk, bias, act, nt, nan; /* gk: taps per block; nan: NaN and inf in one plane each (step > 0) */
    float step, clamp;                /* step 0: the input as is */
} DwCase;

/* lb_dwconv on random codes, scales and input (step > 0: one input in 8 an exact or near tie of x / step); returns
   the largest relative error, or -1 when the NaN / inf count is wrong. */
static double run_dw(const DwCase* c) {
    const Geo* g = &c->g;
    int64_t geo[16];
    const int L = geometry(g, geo), OW = (int)geo[14], O = g->O, mult = O / g->C;
    const int K = g->kh * g->kw, nb = (K + c->gk - 1) / c->gk, qmax = (1 << c->bits) - 1;
    const size_t nx = (size_t)g->B * g->C * g->H * g->W, ny = (size_t)g->B * O * L;
    float *x = malloc(sizeof(float) * nx), *y = malloc(sizeof(float) * ny), *bias = guarded(O);
    uint8_t* q = malloc((size_t)O * K);
    float *ws = guarded((size_t)O * nb), *wz = guarded((size_t)O * nb);
    for (size_t i = 0; i < nx; ++i) {
        x[i] = activation();
        if (c->step > 0.f && next_u32() % 8 == 0) x[i] = ((float)(int)(next_u32() % 261) - 130.5f) * c->step;
    }
    for (int i = 0; i < O * K; ++i) q[i] = (uint8_t)(next_u32() % (qmax + 1));
    for (int i = 0; i < O * nb; ++i) {
        ws[i] = uniform(0.002f, 0.03f);
        wz[i] = uniform(0.f, (float)qmax);
    }
    for (int o = 0; o < O; ++o) bias[o] = uniform(-1.f, 1.f);
    if (c->nan) { /* a NaN in the first plane, an inf in the last */
        x[nx / (g->B * g->C) / 2] = NAN;
        x[nx - 1] = INFINITY;
    }
    for (size_t i = 0; i < ny; ++i) y[i] = NAN;
    const int64_t bad = lb_dwconv(x, geo, q, ws, wz, c->gk, nb, c->bias ? bias : NULL, c->act, c->step, c->clamp,
                                  y, c->nt);
    double worst = (bad > 0) == (c->nan != 0) ? 0. : -1.;
    for (int b = 0; b < g->B && !c->nan; ++b)
        for (int o = 0; o < O; ++o)
            for (int l = 0; l < L; ++l) {
                double ref = c->bias ? bias[o] : 0., mag = fabs(ref);
                for (int t = 0; t < K; ++t) {
                    const int blk = o * nb + t / c->gk;
                    const double wt = ((double)q[o * K + t] - wz[blk]) * ws[blk];
                    float a = tap(x, g, b, o / mult, l / OW, l % OW, t / g->kw, t % g->kw);
                    a = c->step > 0.f ? code_ref(a, c->step, c->clamp) : a;
                    ref += wt * a;
                    mag += fabs(wt * a);
                }
                const double e = rel_err(y[((size_t)b * O + o) * L + l], act_ref(ref, c->act), mag);
                worst = e > worst || isnan(e) ? e : worst;
            }
    free(x); free(y); free(bias); free(q); free(ws); free(wz);
    return worst;
}

/* B, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, groups */
static const Geo conv_shapes[] = {
    {1, 8, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1},      /* dense 3x3, K 72 (Kp 128) */
    {2, 6, 10, 9, 7, 3, 3, 2, 2, 1, 1, 1, 1, 1},      /* stride 2, 2 images */
    {1, 40, 6, 7, 9, 1, 1, 1, 1, 0, 0, 1, 1, 1},      /* 1x1: the NHWC column path */
    {1, 70, 7, 7, 6, 1, 1, 2, 2, 0, 0, 1, 1, 1},      /* 1x1 strided, K 70 */
    {1, 8, 8, 8, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2},       /* grouped */
    {2, 16, 9, 9, 8, 3, 3, 2, 2, 1, 1, 1, 1, 4},      /* grouped, stride 2 */
    {1, 5, 10, 10, 4, 3, 3, 1, 1, 2, 2, 2, 2, 1},     /* dilation 2: im2col per pixel */
    {1, 12, 8, 9, 6, 3, 2, 2, 1, 0, 1, 1, 2, 3},      /* grouped, 3x2, column dilation */
    {1, 4, 8, 9, 3, 5, 5, 1, 1, 2, 2, 1, 1, 1},       /* 5x5: rows wider than 4 taps */
    {1, 3, 16, 15, 4, 7, 7, 2, 2, 3, 3, 1, 1, 1},     /* stem-like 7x7 stride 2, K 147 */
    {1, 6, 8, 8, 4, 2, 2, 2, 2, 0, 0, 1, 1, 1},       /* 2x2 stride 2 */
    {1, 16, 15, 16, 5, 3, 3, 1, 1, 2, 1, 2, 1, 1},    /* padded planes with row dilation */
    {1, 64, 20, 20, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1},    /* K 576: 2 pixel chunks; the AVX2 tile from 196 pixels */
    {1, 8, 48, 47, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* 2256 pixels: the tile with VNNI; odd O, tail tile, K 72 */
    {1, 4, 92, 94, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1},     /* tile, column stride 2 (46 x 47) */
    {2, 3, 30, 31, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* tile without VNNI, K 27 in one 32-column piece */
};

/* B, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, groups (= C) */
static const Geo dw_shapes[] = {
    {2, 5, 7, 30, 5, 3, 3, 1, 1, 1, 1, 1, 1, 5},      /* rows of >= 24: rounded as they are split */
    {1, 6, 9, 9, 6, 3, 3, 1, 1, 1, 1, 1, 1, 6},       /* short rows: the plane rounded whole */
    {1, 4, 6, 50, 4, 3, 3, 2, 2, 1, 1, 1, 1, 4},      /* stride 2, rows of >= 48 */
    {1, 3, 13, 13, 6, 3, 3, 2, 2, 1, 1, 1, 1, 3},     /* stride 2, channel multiplier 2 */
    {1, 4, 12, 26, 4, 5, 5, 1, 1, 2, 2, 1, 1, 4},     /* 5x5 */
    {2, 3, 15, 17, 3, 5, 5, 2, 2, 2, 2, 1, 1, 3},     /* 5x5 stride 2 */
    {1, 4, 10, 10, 4, 3, 3, 1, 1, 2, 2, 2, 2, 4},     /* dilation 2 */
    {1, 2, 9, 9, 2, 7, 7, 1, 1, 3, 3, 1, 1, 2},       /* 49 taps */
    {1, 3, 11, 12, 3, 3, 3, 2, 1, 0, 1, 1, 1, 3},     /* row stride only */
    {1, 32, 28, 28, 32, 3, 3, 1, 1, 1, 1, 1, 1, 32},  /* enough work for 2 threads */
};

int main(int argc, char** argv) {
    if (!check_isa(argc, argv)) return 1;
    Tally t = {0, 0, 0.};
    char what[160];
    const int nconv = sizeof(conv_shapes) / sizeof(conv_shapes[0]), ndw = sizeof(dw_shapes) / sizeof(dw_shapes[0]);
    static const int gks[] = {0, 32, 64, 128};
    int n = 0;
    for (int s = 0; s < nconv; ++s)
        for (int container = 4; container <= 8; container += 4)
            for (int ig = 0; ig < 4; ++ig)
                for (int mode = 0; mode < 3; ++mode, ++n) {
                    const Geo* g = &conv_shapes[s];
                    const int K = g->C / g->groups * g->kh * g->kw;
                    if (gks[ig] > K) continue; /* a block is at most K (lowbit.quant: group_size = min(block, K)) */
                    int64_t geo[16];
                    const int64_t work = (int64_t)g->B * geometry(g, geo) * K * (g->O / g->groups + 1);
                    if (work > 500000 && mode != (container / 4 + ig) % 3) continue; /* big: one scheme a block */
                    const ConvCase c = {*g, container == 4 ? 2 + n % 3 : 5 + n % 4, gks[ig], mode, n % 2,
                                        n / 2 % 4, 1 + (n % 3 == 0)};
                    snprintf(what, sizeof(what), "conv shape %d bits=%d gk=%d mode=%d act=%d bias=%d nt=%d", s,
                             c.bits, c.gk, mode, c.act, c.bias, c.nt);
                    tally(&t, run_conv(&c), c.act == 3 ? 1.5 * TOL : TOL, what);
                }
    static const float steps[] = {0.f, 0.03125f, 0.0173f}; /* none, a power of 2 (exact ties), another */
    for (int s = 0; s < ndw; ++s)
        for (int blocked = 0; blocked < 2; ++blocked)
            for (int is = 0; is < 3; ++is)
                for (int act = 0; act < 4; act += 1 + (s % 2), ++n) {
                    const Geo* g = &dw_shapes[s];
                    const int K = g->kh * g->kw;
                    const DwCase c = {*g, 2 + n % 7, blocked ? 4 + 4 * (K > 9) : K, n % 2, act, 1 + (n % 3 == 0), 0,
                                      steps[is], n % 2 ? 127.f : 100.f};
                    snprintf(what, sizeof(what), "dwconv shape %d bits=%d gk=%d step=%g act=%d bias=%d nt=%d", s,
                             c.bits, c.gk, c.step, act, c.bias, c.nt);
                    tally(&t, run_dw(&c), act == 3 ? 1.5 * TOL : TOL, what);
                }
    for (int s = 0; s < ndw; s += 3) { /* NaN / inf inputs are counted when rounding (and only then) */
        const DwCase c = {dw_shapes[s], 4, 9, 1, 0, 1 + s % 2, 1, 0.0173f, 127.f};
        snprintf(what, sizeof(what), "dwconv shape %d: the NaN / inf count", s);
        tally(&t, run_dw(&c), TOL, what);
    }
    return summary(&t);
}
