/* lowbit native CPU kernels, part 4a: depthwise 2-D convolution on packed weights (lowbit.kernels.cpu_conv is the
   Python side). Included by lowbit_cpu_conv.h (relies on lb_min defined in lowbit_cpu.c); plain C that every ISA
   variant compiles (the inner loops are written so -O3 vectorizes them with the variant's flags), AVX2 intrinsics
   for the static INT8 input rounding.

   Geometry `geo` (int64[LB_GEO]): B, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, groups. x is fp32 NCHW
   contiguous, y fp32 (B, O, OH, OW) contiguous. act: 0 none, 1 ReLU, 2 ReLU6, 3 hard-swish (after the bias).

   lb_dwconv: depthwise (groups == C, O a multiple of C), a direct kernel: per output channel its K = kh * kw codes
   (uint8, one per byte) are dequantized onto the stack (w = (q - z) * s per block of gk), then the whole output
   plane is accumulated tap by tap as a 1-D correlation over the padded, stride-phase-split input plane (see
   dw_layout), in fp32: no activation rounding, no im2col, no float weight copy. */
#ifdef _OPENMP
#include <omp.h> /* omp_get_thread_num / omp_get_num_threads: lb_dwconv splits channels by thread itself */
#endif

/* This thread's index and the team's size inside a parallel region (0 and 1 without OpenMP): the depthwise kernels
   split their channels by thread themselves. */
static inline void lb_team(int64_t* id, int64_t* n) {
#ifdef _OPENMP
    *id = omp_get_thread_num();
    *n = omp_get_num_threads();
#else
    *id = 0;
    *n = 1;
#endif
}

#define LB_GEO 16
#define LB_DW_MAX_K 64 /* taps per depthwise channel held in registers (up to 8x8) */

static inline float lb_act(float v, int act) {
    if (act == 1) return v > 0.f ? v : 0.f;
    if (act == 2) return v < 0.f ? 0.f : v > 6.f ? 6.f : v;
    if (act == 3) {
        float r = v + 3.f;
        r = r < 0.f ? 0.f : r > 6.f ? 6.f : r;
        return v * r / 6.f; /* torch: x * relu6(x + 3) / 6 */
    }
    return v;
}

/* The depthwise kernel works on one channel plane at a time, padded and split by stride phase so that every kernel
   tap is one constant offset into a flat buffer: padded pixel (r, c) lands in phase plane (r % sh, c % sw) at row
   r / sh, column c / sw, each phase plane (Hq, Wq). Output pixel (oh, ow) at flat q = oh * Wq + ow then reads tap
   (i, j) at q + off[i * kw + j] whatever the stride and dilation, so the output plane is a 1-D correlation over a
   contiguous run (vectorized 32 outputs at a time, the Wq - OW columns per row computed and dropped). The padding
   positions are never written: the buffer is zeroed once per thread and only the input pixels are copied in. */
typedef struct {
    int64_t Hq, Wq, plane, nq, total; /* phase plane rows and columns, its size, outputs computed, buffer floats */
    int64_t off[LB_DW_MAX_K];          /* per tap: its offset into the buffer */
} lb_dw_layout;

#define LB_DW_V 32 /* output positions accumulated in registers at once: four vectors of 8 */
/* 8 floats as one GCC/Clang vector (SSE/AVX/NEON, whatever the variant's flags give), unaligned loads allowed */
typedef float lb_v8 __attribute__((vector_size(32), aligned(4)));
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define LB_DW_SHUFFLE 1 /* __builtin_shufflevector: the stride-2 split of a row */
#else
#define LB_DW_SHUFFLE 0
#endif

