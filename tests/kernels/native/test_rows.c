/* Checks the native kernels' entry points (lb_quant_act, lb_gemm_q4, lb_gemm_q8 of lowbit_cpu.c, linked in) against
   a scalar reference: activation quantization exactly (it is integer rounding of the same float products), the GEMMs
   in double, over codes of 2..8 bits, per-row and blocked groups (32, 64, 128; K not a multiple of the block),
   activation scales per row, per weight block and per 32 columns (mode 0/1/2 of lb_quant_act), odd M and N, bias or
   none, 1 and 2 threads, and an all-maximum case whose dot overflows int32 unless flushed; and the fp32-activation
   GEMM (lb_gemm_f32) and lb_dequant against w = (q - z) * s in double.
   Built and run by tests/kernels/test_native_arm.py: natively once per x86 variant, cross-compiled per ARM variant under
   qemu-aarch64. Usage: test_rows <expected lb_isa()>; prints a summary line; exits 1 on any failure. */
#include "driver.h"

void lb_quant_act(const float* x, int64_t M, int64_t K, int64_t Kp, int64_t gk, int64_t nb, int mode,
                  int8_t* xq, float* xd, float* xs, int nt);
void lb_gemm_q4(const uint8_t* w, const float* ws, const float* wsz, int64_t N, int64_t Kp, int64_t gsb, int64_t nb,
                const int8_t* xq, const float* xd, const float* xs, int64_t M, int mode, const float* bias,
                float* y, int nt);
void lb_gemm_q8(const uint8_t* w, const float* ws, const float* wsz, int64_t N, int64_t Kp, int64_t gsb, int64_t nb,
                const int8_t* xq, const float* xd, const float* xs, int64_t M, int mode, const float* bias,
                float* y, int nt);
void lb_gemm_f32(const uint8_t* w, const float* ws, const float* wsz, int64_t N, int64_t Kp, int64_t gsb, int64_t nb,
                 const float* x, int64_t M, const float* bias, float* y, int nt, int bits);
void lb_dequant(const uint8_t* w, const float* ws, const float* wsz, int64_t n0, int64_t n1, int64_t K, int64_t Kp,
                int64_t gsb, int64_t nb, float* out, int nt, int bits);

/* |y - ref| <= TOL * (the sum of |terms| of ref): fp32 block accumulation stays near 1e-7 of it; one wrong code,
   scale or padding byte costs ~1 / K of it or more (>= 1e-3 at the largest K of the random cases). */
#define TOL 2e-5

typedef struct {
    int bits, M, N, K, gk, mode, bias, nt, extreme; /* gk 0: one block per row; mode: 0 block, 1 row, 2 per 32 */
} Case;

