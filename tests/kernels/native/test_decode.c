/* C test driver of lowbit_cpu_decode.h (a decoded token's fp32 glue: RMSNorm, residual + RMSNorm, rotary, the
   SiLU-gated product, one query's grouped attention, the finiteness test) against double references computed here,
   so the same checks run on every ISA variant, the ARM ones under qemu (tests/kernels/test_native_arm.py). */
#include "driver.h"

void lb_rms_norm(const float* x, const float* w, float* out, int64_t rows, int64_t n, float eps);
void lb_add_rms_norm(float* x, const float* y, const float* w, float* out, int64_t rows, int64_t n, float eps);
void lb_rope(float* x, const float* cos_, const float* sin_, int64_t heads, int64_t d, int64_t stride);
void lb_silu_mul(const float* gu, float* out, int64_t n);
void lb_attend1(const float* q, const float* k, const float* v, float* out, int64_t heads, int64_t kv, int64_t L,
                int64_t d, int64_t head_stride, float scale, int nt);
int lb_all_finite(const float* x, int64_t n);

#define TOL 4e-6 /* fp32 sums in another order, a polynomial exp: measured <= 1.5e-6 of an output's sum of |terms| */

static float* randoms(size_t n) {
    float* p = guarded(n);
    for (size_t i = 0; i < n; ++i) p[i] = activation();
    return p;
}

static double norm_case(int rows, int n, int residual) {
    float *x = randoms((size_t)rows * n), *y = randoms((size_t)rows * n), *w = randoms((size_t)n);
    float* out = guarded((size_t)rows * n);
    double* acc = malloc(sizeof(double) * rows * n);
    for (int i = 0; i < rows * n; ++i) acc[i] = (double)x[i] + (residual ? (double)y[i] : 0.);
    if (residual) lb_add_rms_norm(x, y, w, out, rows, n, 1e-5f);
    else lb_rms_norm(x, w, out, rows, n, 1e-5f);
    double worst = 0.;
    for (int r = 0; r < rows; ++r) {
        double ss = 0.;
        for (int i = 0; i < n; ++i) ss += acc[r * n + i] * acc[r * n + i];
        const double inv = 1. / sqrt(ss / n + 1e-5);
        for (int i = 0; i < n; ++i) {
            const double ref = acc[r * n + i] * inv * w[i];
            double e = rel_err(out[r * n + i], ref, fabs(ref) + 1e-30);
            if (residual) e = fmax(e, rel_err(x[r * n + i], acc[r * n + i], fabs(acc[r * n + i]) + 1e-30));
            worst = fmax(worst, e);
        }
    }
    free(x), free(y), free(w), free(out), free(acc);
    return worst;
}

static double rope_case(int heads, int d) {
    float *x = randoms((size_t)(heads + 1) * d), *c = guarded(d), *s = guarded(d);
    float* orig = malloc(sizeof(float) * (heads + 1) * d);
    memcpy(orig, x, sizeof(float) * (heads + 1) * d);
    for (int i = 0; i < d / 2; ++i) {
        const double a = uniform(0.f, 6.f);
        c[i] = c[i + d / 2] = (float)cos(a);
        s[i] = s[i + d / 2] = (float)sin(a);
    }
    lb_rope(x, c, s, heads, d, d);
    double worst = 0.;
    const int h = d / 2;
    for (int r = 0; r < heads; ++r)
        for (int i = 0; i < d; ++i) {
            const double a = orig[r * d + i], b = i < h ? -orig[r * d + i + h] : orig[r * d + i - h];
            const double ref = a * c[i] + b * s[i], mag = fabs(a * c[i]) + fabs(b * s[i]);
            worst = fmax(worst, rel_err(x[r * d + i], ref, mag));
        }
    for (int i = 0; i < d; ++i) /* the row past `heads` untouched */
        if (x[heads * d + i] != orig[heads * d + i]) worst = -1.;
    free(x), free(c), free(s), free(orig);
    return worst;
}

static double silu_case(int n) {
    float *gu = guarded(2 * (size_t)n), *out = guarded((size_t)n);
    for (int i = 0; i < n; ++i) {
        gu[i] = i < 6 ? (float[]){-120.f, -88.f, -30.f, 0.f, 30.f, 90.f}[i] : uniform(-12.f, 12.f);
        gu[n + i] = activation();
    }
    lb_silu_mul(gu, out, n);
    double worst = 0.;
    for (int i = 0; i < n; ++i) {
        const double g = gu[i], ref = g / (1. + exp(-g)) * gu[n + i];
        worst = fmax(worst, rel_err(out[i], ref, fmax(fabs(ref), 1e-30)));
    }
    free(gu), free(out);
    return worst;
}