static lb_dw_layout dw_layout(const int64_t* geo) {
    const int64_t H = geo[2], W = geo[3], kh = geo[5], kw = geo[6], sh = geo[7], sw = geo[8], ph = geo[9];
    const int64_t pw = geo[10], dh = geo[11], dw = geo[12], OH = geo[13], OW = geo[14];
    lb_dw_layout L;
    const int64_t rows_out = OH + (kh - 1) * dh / sh, rows_in = (H + ph - 1) / sh + 1;
    const int64_t cols_out = OW + (kw - 1) * dw / sw, cols_in = (W + pw - 1) / sw + 1;
    L.Hq = rows_out > rows_in ? rows_out : rows_in;
    L.Wq = cols_out > cols_in ? cols_out : cols_in;
    L.plane = L.Hq * L.Wq;
    L.nq = (OH * L.Wq + LB_DW_V - 1) / LB_DW_V * LB_DW_V;
    for (int64_t i = 0; i < kh; ++i)
        for (int64_t j = 0; j < kw; ++j) {
            const int64_t r = i * dh, c = j * dw;
            L.off[i * kw + j] = ((r % sh) * sw + c % sw) * L.plane + (r / sh) * L.Wq + c / sw;
        }
    L.total = sh * sw * L.plane + L.nq + 2 * L.Wq; /* the last block of outputs reads past the last plane */
    return L;
}

/* Static INT8's input rounding in the depthwise fill: code = round(x / step) clamped to [-clamp, clamp], clamped
   before rounding (the same code, clamp being an integer) and rounded by adding and subtracting 1.5 * 2**23 (round
   half to even for |v| < 2**22), so the loops vectorize on every variant. The quotient is x * (1 / step), within
   3 ulp of x / step (< 1e-4 for |v| < 256); a plane where one lands within LB_DW_TIE of a tie is redone with the
   division, so the codes are torch.div(x, step).round()'s. */
#define LB_DW_TIE (0.5f - 4e-4f)
/* The code of one quotient v (clamped, then rounded half to even); flags a near tie and a non-finite input x. */
#define LB_DW_CODE(v, x, out)                                      \
    do {                                                           \
        float c_ = (v) < -lim ? -lim : (v) > lim ? lim : (v);      \
        const float r_ = (c_ + 12582912.f) - 12582912.f;           \
        near |= (c_ - r_ > LB_DW_TIE) | (c_ - r_ < -LB_DW_TIE);    \
        nonfinite |= ((x) - (x)) != 0.f;                           \
        (out) = r_;                                                \
    } while (0)

/* dst[j] = the code of src[j] for j < n (src, dst distinct); returns 1 when a quotient fell near a tie. */
static int dw_codes(const float* restrict src, float* restrict dst, int64_t n, float inv, float lim, int* bad) {
    int near = 0, nonfinite = 0;
    for (int64_t j = 0; j < n; ++j) LB_DW_CODE(src[j] * inv, src[j], dst[j]);
    *bad |= nonfinite;
    return near;
}

/* The same with the division (a plane where a quotient fell near a tie). */
static void dw_codes_div(const float* restrict src, float* restrict dst, int64_t n, float step, float lim) {
    int near = 0, nonfinite = 0;
    for (int64_t j = 0; j < n; ++j) LB_DW_CODE(src[j] / step, src[j], dst[j]);
    (void)near;
    (void)nonfinite;
}

typedef int32_t lb_i8v __attribute__((vector_size(32), aligned(4)));

/* 8 codes at once from the vector x into dst; vsum collects x - x (NaN once any input was NaN / inf). AVX2: the
   quotient x * (1 / step), min / max (NaN kept as the second operand), vroundps, and the division for the vector
   when a lane lands within LB_DW_TIE of a tie (one vector in ~150); else the division (exact, GCC vectors). A macro:
   vector arguments by value are an ABI note on some variants. */
