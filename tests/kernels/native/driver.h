/* What the C test drivers of the native kernels share (test_rows.c, test_conv.c, test_static.c): a seeded xorshift
   generator, pack_q4 / pack_q8's layout, and the summary line tests/kernels/test_native_arm.py parses. */
#ifndef LB_TEST_DRIVER_H
#define LB_TEST_DRIVER_H
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lb_isa(void);

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static inline uint32_t next_u32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}
static inline float uniform(float lo, float hi) { return lo + (hi - lo) * (float)(next_u32() % 1000003) / 1000003.f; }
/* an activation: uniform in [-1, 1], one in 50 times 8 (outliers set the int8 scales) */
static inline float activation(void) { return uniform(-1.f, 1.f) * (next_u32() % 50 ? 1.f : 8.f); }

/* n floats followed by 16 NaN: a kernel reading a scale or bias vector past its end turns an output NaN. */
static inline float* guarded(size_t n) {
    float* p = (float*)malloc(sizeof(float) * (n + 16));
    for (size_t i = n; i < n + 16; ++i) p[i] = NAN;
    return p;
}

/* lb_quant_act's rounding of n values with one scale: d = amax / 127, q = round(x * (127 / amax)), written out in
   scalar float (the kernels' codes exactly). */
static inline void ref_quant_block(const float* x, int n, int8_t* q, float* d) {
    float amax = 0.f;
    for (int k = 0; k < n; ++k) amax = fabsf(x[k]) > amax ? fabsf(x[k]) : amax;
    const float id = amax > 0.f ? 127.f / amax : 0.f;
    for (int k = 0; k < n; ++k) q[k] = (int8_t)nearbyintf(x[k] * id);
    *d = amax / 127.f;
}

/* pack_q4 / pack_q8 of lowbit.kernels.cpu_native: codes (N, K) -> (N, Kp/2) nibbles or (N, Kp) bytes. */
static inline void pack(const uint8_t* codes, int N, int K, int Kp, int bits, uint8_t* w) {
    const int row_bytes = bits <= 4 ? Kp / 2 : Kp;
    memset(w, 0, (size_t)N * row_bytes);
    for (int n = 0; n < N; ++n)
        for (int k = 0; k < K; ++k) {
            const uint8_t c = codes[(size_t)n * K + k];
            if (bits > 4) w[(size_t)n * row_bytes + k] = c;
            else w[(size_t)n * row_bytes + (k / 64) * 32 + k % 32] |= (uint8_t)(k % 64 < 32 ? c : c << 4);
        }
}

/* The fused activations of the conv kernels (0 none, 1 ReLU, 2 ReLU6, 3 hard-swish: x * relu6(x + 3) / 6). */
static inline double act_ref(double v, int act) {
    if (act == 1) return v > 0. ? v : 0.;
    if (act == 2) return v < 0. ? 0. : v > 6. ? 6. : v;
    if (act == 3) return v * (v + 3. < 0. ? 0. : v + 3. > 6. ? 6. : v + 3.) / 6.;
    return v;
}

/* Static INT8's input code: torch.div(x, step).round() (half to even, in float) clamped to +-clamp. */
static inline float code_ref(float x, float step, float clamp) {
    const float v = nearbyintf(x / step);
    return v > clamp ? clamp : v < -clamp ? -clamp : v;
}

/* One checked output: |y - ref| / mag (mag: the sum of |terms|, or 1 when 0); NaN stays NaN. */
static inline double rel_err(double y, double ref, double mag) { return fabs(y - ref) / (mag > 0. ? mag : 1.); }

/* Tallies the cases of a driver; fail() prints what failed. */
typedef struct {
    int cases, failed;
    double worst; /* the largest error, on the scale of the driver's tolerance */
} Tally;

static inline void tally(Tally* t, double err, double tol, const char* what) {
    ++t->cases;
    const double scaled = err * 2e-5 / tol; /* reported on the scale of the common 2e-5 */
    if (scaled > t->worst || isnan(err)) t->worst = isnan(err) ? INFINITY : scaled;
    if (!(err >= 0. && err <= tol)) {
        ++t->failed;
        printf("FAIL %s: %s %.3g (tol %.1g)\n", what, err < 0. ? "not exact" : "error", err, tol);
    }
}

/* The summary line test_native_arm.py reads; returns the exit status. */
static inline int summary(const Tally* t) {
    printf("isa=%d cases=%d failed=%d max_rel_err=%.3g tol=%.1g\n", lb_isa(), t->cases, t->failed, t->worst, 2e-5);
    return t->failed ? 1 : 0;
}

/* Exits 1 unless lb_isa() is the variant the caller built (argv[1]; none given: any). */
static inline int check_isa(int argc, char** argv) {
    const int want = argc > 1 ? atoi(argv[1]) : -1;
    if (want >= 0 && lb_isa() != want) {
        printf("FAIL lb_isa() = %d, expected %d\n", lb_isa(), want);
        return 0;
    }
    return 1;
}
#endif
