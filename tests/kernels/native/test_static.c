/* Checks the static INT8 kernels (lowbit_cpu_static.h, lowbit_cpu_static_pw.h; lowbit_cpu.c linked in) against a
   reference computed here from the same codes and scales (lowbit.kernels.cpu_static_int8 is the Python side):
   - lb_static_quant and lb_static_im2col exactly: the input codes round_half_even(x / a) clamped to +-c, plus the
     build's shift, at their places in the tiled activation layout (zero codes in the padding, the padded channels,
     the columns past K and the rows past M of the last tile), and their NaN / inf counts;
   - lb_static_gemm on them (row-major and transposed outputs, ReLU, bias, M past one chunk and K past one block of
     the kernel) and the dense conv it makes with lb_static_im2col (stride 2, dilation, 1x1, 5x5, 7x7), and
     lb_static_conv1x1 (the pointwise conv on NCHW, four fused activations): y = act(sum_k xq * wq * a * s + bias)
     from exact integer sums, |y - ref| <= TOL * (sum_k |xq * wq| * a * s + |bias|) (x 1.5 after hard-swish);
   with the packing of lowbit.kernels.cpu_static_int8 (pack_static_native, conv_weight_codes, pack_static_pw)
   written out here for the build's panel width NR, tile height MR and shift. 1 and 2 threads.
   Usage: test_static <expected lb_isa()>; prints a summary line; exits 1 on any failure. */
#include "driver.h"

int lb_static_shift(void);
int lb_static_mr(void);
int lb_static_nr(void);
int64_t lb_static_quant(const float* x, int64_t M, int64_t K, int64_t Kp, float a, int clamp, uint8_t* xt, int nt);
int64_t lb_static_im2col(const float* x, int64_t C, int64_t H, int64_t W, int64_t Cp, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t OH, int64_t OW,
                         float a, int clamp, int64_t Kp, uint8_t* cols, uint8_t* scratch, int nt);
void lb_static_gemm(const uint8_t* xt, int64_t M, int64_t Kp, const int8_t* w, const int32_t* wsum,
                    const float* scale, const float* bias, int64_t N, int relu, float* y, int64_t ldm, int64_t ldn,
                    int nt);
int64_t lb_static_conv1x1(const float* x, int64_t B, int64_t C, int64_t P, int64_t Kp, const uint8_t* wt, int64_t O,
                          const float* scale, const float* bias, int act, float a, int clamp, float* y, int nt);

#define TOL 2e-5

static int MR, NR, SHIFT; /* the build's tile height, panel width and activation shift */

static int round_up(int v, int m) { return (v + m - 1) / m * m; }

/* Byte (m, k) of the tiled activation layout (lb_static_quant): tiles of MR rows, per 4 columns MR x 4 bytes. */
static size_t at(int m, int k, int Kp) { return (size_t)(m / MR) * Kp * MR + (size_t)(k / 4) * MR * 4 + m % MR * 4 + k % 4; }

/* Fills x (n floats): activations, one in 8 an exact or near tie of x / a (exact when a is a power of 2). */
static void inputs(float* x, size_t n, float a) {
    for (size_t i = 0; i < n; ++i)
        x[i] = next_u32() % 8 ? activation() : ((float)(int)(next_u32() % 301) - 150.5f) * a;
}

/* The step: a power of 2 (exact ties) or not; codes of |x| <= 1 reach about +-60, outliers clamp. */
static float step_for(int i) { return i % 2 ? 1.f / 64 : 0.0173f; }

/* Random int8 codes (N, K) and weight scales (N). */
static void weight(int8_t* q, float* s, int N, int K) {
    for (int i = 0; i < N * K; ++i) q[i] = (int8_t)((int)(next_u32() % 255) - 127);
    for (int n = 0; n < N; ++n) s[n] = uniform(0.001f, 0.01f);
}

/* pack_static_native: codes (N, K) -> panels (Np / NR, Kp / 4, NR, 4), wsum (Np); scale = a * s and bias as (Np)
   vectors, 0 past N (native_epilogue). */