#if LB_AVX2
#define LB_DW_CODE8(x, dst)                                                                               \
    do {                                                                                                  \
        const __m256 x_ = (__m256)(x), lo_ = _mm256_set1_ps(-lim), hi_ = _mm256_set1_ps(lim);             \
        __m256 v_ = _mm256_min_ps(hi_, _mm256_max_ps(lo_, _mm256_mul_ps(x_, vinv)));                      \
        __m256 r_ = _mm256_round_ps(v_, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);                   \
        const __m256 d_ = _mm256_andnot_ps(_mm256_set1_ps(-0.f), _mm256_sub_ps(v_, r_));                  \
        if (_mm256_movemask_ps(_mm256_cmp_ps(d_, _mm256_set1_ps(LB_DW_TIE), _CMP_GT_OQ))) {               \
            v_ = _mm256_min_ps(hi_, _mm256_max_ps(lo_, _mm256_div_ps(x_, _mm256_set1_ps(step))));          \
            r_ = _mm256_round_ps(v_, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);                      \
        }                                                                                                 \
        *vsum += (lb_v8)_mm256_sub_ps(x_, x_);                                                            \
        _mm256_storeu_ps((dst), r_);                                                                      \
    } while (0)
#else
#define LB_DW_CODE8(x, dst)                                                                               \
    do {                                                                                                  \
        const lb_v8 x_ = (x);                                                                             \
        lb_v8 v_ = x_ / step;                                                                             \
        const lb_i8v lo_ = v_ < -lim, hi_ = v_ > lim, keep_ = ~(lo_ | hi_);                               \
        v_ = (lb_v8)(((lb_i8v)v_ & keep_) | ((lb_i8v)vlo & lo_) | ((lb_i8v)vhi & hi_)); /* NaN stays */  \
        *vsum += x_ - x_;                                                                                 \
        *(lb_v8*)(dst) = (v_ + 12582912.f) - 12582912.f;                                                  \
    } while (0)
#endif

/* Input columns w, w + sw, ... (n of them) of row xr into dst as codes, sw 1 or 2, rounded in registers after the
   split (the last n % 8 one at a time, by the division); *vsum / *bad collect the NaN / inf seen. */
static inline void dw_codes_row(const float* restrict xr, int64_t W, int64_t w, int64_t sw, int64_t n, float step,
                                float inv, float lim, float* restrict dst, lb_v8* vsum, int* bad) {
#if LB_AVX2
    const __m256 vinv = _mm256_set1_ps(inv);
#else
    const lb_v8 vlo = {-lim, -lim, -lim, -lim, -lim, -lim, -lim, -lim}, vhi = -vlo;
    (void)inv;
#endif
    int64_t j = 0;
    if (sw == 1) {
        for (; j + 8 <= n; j += 8) LB_DW_CODE8(*(const lb_v8*)(xr + w + j), dst + j);
    } else {
#if LB_DW_SHUFFLE
        for (; j + 8 <= n && w + 2 * j + 16 <= W; j += 8) {
            const lb_v8 lo = *(const lb_v8*)(xr + w + 2 * j), hi = *(const lb_v8*)(xr + w + 2 * j + 8);
            LB_DW_CODE8(__builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14), dst + j);
        }
#endif
    }
    int near = 0, nonfinite = 0;
    for (; j < n; ++j) LB_DW_CODE(xr[w + sw * j] / step, xr[w + sw * j], dst[j]);
    (void)near;
    *bad |= nonfinite;
}

/* Channel plane xp (H, W) into the phase planes of buf (padding already zero); returns 1 when step > 0 and the plane
   held NaN / inf. step > 0: rows of 24 and more floats (stride 1 or 2) are rounded to their codes as they are split
   (dw_codes_row); a plane of shorter rows (or another stride) is first rounded whole into codes (H * W floats): per
   row of 7..14 floats the loops spend more in overhead than in rounding, and a plane of long rows written then read
   back costs more than the rounding (stores not yet retired when read). */