/* Runs one case; returns its largest |y - ref| / magnitude, or a negative number when quantization is not exact. */
static double run_case(const Case* c) {
    const int M = c->M, N = c->N, K = c->K, Kp = (K + 63) / 64 * 64;
    const int gk = c->gk ? c->gk : Kp, nb = (K + gk - 1) / gk, qmax = (1 << c->bits) - 1;
    float* x = malloc(sizeof(float) * M * K);
    uint8_t* codes = malloc((size_t)N * K);
    uint8_t* w = malloc((size_t)N * Kp);
    float *ws = guarded((size_t)N * nb), *wz = guarded((size_t)N * nb);
    float *wsz = guarded((size_t)N * nb), *bias = guarded(N);
    int8_t *xq = malloc((size_t)M * Kp), *rq = malloc((size_t)M * Kp);
    float *xd = malloc(sizeof(float) * M * (Kp / 32 > nb ? Kp / 32 : nb)), *xs = malloc(sizeof(float) * M * nb);
    const int nsb = Kp / 32;
    float* rd = calloc((size_t)M * (nsb > nb ? nsb : nb), sizeof(float)); /* 0 past K, as lb_quant_act */
    float* y = malloc(sizeof(float) * M * N);
    for (int i = 0; i < M * K; ++i) x[i] = c->extreme ? 1.f : uniform(-1.f, 1.f) * (next_u32() % 50 ? 1.f : 8.f);
    for (int i = 0; i < N * K; ++i) codes[i] = c->extreme ? (uint8_t)qmax : (uint8_t)(next_u32() % (qmax + 1));
    for (int i = 0; i < N * nb; ++i) {
        ws[i] = uniform(0.002f, 0.03f);
        wz[i] = c->extreme ? 0.f : uniform(0.f, (float)qmax); /* zeros may be any float (HQQ) */
        wsz[i] = ws[i] * wz[i];
    }
    for (int n = 0; n < N; ++n) bias[n] = uniform(-1.f, 1.f);
    pack(codes, N, K, Kp, c->bits, w);

    /* quantization: xq, xd exact; xs = d * sum(q) per weight block (summed over 32-column pieces in mode 2) */
    lb_quant_act(x, M, K, Kp, gk, nb, c->mode, xq, xd, xs, c->nt);
    memset(rq, 0, (size_t)M * Kp);
    int exact = 1;
    for (int m = 0; m < M; ++m) {
        float d = 0.f;
        if (c->mode == 1) ref_quant_block(x + m * K, K, rq + m * Kp, &d);
        for (int b = 0; b < nb; ++b) {
            const int lo = b * gk, hi = lo + gk < K ? lo + gk : K;
            if (c->mode == 2) {
                float s = 0.f;
                for (int j = lo / 32; j * 32 < hi; ++j) {
                    const int n = hi - j * 32 < 32 ? hi - j * 32 : 32;
                    ref_quant_block(x + m * K + j * 32, n, rq + m * Kp + j * 32, &rd[m * nsb + j]);
                    int32_t qs = 0;
                    for (int k = j * 32; k < j * 32 + n; ++k) qs += rq[m * Kp + k];
                    s += rd[m * nsb + j] * (float)qs;
                    exact &= xd[m * nsb + j] == rd[m * nsb + j];
                }
                exact &= xs[m * nb + b] == s;
                continue;
            }
            if (c->mode == 0) ref_quant_block(x + m * K + lo, hi - lo, rq + m * Kp + lo, &d);
            int32_t s = 0;
            for (int k = lo; k < hi; ++k) s += rq[m * Kp + k];
            rd[m * nb + b] = d;
            exact &= xd[m * nb + b] == d && xs[m * nb + b] == d * (float)s;
        }
        if (c->mode == 2)
            for (int j = (K + 31) / 32; j < nsb; ++j) exact &= xd[m * nsb + j] == 0.f;
    }
    exact &= memcmp(xq, rq, (size_t)M * Kp) == 0;

    /* GEMM against the double reference from the reference quantization */
    (c->bits <= 4 ? lb_gemm_q4 : lb_gemm_q8)(w, ws, wsz, N, Kp, gk / 32, nb, rq, rd, xs, M, c->mode,
                                              c->bias ? bias : NULL, y, c->nt);
    double worst = 0.;
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
            double ref = c->bias ? bias[n] : 0., mag = fabs(ref);
            for (int k0 = 0; k0 < K; k0 += 32) { /* one 32-column piece at a time: its scale d, its block b */
                const int b = k0 / gk, k1 = k0 + 32 < K ? k0 + 32 : K;
                double dot = 0., adot = 0., asum = 0.;
                for (int k = k0; k < k1; ++k) {
                    const double q = codes[(size_t)n * K + k], a = rq[m * Kp + k];
                    dot += q * a;
                    adot += fabs(q * a);
                    asum += a;
                }
                const double d = c->mode == 2 ? rd[m * nsb + k0 / 32] : rd[m * nb + b];
                ref += d * ((double)ws[n * nb + b] * dot - (double)wsz[n * nb + b] * asum);
                mag += d * (fabs((double)ws[n * nb + b]) * adot + fabs((double)wsz[n * nb + b] * asum));
            }
            const double err = fabs((double)y[m * N + n] - ref) / (mag > 0. ? mag : 1.);
            worst = err > worst || isnan(err) ? err : worst;
        }
    free(x); free(codes); free(w); free(ws); free(wz); free(wsz); free(bias);
    free(xq); free(rq); free(xd); free(xs); free(rd); free(y);
    return exact ? worst : -1.;
}