static void pack_gemm(const int8_t* q, const float* s, const float* bias, int N, int K, int Kp, float a, int8_t* w,
                      int32_t* wsum, float* scale, float* bv) {
    const int Np = round_up(N, NR);
    memset(w, 0, (size_t)Np * Kp);
    for (int n = 0; n < Np; ++n) {
        wsum[n] = 0;
        scale[n] = n < N ? a * s[n] : 0.f;
        bv[n] = n < N && bias ? bias[n] : 0.f;
        for (int k = 0; n < N && k < K; ++k) {
            w[(size_t)(n / NR) * Kp * NR + (size_t)(k / 4) * NR * 4 + n % NR * 4 + k % 4] = q[(size_t)n * K + k];
            wsum[n] += q[(size_t)n * K + k];
        }
    }
}

/* The error of y[m * ldm + n * ldn] (M, N) against act(sum_k xc[m, k] * q[n, k] * a * s[n] + bias[n]) from the
   float input codes xc (M, K) (worst over the outputs). */
static double check_rows(const float* y, int ldm, int ldn, const float* xc, const int8_t* q, const float* s,
                         const float* bias, int M, int N, int K, float a, int act) {
    double worst = 0.;
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
            int64_t acc = 0, mag = 0;
            for (int k = 0; k < K; ++k) {
                const int64_t t = (int64_t)xc[(size_t)m * K + k] * q[(size_t)n * K + k];
                acc += t;
                mag += t < 0 ? -t : t;
            }
            const double b = bias ? bias[n] : 0., sc = (double)a * s[n];
            const double e = rel_err(y[(size_t)m * ldm + (size_t)n * ldn], act_ref(acc * sc + b, act),
                                     mag * sc + fabs(b));
            worst = e > worst || isnan(e) ? e : worst;
        }
    return worst;
}

/* lb_static_quant (exact layout and NaN / inf count) then lb_static_gemm; M x K by N, clamp c; flags: ReLU, bias,
   a transposed output (ldm 1, ldn M), 2 threads, 3 non-finite inputs (then only the count is checked). */
static double run_gemm(int M, int K, int N, int c, int relu, int has_bias, int trans, int nt, int nonfinite,
                       float a) {
    const int Kp = round_up(K, 4), Mt = round_up(M, MR), Np = round_up(N, NR);
    float *x = malloc(sizeof(float) * M * K), *xc = malloc(sizeof(float) * M * K), *s = malloc(sizeof(float) * N);
    float *bias = guarded(N), *scale = guarded(Np), *bv = guarded(Np);
    float* y = malloc(sizeof(float) * M * N);
    uint8_t *xt = malloc((size_t)Mt * Kp), *ref = malloc((size_t)Mt * Kp);
    int8_t *q = malloc((size_t)N * K), *w = malloc((size_t)Np * Kp);
    int32_t* wsum = malloc(sizeof(int32_t) * Np);
    inputs(x, (size_t)M * K, a);
    if (nonfinite) {
        x[0] = NAN;
        x[M * K / 2] = INFINITY;
        x[M * K - 1] = -INFINITY;
    }
    weight(q, s, N, K);
    for (int n = 0; n < N; ++n) bias[n] = uniform(-1.f, 1.f);
    memset(ref, SHIFT, (size_t)Mt * Kp);
    for (int m = 0; m < M; ++m)
        for (int k = 0; k < K; ++k) {
            xc[(size_t)m * K + k] = code_ref(x[(size_t)m * K + k], a, (float)c);
            ref[at(m, k, Kp)] = (uint8_t)((int)xc[(size_t)m * K + k] + SHIFT);
        }
    const int64_t bad = lb_static_quant(x, M, K, Kp, a, c, xt, nt);
    double worst = bad == 3 * nonfinite ? 0. : -1.;
    if (!nonfinite) {
        worst = memcmp(xt, ref, (size_t)Mt * Kp) ? -1. : 0.;
        pack_gemm(q, s, has_bias ? bias : NULL, N, K, Kp, a, w, wsum, scale, bv);
        for (int i = 0; i < M * N; ++i) y[i] = NAN;
        lb_static_gemm(xt, M, Kp, w, wsum, scale, has_bias ? bv : NULL, N, relu, y, trans ? 1 : N, trans ? M : 1, nt);
        const double e = check_rows(y, trans ? 1 : N, trans ? M : 1, xc, q, s, has_bias ? bias : NULL, M, N, K, a,
                                    relu);
        worst = worst < 0. ? worst : e;
    }
    free(x); free(xc); free(s); free(bias); free(scale); free(bv); free(y); free(xt); free(ref); free(q); free(w);
    free(wsum);
    return worst;
}