static int64_t dw_fill(const float* xp, const int64_t* geo, const lb_dw_layout* L, float step, float clamp,
                       float* buf, float* codes) {
    const int64_t H = geo[2], W = geo[3], sh = geo[7], sw = geo[8], ph = geo[9], pw = geo[10];
    const float inv = 1.f / step, lim = clamp;
    int bad = 0; /* NaN / inf among the inputs, seen when rounding (x - x is NaN for both) */
    const int by_row = step > 0.f && (sw == 1 ? W >= 24 : sw == 2 && W >= 48);
    lb_v8 vsum = {0}; /* x - x over the rows rounded by dw_codes_row: NaN once one held NaN / inf */
    if (step > 0.f && !by_row) {
        if (dw_codes(xp, codes, H * W, inv, clamp, &bad))
            dw_codes_div(xp, codes, H * W, step, clamp);
        xp = codes;
    }
    for (int64_t h = 0; h < H; ++h) {
        const int64_t r = h + ph;
        const float* xr = xp + h * W;
        float* row = buf + (r % sh) * sw * L->plane + (r / sh) * L->Wq;
        for (int64_t p = 0; p < sw; ++p) { /* phase p: padded columns c = p + i * sw, input column c - pw */
            float* dst = row + p * L->plane;
            int64_t i = p >= pw ? 0 : (pw - p + sw - 1) / sw, w = p + i * sw - pw;
            if (by_row) {
                const int64_t n = (W - w + sw - 1) / sw;
                if (n > 0) dw_codes_row(xr, W, w, sw, n, step, inv, lim, dst + i, &vsum, &bad);
            } else if (sw == 1) { /* a loop, not memcpy: rows of 7..56 floats, where a libc call costs more */
                for (; w < W; ++i, ++w) dst[i] = xr[w];
            } else if (sw == 2) { /* every other input column: 16 loaded, the 8 of this phase kept */
                const int64_t n = (W - w + 1) / 2;
                int64_t j = 0;
#if LB_DW_SHUFFLE
                for (; j + 8 <= n && w + 2 * j + 16 <= W; j += 8) {
                    const lb_v8 lo = *(const lb_v8*)(xr + w + 2 * j), hi = *(const lb_v8*)(xr + w + 2 * j + 8);
                    *(lb_v8*)(dst + i + j) = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14);
                }
#endif
                for (; j < n; ++j) dst[i + j] = xr[w + 2 * j];
            } else {
                for (; w < W; ++i, w += sw) dst[i] = xr[w];
            }
        }
    }
    for (int l = 0; l < 8; ++l) bad |= vsum[l] != 0.f;
    return bad;
}

/* One output plane: yq[q] = bias + sum over taps of w[t] * buf[q + off[t]] for q < nq, then the OW valid columns of
   each row (row stride Wq), with act, into yp (OH, OW). */
static inline __attribute__((always_inline)) void dw_plane(const float* restrict buf, const int64_t* restrict off, int64_t K,
                                               const float* restrict w, float bias, int act, int64_t nq, int64_t Wq,
                                               int64_t OH, int64_t OW, float* restrict yq, float* restrict yp) {
    for (int64_t q = 0; q < nq; q += LB_DW_V) {
        lb_v8 a0 = {bias, bias, bias, bias, bias, bias, bias, bias}, a1 = a0, a2 = a0, a3 = a0;
        const float* s = buf + q;
        for (int64_t t = 0; t < K; ++t) {
            const float* p = s + off[t];
            const float wt = w[t];
            a0 += wt * *(const lb_v8*)p;
            a1 += wt * *(const lb_v8*)(p + 8);
            a2 += wt * *(const lb_v8*)(p + 16);
            a3 += wt * *(const lb_v8*)(p + 24);
        }
        *(lb_v8*)(yq + q) = a0;
        *(lb_v8*)(yq + q + 8) = a1;
        *(lb_v8*)(yq + q + 16) = a2;
        *(lb_v8*)(yq + q + 24) = a3;
    }
    for (int64_t oh = 0; oh < OH; ++oh) {
        const float* src = yq + oh * Wq;
        float* dst = yp + oh * OW;
        if (act == 0) for (int64_t v = 0; v < OW; ++v) dst[v] = src[v];
        else if (act == 1) for (int64_t v = 0; v < OW; ++v) dst[v] = src[v] > 0.f ? src[v] : 0.f;
        else for (int64_t v = 0; v < OW; ++v) dst[v] = lb_act(src[v], act);
    }
}