/* fp32 activations: lb_gemm_f32 against sum_k (q - z) * s * x in double, and lb_dequant against (q - z) * s.
   |error| <= TOL * sum_k (|q * s| + |s * z|) * |x|: fp32 dequantization (one fma) and summation stay near 1e-7 of
   it. */
static double run_case_f32(const Case* c) {
    const int M = c->M, N = c->N, K = c->K, Kp = (K + 63) / 64 * 64;
    const int gk = c->gk ? c->gk : Kp, nb = (K + gk - 1) / gk, qmax = (1 << c->bits) - 1;
    float* x = calloc((size_t)M * Kp, sizeof(float));
    uint8_t* codes = malloc((size_t)N * K);
    uint8_t* w = malloc((size_t)N * Kp);
    float *ws = guarded((size_t)N * nb), *wz = guarded((size_t)N * nb);
    float *wsz = guarded((size_t)N * nb), *bias = guarded(N);
    float *y = malloc(sizeof(float) * M * N), *wd = malloc(sizeof(float) * N * K);
    for (int m = 0; m < M; ++m)
        for (int k = 0; k < K; ++k) x[m * Kp + k] = uniform(-1.f, 1.f) * (next_u32() % 50 ? 1.f : 8.f);
    for (int i = 0; i < N * K; ++i) codes[i] = (uint8_t)(next_u32() % (qmax + 1));
    for (int i = 0; i < N * nb; ++i) {
        ws[i] = uniform(0.002f, 0.03f);
        wz[i] = uniform(0.f, (float)qmax);
        wsz[i] = ws[i] * wz[i];
    }
    for (int n = 0; n < N; ++n) bias[n] = uniform(-1.f, 1.f);
    pack(codes, N, K, Kp, c->bits, w);
    const int cb = c->bits <= 4 ? 4 : 8;
    lb_gemm_f32(w, ws, wsz, N, Kp, gk / 32, nb, x, M, c->bias ? bias : NULL, y, c->nt, cb);
    lb_dequant(w, ws, wsz, 0, N, K, Kp, gk / 32, nb, wd, c->nt, cb);
    double worst = 0.;
    for (int n = 0; n < N; ++n)
        for (int k = 0; k < K; ++k) {
            const int b = n * nb + k / gk;
            const double q = codes[(size_t)n * K + k], ref = (q - wz[b]) * ws[b];
            const double err = fabs(wd[(size_t)n * K + k] - ref) / (q * ws[b] + wsz[b] + 1e-30);
            worst = err > worst || isnan(err) ? err : worst;
        }
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
            double ref = c->bias ? bias[n] : 0., mag = fabs(ref);
            for (int k = 0; k < K; ++k) {
                const int b = n * nb + k / gk;
                const double q = codes[(size_t)n * K + k], a = x[m * Kp + k];
                ref += (q - wz[b]) * ws[b] * a;
                mag += (q * ws[b] + wsz[b]) * fabs(a);
            }
            const double err = fabs((double)y[m * N + n] - ref) / (mag > 0. ? mag : 1.);
            worst = err > worst || isnan(err) ? err : worst;
        }
    free(x); free(codes); free(w); free(ws); free(wz); free(wsz); free(bias); free(y); free(wd);
    return worst;
}