typedef struct {
    int B, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw;
} SGeo;

/* native_conv2d_static per image: lb_static_im2col (columns (i, j, c), Cp channels: checked exactly) and
   lb_static_gemm written straight into NCHW (ldm 1, ldn OH * OW); image 0 holds a NaN when nonfinite (its count
   checked, the other images' outputs too). */
static double run_im2col(const SGeo* g, int c, int relu, int has_bias, int nt, int nonfinite, float a) {
    const int OH = (g->H + 2 * g->ph - g->dh * (g->kh - 1) - 1) / g->sh + 1;
    const int OW = (g->W + 2 * g->pw - g->dw * (g->kw - 1) - 1) / g->sw + 1, L = OH * OW;
    const int Cp = round_up(g->C, 4), K = g->kh * g->kw * Cp, Kp = K, Lt = round_up(L, MR), Np = round_up(g->O, NR);
    const int HW = g->H * g->W, O = g->O, K0 = g->C * g->kh * g->kw;
    float *x = malloc(sizeof(float) * g->B * g->C * HW), *s = malloc(sizeof(float) * O);
    float *xc = malloc(sizeof(float) * L * K), *y = malloc(sizeof(float) * O * L), *bias = guarded(O);
    float *scale = guarded(Np), *bv = guarded(Np);
    int8_t *q0 = malloc((size_t)O * K0), *q = malloc((size_t)O * K), *w = malloc((size_t)Np * Kp);
    int32_t* wsum = malloc(sizeof(int32_t) * Np);
    uint8_t *cols = malloc((size_t)Lt * Kp), *ref = malloc((size_t)Lt * Kp), *scratch = malloc((size_t)2 * Cp * HW);
    inputs(x, (size_t)g->B * g->C * HW, a);
    if (nonfinite) x[HW / 2] = NAN;
    weight(q0, s, O, K0);
    for (int o = 0; o < O; ++o) bias[o] = uniform(-1.f, 1.f);
    for (int o = 0; o < O; ++o) /* conv_weight_codes: (c, i, j) -> (i, j, c), zero codes past C */
        for (int i = 0; i < g->kh; ++i)
            for (int j = 0; j < g->kw; ++j)
                for (int ch = 0; ch < Cp; ++ch)
                    q[(size_t)o * K + (i * g->kw + j) * Cp + ch] =
                        ch < g->C ? q0[(size_t)o * K0 + (ch * g->kh + i) * g->kw + j] : 0;
    pack_gemm(q, s, has_bias ? bias : NULL, O, K, Kp, a, w, wsum, scale, bv);
    double worst = 0.;
    for (int b = 0; b < g->B; ++b) {
        const float* xb = x + (size_t)b * g->C * HW;
        memset(ref, SHIFT, (size_t)Lt * Kp);
        for (int l = 0; l < L; ++l)
            for (int k = 0; k < K; ++k) {
                const int i = k / Cp / g->kw, j = k / Cp % g->kw, ch = k % Cp;
                const int ih = l / OW * g->sh - g->ph + i * g->dh, iw = l % OW * g->sw - g->pw + j * g->dw;
                const int inside = ch < g->C && ih >= 0 && ih < g->H && iw >= 0 && iw < g->W;
                xc[(size_t)l * K + k] = inside ? code_ref(xb[(size_t)ch * HW + ih * g->W + iw], a, (float)c) : 0.f;
                ref[at(l, k, Kp)] = (uint8_t)((int)xc[(size_t)l * K + k] + SHIFT);
            }
        const int64_t bad = lb_static_im2col(xb, g->C, g->H, g->W, Cp, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw,
                                             g->dh, g->dw, OH, OW, a, c, Kp, cols, scratch, nt);
        if (bad != (nonfinite && b == 0)) {
            worst = -1.;
            break;
        }
        if (nonfinite && b == 0) continue;
        if (memcmp(cols, ref, (size_t)Lt * Kp)) {
            worst = -1.;
            break;
        }
        for (int i = 0; i < O * L; ++i) y[i] = NAN;
        lb_static_gemm(cols, L, Kp, w, wsum, scale, has_bias ? bv : NULL, O, relu, y, 1, L, nt);
        const double e = check_rows(y, 1, L, xc, q, s, has_bias ? bias : NULL, L, O, K, a, relu);
        worst = e > worst || isnan(e) ? e : worst;
    }
    free(x); free(s); free(xc); free(y); free(bias); free(scale); free(bv); free(q0); free(q); free(w); free(wsum);
    free(cols); free(ref); free(scratch);
    return worst;
}