/* Output channels [lo, hi) of the flattened (B, O): the channel's K weights dequantized onto the stack (no float
   weight copy), its input plane filled when it changes, then dw_plane. */
__attribute__((noinline)) static void dw_channels(const float* x, const int64_t* geo, const lb_dw_layout* Lp,
                                                  const uint8_t* q, const float* ws, const float* wz, int64_t gk,
                                                  int64_t nb, const float* bias, int act, float step, float clamp,
                                                  float* y, int64_t lo, int64_t hi, float* buf, float* yq,
                                                  int64_t* bad) {
    /* a local copy of the layout and plain scalars: read through the OpenMP region's shared block (or a pointer the
       stores may alias) the tap loop reloaded them on every tap and ran 1.7x slower */
    const lb_dw_layout Lc = *Lp, *L = &Lc;
    const int64_t C = geo[1], HW = geo[2] * geo[3], O = geo[4], K = geo[5] * geo[6], OHW = geo[13] * geo[14];
    const int64_t mult = O / C;
    int64_t held = -1; /* the (b, input channel) plane in buf */
    for (int64_t bo = lo; bo < hi; ++bo) {
        const int64_t b = bo / O, o = bo % O;
        float w[LB_DW_MAX_K];
        for (int64_t blk = 0, k = 0; blk < nb; ++blk) /* no division per tap: blocks of gk taps in turn */
            for (const int64_t end = lb_min(k + gk, K); k < end; ++k)
                w[k] = ((float)q[o * K + k] - wz[o * nb + blk]) * ws[o * nb + blk];
        if (b * C + o / mult != held) {
            held = b * C + o / mult;
            *bad += dw_fill(x + held * HW, geo, L, step, clamp, buf, yq + L->nq);
        }
        dw_plane(buf, L->off, K, w, bias ? bias[o] : 0.f, act, L->nq, L->Wq, geo[13], geo[14], yq, y + bo * OHW);
    }
}

/* Depthwise conv: q uint8 (O, K) codes, ws / wz fp32 (O, nb) scale and zero per block of gk taps; bias (O,) or
   NULL; step > 0 rounds the input first (see dw_fill). Output channel o reads input channel o / (O / C). Threads
   take contiguous runs of channels (one plane fill per input channel and thread). Returns how many input planes
   held NaN / inf when step > 0 (0 otherwise; non-zero exactly when one did). */
int64_t lb_dwconv(const float* x, const int64_t* geo, const uint8_t* q, const float* ws, const float* wz, int64_t gk,
               int64_t nb, const float* bias, int act, float step, float clamp, float* y, int nt) {
    const int64_t BO = geo[0] * geo[4], work = BO * geo[13] * geo[14] * geo[5] * geo[6];
    const lb_dw_layout L = dw_layout(geo);
    int64_t bad = 0;
    if (work <= 65536) nt = 1;
    (void)nt; /* unread without OpenMP */
    #pragma omp parallel num_threads(nt) reduction(+ : bad)
    {
        int64_t id, n;
        lb_team(&id, &n);
        float* buf = (float*)calloc((size_t)(L.total + L.nq + (step > 0.f ? geo[2] * geo[3] : 0)), sizeof(float));
        dw_channels(x, geo, &L, q, ws, wz, gk, nb, bias, act, step, clamp, y, BO * id / n, BO * (id + 1) / n, buf,
                    buf + L.total, &bad);
        free(buf);
    }
    return bad;
}