int main(int argc, char** argv) {
    const int want_isa = argc > 1 ? atoi(argv[1]) : -1;
    if (want_isa >= 0 && lb_isa() != want_isa) {
        printf("FAIL lb_isa() = %d, expected %d\n", lb_isa(), want_isa);
        return 1;
    }
    /* (M, N): M < 4, = 4, past 4 (tiles of 4 rows) and past 32 (chunks of 32 rows); N odd, < 16 and past 16 (tasks
       of 16 weight rows) */
    static const int shapes[][2] = {{1, 1}, {1, 33}, {3, 19}, {4, 16}, {9, 18}, {33, 3}};
    static const int ks[] = {32, 100, 320, 576}; /* Kp 64 with a block of 128; partial last blocks */
    static const int gks[] = {0, 32, 64, 128};
    int ncase = 0, nfail = 0;
    double worst = 0.;
    for (int bits = 8; bits >= 2; --bits) /* 8-bit codes first: usdot (i8mm) runs at once */
        for (int ig = 0; ig < 4; ++ig)
            for (int ik = 0; ik < 4; ++ik)
                for (int is = 0; is < 6; ++is)
                    for (int mode = 0; mode < 3; ++mode) {
                        const Case c = {bits, shapes[is][0], shapes[is][1], ks[ik], gks[ig], mode,
                                        (ncase & 1), 1 + (ncase % 3 == 0), 0};
                        const double e = run_case(&c);
                        ++ncase;
                        worst = e > worst ? e : worst;
                        if (!(e >= 0. && e <= TOL)) {
                            ++nfail;
                            printf("FAIL bits=%d M=%d N=%d K=%d gk=%d mode=%d: %s %.3g\n", bits, c.M, c.N, c.K,
                                   c.gk, mode, e < 0. ? "quantization not exact" : "relative error", e);
                        }
                    }
    /* all codes at their maximum, all activations 127: one block of 70000 codes, whose dot (2.27e9) overflows int32
       unless the kernels flush it to fp32 (every 1024 sub-blocks of 32) */
    /* and from 17 rows the tiled kernels (tile512, tile256: int16 sums of maddubs at their bound 8 * 2 * 15 * 127) */
    for (int bits = 4; bits <= 8; bits += 4)
        for (int mode = 0; mode < 6; ++mode) {
            const Case c = {bits, mode < 3 ? 3 : 17, 3, 70000, 0, mode % 3, 1, 1, 1};
            /* per 32 columns (mode 2) the 2188 pieces are summed in fp32 (8 lanes of 274 terms: <= 274 * 6e-8) */
            const double tol = mode % 3 == 2 ? 20 * TOL : TOL, e = run_case(&c);
            ++ncase;
            worst = e * TOL / tol > worst ? e * TOL / tol : worst; /* reported on the scale of TOL */
            if (!(e >= 0. && e <= tol)) {
                ++nfail;
                printf("FAIL extreme bits=%d M=%d mode=%d: %.3g\n", bits, c.M, mode % 3, e);
            }
        }
    for (int bits = 8; bits >= 2; --bits) /* fp32 activations */
        for (int ig = 0; ig < 4; ++ig)
            for (int ik = 0; ik < 4; ++ik)
                for (int is = 0; is < 6; ++is) {
                    const Case c = {bits, shapes[is][0], shapes[is][1], ks[ik], gks[ig], 3, (ncase & 1),
                                    1 + (ncase % 3 == 0), 0};
                    const double e = run_case_f32(&c);
                    ++ncase;
                    worst = e > worst ? e : worst;
                    if (!(e <= TOL)) {
                        ++nfail;
                        printf("FAIL fp32 bits=%d M=%d N=%d K=%d gk=%d: relative error %.3g\n", bits, c.M, c.N, c.K,
                               c.gk, e);
                    }
                }
    printf("isa=%d cases=%d failed=%d max_rel_err=%.3g tol=%.1g\n", lb_isa(), ncase, nfail, worst, TOL);
    return nfail ? 1 : 0;
}