/* lb_static_conv1x1 on (B, C, H * W) with the weight tiles of pack_static_pw (codes + shift, (Op / MR, Kp / 4, MR,
   4)); nonfinite: an inf in the last image (its count checked, the other images' outputs too). */
static double run_pw(int B, int C, int P, int O, int c, int act, int has_bias, int nt, int nonfinite, float a) {
    const int Kp = round_up(C, 4), Op = round_up(O, MR);
    float *x = malloc(sizeof(float) * B * C * P), *s = malloc(sizeof(float) * O), *bias = guarded(O);
    float *scale = guarded(O), *y = malloc(sizeof(float) * B * O * P);
    float* xc = malloc(sizeof(float) * P * C);
    int8_t* q = malloc((size_t)O * C);
    uint8_t* wt = malloc((size_t)Op * Kp);
    inputs(x, (size_t)B * C * P, a);
    if (nonfinite) x[(size_t)B * C * P - 1] = INFINITY;
    weight(q, s, O, C);
    for (int o = 0; o < O; ++o) {
        bias[o] = uniform(-1.f, 1.f);
        scale[o] = a * s[o];
    }
    memset(wt, SHIFT, (size_t)Op * Kp);
    for (int o = 0; o < O; ++o)
        for (int k = 0; k < C; ++k) wt[at(o, k, Kp)] = (uint8_t)(q[(size_t)o * C + k] + SHIFT);
    for (int i = 0; i < B * O * P; ++i) y[i] = NAN;
    const int64_t bad = lb_static_conv1x1(x, B, C, P, Kp, wt, O, scale, has_bias ? bias : NULL, act, a, c, y, nt);
    double worst = bad == nonfinite ? 0. : -1.;
    for (int b = 0; b < B - nonfinite && worst >= 0.; ++b) {
        for (int p = 0; p < P; ++p) /* the image's codes as rows of pixels */
            for (int k = 0; k < C; ++k) xc[(size_t)p * C + k] = code_ref(x[((size_t)b * C + k) * P + p], a, (float)c);
        const double e = check_rows(y + (size_t)b * O * P, 1, P, xc, q, s, has_bias ? bias : NULL, P, O, C, a, act);
        worst = e > worst || isnan(e) ? e : worst;
    }
    free(x); free(s); free(bias); free(scale); free(y); free(xc); free(q); free(wt);
    return worst;
}