static double attention_case(int heads, int kv, int d, int L, int rows, int nt) {
    float *q = randoms((size_t)heads * d), *k = randoms((size_t)kv * rows * d), *v = randoms((size_t)kv * rows * d);
    float* out = guarded((size_t)heads * d);
    const float scale = 1.f / sqrtf((float)d);
    lb_attend1(q, k, v, out, heads, kv, L, d, (int64_t)rows * d, scale, nt);
    double worst = 0.;
    double* p = malloc(sizeof(double) * L);
    for (int h = 0; h < heads; ++h) {
        const float* kh = k + (size_t)(h / (heads / kv)) * rows * d;
        const float* vh = v + (size_t)(h / (heads / kv)) * rows * d;
        double top = -INFINITY, total = 0.;
        for (int j = 0; j < L; ++j) {
            double s = 0.;
            for (int i = 0; i < d; ++i) s += (double)q[h * d + i] * kh[j * d + i];
            p[j] = s * scale;
            top = fmax(top, p[j]);
        }
        for (int j = 0; j < L; ++j) total += p[j] = exp(p[j] - top);
        for (int i = 0; i < d; ++i) {
            double ref = 0., mag = 0.;
            for (int j = 0; j < L; ++j) ref += p[j] / total * vh[j * d + i], mag += p[j] / total * fabs(vh[j * d + i]);
            worst = fmax(worst, rel_err(out[h * d + i], ref, mag));
        }
    }
    free(q), free(k), free(v), free(out), free(p);
    return worst;
}

static double finite_case(void) {
    float x[100];
    for (int i = 0; i < 100; ++i) x[i] = activation();
    int wrong = lb_all_finite(x, 100) != 1;
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int b = 0; b < 3; ++b)
        for (int at = 0; at < 100; at += 33) {
            const float keep = x[at];
            x[at] = bad[b];
            wrong += lb_all_finite(x, 100) != 0;
            x[at] = keep;
        }
    return wrong ? -1. : 0.;
}

int main(int argc, char** argv) {
    if (!check_isa(argc, argv)) return 1;
    Tally t = {0};
    char what[160];
    static const int norms[][2] = {{1, 2048}, {2, 100}, {3, 7}};
    for (int i = 0; i < 3; ++i)
        for (int residual = 0; residual < 2; ++residual) {
            snprintf(what, sizeof(what), "rms_norm rows=%d n=%d residual=%d", norms[i][0], norms[i][1], residual);
            tally(&t, norm_case(norms[i][0], norms[i][1], residual), TOL, what);
        }
    static const int ropes[][2] = {{40, 64}, {3, 128}, {5, 80}, {1, 2}};
    for (int i = 0; i < 4; ++i) {
        snprintf(what, sizeof(what), "rope heads=%d d=%d", ropes[i][0], ropes[i][1]);
        tally(&t, rope_case(ropes[i][0], ropes[i][1]), TOL, what);
    }
    static const int silus[] = {5632, 17, 6};
    for (int i = 0; i < 3; ++i) {
        snprintf(what, sizeof(what), "silu_mul n=%d", silus[i]);
        tally(&t, silu_case(silus[i]), TOL, what);
    }
    /* heads, kv, d, L, rows allocated, threads: grouped (d % 16 == 0, groups <= 8) and per-head paths, scores
       past the stack buffer, a prefix of a larger cache, 2 threads */
    static const int atts[][6] = {{32, 8, 64, 40, 40, 1}, {32, 8, 64, 300, 310, 2}, {4, 4, 128, 1, 1, 1},
                                  {6, 2, 80, 7, 20, 1},   {16, 1, 64, 700, 700, 1}, {18, 1, 32, 9, 9, 2},
                                  {8, 2, 32, 129, 129, 2}};
    for (int i = 0; i < 7; ++i) {
        const int* a = atts[i];
        snprintf(what, sizeof(what), "attend1 heads=%d kv=%d d=%d L=%d rows=%d nt=%d", a[0], a[1], a[2], a[3], a[4],
                 a[5]);
        tally(&t, attention_case(a[0], a[1], a[2], a[3], a[4], a[5]), TOL, what);
    }
    tally(&t, finite_case(), TOL, "all_finite");
    return summary(&t);
}
