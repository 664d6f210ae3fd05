/* lowbit native CPU kernels, part 11: the small fp32 steps of one decoded token between a decoder layer's matrix
   products (RMSNorm, residual + RMSNorm, rotary on q and k, one query's grouped attention over a KV cache, SiLU-gated
   product). Included once by lowbit_cpu.c; plain C written so that -O3 vectorizes it on every ISA variant.

   Why: at batch 1 these steps take ~20 torch ops a layer, and right after each weight stream has flushed the caches
   each op costs 5-40 us of dispatch and refill; ~320 us a layer, 5 ms a token at 16 layers, against ~1.4 ms of
   llama.cpp's whole token outside its matrix products. One call each here touches a few KB of code.

   Numbers: fp32 throughout (dot products by the variant's `dotf`); exp is a degree-6 polynomial on [-ln2/2, ln2/2]
   after range reduction (relative error < 2e-7), so results match torch's to ~1e-6 relative, not bit for bit. */

#define LB_LANES 16

/* 1 when every x[i] is finite (x * 0 is 0 for finite x, NaN for NaN and +-inf): the check before rounding
   activations to int8, one vectorized pass instead of torch's sum and .item() (~6 us a call) */
int lb_all_finite(const float* x, int64_t n) {
    float acc[LB_LANES] = {0};
    int64_t i = 0;
    for (; i + LB_LANES <= n; i += LB_LANES)
        for (int l = 0; l < LB_LANES; ++l) acc[l] += x[i + l] * 0.0f;
    for (; i < n; ++i) acc[0] += x[i] * 0.0f;
    float total = 0.0f;
    for (int l = 0; l < LB_LANES; ++l) total += acc[l];
    return total == 0.0f;
}

/* out = x / sqrt(mean(x^2) + eps) * w over rows of n (RMSNorm) */
void lb_rms_norm(const float* x, const float* w, float* out, int64_t rows, int64_t n, float eps) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * n;
        float* o = out + r * n;
        const float inv = 1.0f / sqrtf(dotf(xr, xr, n) / (float)n + eps);
        for (int64_t i = 0; i < n; ++i) o[i] = w[i] * (xr[i] * inv);
    }
}

/* x += y, then out = RMSNorm(x) * w (the residual add before a layer's second norm) */
void lb_add_rms_norm(float* x, const float* y, const float* w, float* out, int64_t rows, int64_t n, float eps) {
    for (int64_t i = 0; i < rows * n; ++i) x[i] += y[i];
    lb_rms_norm(x, w, out, rows, n, eps);
}

/* Rotary embedding in place on `heads` rows of d floats each `stride` apart (q's heads then k's, read from the fused
   projection's output): x[i] * cos[i] - x[i + d/2] * sin[i] and x[i + d/2] * cos[i + d/2] + x[i] * sin[i + d/2]. */
void lb_rope(float* x, const float* cos_, const float* sin_, int64_t heads, int64_t d, int64_t stride) {
    const int64_t h = d / 2;
    for (int64_t r = 0; r < heads; ++r) {
        float* v = x + r * stride;
        float lo[256], hi[256];
        for (int64_t i = 0; i < h; ++i) {
            lo[i] = v[i] * cos_[i] - v[i + h] * sin_[i];
            hi[i] = v[i + h] * cos_[i + h] + v[i] * sin_[i + h];
        }
        memcpy(v, lo, (size_t)h * sizeof(float));
        memcpy(v + h, hi, (size_t)h * sizeof(float));
    }
}

/* e^x on [-87, 88] (inputs clamped): 2^(x log2 e) = 2^n 2^f, f in [-1/2, 1/2]. Written so that loops over it
   vectorize without -ffast-math on every variant: the clamps are selects (not fminf), adding 1.5 * 2^23 rounds to
   the nearest integer n and leaves n in the sum's low mantissa bits (no floorf, no float-to-int conversion, which
   GCC will not vectorize under -ftrapping-math), and memcpy is the type pun compilers vectorize. */