int main(int argc, char** argv) {
    if (!check_isa(argc, argv)) return 1;
    MR = lb_static_mr();
    NR = lb_static_nr();
    SHIFT = lb_static_shift();
    Tally t = {0, 0, 0.};
    char what[160];
    int n = 0;
    /* M, K, N: one row; odd M, N; N past one panel; K past the kernel's K block (1024); M past its row chunk (510
       rows with AVX-512, else 2046) */
    static const int gemms[][3] = {{1, 3, 1},   {5, 20, 17},   {7, 64, 70}, {13, 100, 33}, {6, 1100, 20},
                                   {2050, 8, 20}, {40, 300, 130}, {25, 4, 64}, {600, 36, 65}};
    for (int i = 0; i < (int)(sizeof(gemms) / sizeof(gemms[0])); ++i)
        for (int v = 0; v < 4; ++v, ++n) {
            const int M = gemms[i][0], K = gemms[i][1], N = gemms[i][2], c = v % 2 ? 127 : 50, relu = v / 2;
            snprintf(what, sizeof(what), "gemm M=%d K=%d N=%d clamp=%d relu=%d bias=%d transposed=%d nt=%d", M, K,
                     N, c, relu, n % 2, n / 2 % 2, 1 + n % 3 / 2);
            tally(&t, run_gemm(M, K, N, c, relu, n % 2, n / 2 % 2, 1 + n % 3 / 2, 0, step_for(n)), TOL, what);
        }
    snprintf(what, sizeof(what), "lb_static_quant's NaN / inf count");
    tally(&t, run_gemm(9, 13, 1, 127, 0, 0, 0, 1, 1, 0.0173f), TOL, what);
    /* B, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw */
    static const SGeo convs[] = {
        {2, 3, 9, 9, 8, 3, 3, 1, 1, 1, 1, 1, 1},   {1, 6, 10, 11, 20, 3, 3, 2, 2, 1, 1, 1, 1},
        {1, 5, 8, 8, 4, 3, 3, 1, 1, 2, 2, 2, 2},   {1, 16, 7, 7, 70, 1, 1, 1, 1, 0, 0, 1, 1},
        {1, 4, 12, 12, 5, 5, 5, 2, 2, 2, 2, 1, 1}, {1, 2, 9, 9, 3, 7, 7, 2, 2, 3, 3, 1, 1},
        {2, 7, 8, 9, 6, 3, 2, 2, 1, 0, 1, 1, 2},   {1, 64, 24, 24, 8, 3, 3, 1, 1, 1, 1, 1, 1}, /* 2 threads */
    };
    for (int i = 0; i < (int)(sizeof(convs) / sizeof(convs[0])); ++i)
        for (int v = 0; v < 2; ++v, ++n) {
            snprintf(what, sizeof(what), "im2col conv %d clamp=%d relu=%d bias=%d nt=%d", i, v ? 127 : 50, n % 2,
                     n / 2 % 2, 1 + v);
            tally(&t, run_im2col(&convs[i], v ? 127 : 50, n % 2, n / 2 % 2, 1 + v, 0, step_for(n)), TOL, what);
        }
    snprintf(what, sizeof(what), "lb_static_im2col's NaN count");
    tally(&t, run_im2col(&convs[0], 127, 0, 1, 1, 1, 0.0173f), TOL, what);
    /* B, C, P, O: odd C and O, one pixel, P past one panel, enough work for 2 threads */
    static const int pws[][4] = {{1, 3, 25, 4}, {2, 16, 63, 13}, {1, 40, 100, 70}, {1, 7, 1, 1},
                                 {1, 64, 289, 33}, {1, 128, 400, 40}, {1, 5, 33, 7}};
    for (int i = 0; i < (int)(sizeof(pws) / sizeof(pws[0])); ++i)
        for (int act = 0; act < 4; ++act, ++n) {
            snprintf(what, sizeof(what), "conv1x1 B=%d C=%d P=%d O=%d act=%d bias=%d nt=%d", pws[i][0], pws[i][1],
                     pws[i][2], pws[i][3], act, n % 2, 1 + n % 3 / 2);
            tally(&t, run_pw(pws[i][0], pws[i][1], pws[i][2], pws[i][3], n % 2 ? 127 : 50, act, n % 2,
                             1 + n % 3 / 2, 0, step_for(n)), act == 3 ? 1.5 * TOL : TOL, what);
        }
    snprintf(what, sizeof(what), "lb_static_conv1x1's inf count");
    tally(&t, run_pw(2, 16, 63, 13, 127, 1, 1, 1, 1, 0.0173f), TOL, what);
    return summary(&t);
}