static inline float lb_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float t = x * 1.44269504088896341f, big = 12582912.0f; /* 1.5 * 2^23, bits 0x4B400000 */
    const float r = t + big, n = r - big, f = (t - n) * 0.693147180559945309f;
    const float p = 1.0f + f * (1.0f + f * (0.5f + f * (1.0f / 6 + f * (1.0f / 24 + f * (1.0f / 120
                    + f * (1.0f / 720))))));
    int32_t bits;
    memcpy(&bits, &r, sizeof bits);
    bits = (bits - 0x4B400000 + 127) * (1 << 23); /* 2^n as a float's bits */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* out[i] = silu(gu[i]) * gu[n + i]: the SiLU-gated product of a fused gate/up output */
void lb_silu_mul(const float* restrict gu, float* restrict out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const float g = gu[i];
        out[i] = g / (1.0f + lb_expf(-g)) * gu[n + i];
    }
}

/* s[j] = e^(s[j] - max s) over n, returning their sum (16 partial maxima and sums: vectorizable) */
static float lb_softmax_exp(float* restrict s, int64_t n) {
    float top[LB_LANES], acc[LB_LANES] = {0};
    for (int l = 0; l < LB_LANES; ++l) top[l] = -INFINITY;
    for (int64_t j = 0; j < n; ++j) top[j % LB_LANES] = s[j] > top[j % LB_LANES] ? s[j] : top[j % LB_LANES];
    float m = top[0];
    for (int l = 1; l < LB_LANES; ++l) m = top[l] > m ? top[l] : m;
    for (int64_t j = 0; j < n; ++j) s[j] = lb_expf(s[j] - m);
    for (int64_t j = 0; j < n; ++j) acc[j % LB_LANES] += s[j];
    for (int w = LB_LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
    return acc[0];
}

/* 16 floats as one GCC/Clang vector (lowered to zmm, 2 ymm, 4 NEON q or scalars, whatever the variant has) */
typedef float lb_v16 __attribute__((vector_size(64)));
typedef float lb_v8 __attribute__((vector_size(32)));
typedef float lb_v4 __attribute__((vector_size(16)));

static inline lb_v16 lb_load16(const float* p) {
    lb_v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float lb_hsum16(lb_v16 v) {
    const lb_v8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7)
                  + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    const lb_v4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

#define LB_ATT_GROUP 8 /* query heads per KV head served by the grouped path (GQA groups up to 8) */
#define LB_ATT_D 256   /* head sizes up to this, multiples of 16, take the grouped path */

/* The query heads h0 .. h0 + g - 1 of one KV head: each key row is read once for all g scores, each value row
   once for all g outputs. s: g rows of L scores. */
static inline __attribute__((always_inline)) void lb_attend_group(const float* q, const float* kh, const float* vh,
                                                                   float* out, float* s, int64_t g,
                            int64_t L, int64_t d, float scale) {
    const int64_t c16 = d / 16;
    lb_v16 qv[LB_ATT_GROUP][LB_ATT_D / 16];
    for (int64_t h = 0; h < g; ++h)
        for (int64_t c = 0; c < c16; ++c) qv[h][c] = lb_load16(q + h * d + c * 16) * scale;
    for (int64_t j = 0; j < L; ++j) {
        lb_v16 kv[LB_ATT_D / 16];
        for (int64_t c = 0; c < c16; ++c) kv[c] = lb_load16(kh + j * d + c * 16);
        for (int64_t h = 0; h < g; ++h) {
            lb_v16 acc = qv[h][0] * kv[0];
            for (int64_t c = 1; c < c16; ++c) acc += qv[h][c] * kv[c];
            s[h * L + j] = lb_hsum16(acc);
        }
    }
    float inv[LB_ATT_GROUP];
    for (int64_t h = 0; h < g; ++h) inv[h] = 1.0f / lb_softmax_exp(s + h * L, L);
    lb_v16 ov[LB_ATT_GROUP][LB_ATT_D / 16];
    for (int64_t h = 0; h < g; ++h)
        for (int64_t c = 0; c < c16; ++c) ov[h][c] = (lb_v16){0};
    for (int64_t j = 0; j < L; ++j) {
        lb_v16 vv[LB_ATT_D / 16];
        for (int64_t c = 0; c < c16; ++c) vv[c] = lb_load16(vh + j * d + c * 16);
        for (int64_t h = 0; h < g; ++h) {
            const float p = s[h * L + j];
            for (int64_t c = 0; c < c16; ++c) ov[h][c] += p * vv[c];
        }
    }
    for (int64_t h = 0; h < g; ++h)
        for (int64_t c = 0; c < c16; ++c) {
            const lb_v16 o = ov[h][c] * inv[h];
            memcpy(out + h * d + c * 16, &o, sizeof o);
        }
}

/* One head the plain way (any d): scores, softmax, weighted values. */
static void lb_attend_head(const float* qh, const float* kh, const float* vh, float* o, float* s, int64_t L,
                           int64_t d, float scale) {
    for (int64_t j = 0; j < L; ++j) s[j] = dotf(qh, kh + j * d, d) * scale;
    const float inv = 1.0f / lb_softmax_exp(s, L);
    for (int64_t i = 0; i < d; ++i) o[i] = 0.0f;
    for (int64_t j = 0; j < L; ++j) {
        const float p = s[j] * inv;
        const float* vr = vh + j * d;
        for (int64_t i = 0; i < d; ++i) o[i] += p * vr[i];
    }
}

/* One query token's attention with grouped KV heads: q (heads, d) with head h reading KV head h / (heads / kv);
   keys/values rows j < L of head g at k + g * head_stride + j * d (a cache tensor (kv, L_alloc, d) as it is);
   out (heads, d) = softmax(q k^T * scale) v. KV heads are split across threads from ~32k multiply-adds a pass
   (measured: a fork costs a few us, one KV head at L = 16 about as much). */
void lb_attend1(const float* q, const float* k, const float* v, float* out, int64_t heads, int64_t kv, int64_t L,
                int64_t d, int64_t head_stride, float scale, int nt) {
    const int64_t groups = heads / kv;
    const int grouped = groups <= LB_ATT_GROUP && d % 16 == 0 && d <= LB_ATT_D;
    (void)nt;
    #pragma omp parallel for num_threads(nt) schedule(static) if (heads * L * d > 32768)
    for (int64_t g = 0; g < kv; ++g) {
        const float* kh = k + g * head_stride;
        const float* vh = v + g * head_stride;
        float stack[2048];
        const int64_t need = (grouped ? groups : 1) * L;
        float* s = need <= 2048 ? stack : (float*)malloc((size_t)need * sizeof(float));
        const float* qg = q + g * groups * d;
        float* og = out + g * groups * d;
        /* the common shapes with constant group and head size, so the accumulators stay in registers */
        if (grouped && groups == 4 && d == 64) {
            lb_attend_group(qg, kh, vh, og, s, 4, L, 64, scale);
        } else if (grouped && groups == 8 && d == 64) {
            lb_attend_group(qg, kh, vh, og, s, 8, L, 64, scale);
        } else if (grouped && groups == 4 && d == 128) {
            lb_attend_group(qg, kh, vh, og, s, 4, L, 128, scale);
        } else if (grouped && groups == 2 && d == 128) {
            lb_attend_group(qg, kh, vh, og, s, 2, L, 128, scale);
        } else if (grouped) {
            lb_attend_group(qg, kh, vh, og, s, groups, L, d, scale);
        } else {
            for (int64_t h = g * groups; h < (g + 1) * groups; ++h)
                lb_attend_head(q + h * d, kh, vh, out + h * d, s, L, d, scale);
        }
        if (s != stack) free(s);
    }
}
