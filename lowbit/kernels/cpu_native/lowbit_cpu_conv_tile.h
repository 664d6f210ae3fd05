/* lowbit native CPU kernels, part 4b (AVX2 and up): the implicit-GEMM conv tile, output pixels across vector lanes.
   Included by lowbit_cpu_conv.h inside #if LB_AVX2 (relies on its pad_planes / lb_conv_src, lb_act, q4_unit and
   LB_DPBUSD).

   lb_conv_q's general path quantizes one im2col row per output pixel (K floats gathered, then rounded: 9 copies of
   every input value for a 3x3 conv), runs the Linear GEMM (pixels as rows) and transposes the result to NCHW; at
   resnet18's 56x56 x 64-channel 3x3 conv those steps cost as much as the GEMM itself. Here a tile of LB_CT_P = 16
   output pixels of one output row is the vector: each patch element k = (c, i, j) of the 16 pixels is one load of
   16 contiguous floats from the padded plane (column dilation 1; column stride 2 reads planes split by column
   parity), rounded with the per-pixel scale of its scale group (32 columns, a weight block or the row: exactly
   lb_quant_act's codes and scales in each scheme) and stored as [pixel][4 codes] so that one broadcast of 4 weight codes multiplies 8 pixels (vpdpbusd with VNNI; vpmaddubsw + int16 sums of 8 steps
   without, which needs codes of 4 bits: 8 * 2 * 15 * 127 < 2^15). Output channels go in pairs over that panel and
   their sums land in NCHW rows directly: no im2col matrix, no transpose. */

#define LB_CT_P 16 /* output pixels per tile: two vectors of 8 */

/* codes of 8 pixels x 4 consecutive k (int32 vectors c0..c3, one per k) as [pixel][4] int8 (32 bytes). */
static inline __m256i ct_interleave(__m256i c0, __m256i c1, __m256i c2, __m256i c3) {
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(c0, c1), _mm256_packs_epi32(c2, c3));
    /* per 128-bit lane: [t][p] (4 x 4) -> [p][t] */
    const __m256i perm = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                          0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm256_shuffle_epi8(b, perm);
}

/* The panel of one tile: src = the padded planes at the tile's first pixel (row r0, column ow0), off[k] each patch
   element's offset from it; sg: the columns sharing one activation scale (32, the weight block gk or Kp: the
   int8/32, int8/block and int8/row schemes). Writes pan[(k / 4) * 64 + half * 32 ..] ([pixel][4] codes, 8 pixels
   per half), dsc[j * 16 + p] (the scale of 32-column piece j for pixel p), xs[b * 16 + p] (sum over block b's
   pieces of scale * code sum): lb_quant_act's codes, scales and sums, for the ceil(K / 32) pieces and
   ceil(K / gk) blocks that hold columns (the pieces past K up to Kp are all zero: never written nor read). */
static void ct_panel(const float* src, const int64_t* off, int64_t K, int64_t Kp, int64_t gk, int64_t sg,
                     int8_t* pan, float* dsc, float* xs) {
    const __m256 sign = _mm256_set1_ps(-0.f), f127 = _mm256_set1_ps(127.f);
    for (int64_t b = 0; b * gk < K; ++b) {
        _mm256_storeu_ps(xs + b * LB_CT_P, _mm256_setzero_ps());
        _mm256_storeu_ps(xs + b * LB_CT_P + 8, _mm256_setzero_ps());
    }
    for (int64_t g0 = 0; g0 < K; g0 += sg) {
        const int64_t ge = lb_min(g0 + sg, K);
        __m256 m[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int64_t k = g0; k < ge; ++k)
            for (int h = 0; h < 2; ++h)
                m[h] = _mm256_max_ps(m[h], _mm256_andnot_ps(sign, _mm256_loadu_ps(src + off[k] + 8 * h)));
        for (int h = 0; h < 2; ++h) { /* lb_quant_act's d = amax / 127, codes round(x * (127 / amax)) */
            const __m256 pos = _mm256_cmp_ps(m[h], _mm256_setzero_ps(), _CMP_GT_OQ);
            const __m256 inv = _mm256_and_ps(pos, _mm256_div_ps(f127, m[h]));
            const __m256 d = _mm256_div_ps(m[h], f127);
            for (int64_t k0 = g0; k0 < g0 + sg && k0 < K; k0 += 32) { /* the group's 32-column pieces */
                __m256i sum = _mm256_setzero_si256();
                for (int64_t k = k0; k < k0 + 32; k += 4) {
                    __m256i c[4];
                    for (int t = 0; t < 4; ++t)
                        c[t] = k + t < K ? _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src + off[k + t] + 8 * h),
                                                                            inv))
                                         : _mm256_setzero_si256();
                    sum = _mm256_add_epi32(sum, _mm256_add_epi32(_mm256_add_epi32(c[0], c[1]),
                                                                 _mm256_add_epi32(c[2], c[3])));
                    _mm256_storeu_si256((__m256i*)(pan + (k / 4) * 64 + h * 32), ct_interleave(c[0], c[1], c[2], c[3]));
                }
                _mm256_storeu_ps(dsc + k0 / 32 * LB_CT_P + 8 * h, d);
                float* xb = xs + (k0 / gk) * LB_CT_P + 8 * h;
                _mm256_storeu_ps(xb, _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sum), _mm256_loadu_ps(xb)));
            }
        }
    }
}

/* acc += 4-code dot products of the broadcast weight codes w (u8) and the panel vector a (s8), per int32 lane (VNNI)
   or per int16 pair (without: two products per lane, summed to int32 by CT_WIDEN), in place: written as plain
   intrinsics gcc unrolled the 8 steps into 32 products first, summed in a tree from the stack. */
#if LB_VNNI == 2
static inline __m256i ct_dot(__m256i acc, __m256i w, __m256i a) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(w), "v"(a));
    return acc;
}
#define CT_WIDEN(acc) (acc)
#elif LB_VNNI
static inline __m256i ct_dot(__m256i acc, __m256i w, __m256i a) { return LB_DPBUSD(acc, w, a); }
#define CT_WIDEN(acc) (acc)
#else
static inline __m256i ct_dot(__m256i acc, __m256i w, __m256i a) {
    const __m256i t = _mm256_maddubs_epi16(w, a);
    __asm__("vpaddw %1, %0, %0" : "+x"(acc) : "x"(t));
    return acc;
}
#define CT_WIDEN(acc) _mm256_madd_epi16(acc, _mm256_set1_epi16(1))
#endif
#define CT_DOT(acc, w, a) ct_dot(acc, w, a)

/* Output channels o, o + 1 (w8: their unpacked u8 codes, rows of Kp; K columns) over one tile's panel (the pieces
   ct_panel wrote, the blocks < nb: the scales of channel o + 1 are not read when `two` is 0): the fp32 sums, then
   bias + act into y0 / y1 (the channels' output rows at the tile's first pixel), the first nv pixels. */
static inline void ct_pair(const uint8_t* w8, int64_t K, int64_t Kp, int64_t gk, const float* ws, const float* wsz,
                           int64_t nb, const int8_t* pan, const float* dsc, const float* xs, const float* bias,
                           int act, float* y0, float* y1, int64_t nv, int two) {
    __m256 f[2][2];
    for (int r = 0; r < 2; ++r) f[r][0] = f[r][1] = _mm256_setzero_ps();
    const int64_t nj = (K + 31) / 32; /* the pieces that hold columns (ct_panel) */
    for (int64_t j = 0; j < nj; ++j) {
        __m256i a[2][2];
        for (int r = 0; r < 2; ++r) a[r][0] = a[r][1] = _mm256_setzero_si256();
        const int8_t* pj = pan + j * 8 * 64;
        for (int q = 0; q < 8; ++q) {
            const __m256i p0 = _mm256_loadu_si256((const __m256i*)(pj + q * 64));
            const __m256i p1 = _mm256_loadu_si256((const __m256i*)(pj + q * 64 + 32));
            int32_t c0, c1;
            memcpy(&c0, w8 + j * 32 + q * 4, 4);
            memcpy(&c1, w8 + Kp + j * 32 + q * 4, 4);
            const __m256i w0 = _mm256_set1_epi32(c0), w1 = _mm256_set1_epi32(c1);
            a[0][0] = CT_DOT(a[0][0], w0, p0);
            a[0][1] = CT_DOT(a[0][1], w0, p1);
            a[1][0] = CT_DOT(a[1][0], w1, p0);
            a[1][1] = CT_DOT(a[1][1], w1, p1);
        }
        const int64_t b = j * 32 / gk;
        for (int r = 0; r < 2; ++r) {
            const __m256 s = _mm256_set1_ps(r < 1 + two ? ws[r * nb + b] : 0.f); /* an odd O: no row past it */
            for (int h = 0; h < 2; ++h)
                f[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(CT_WIDEN(a[r][h])),
                                          _mm256_mul_ps(s, _mm256_loadu_ps(dsc + j * LB_CT_P + 8 * h)), f[r][h]);
        }
        if ((j + 1) * 32 % gk == 0 || j + 1 == nj) /* the block's zero term */
            for (int r = 0; r < 2; ++r) {
                const __m256 z = _mm256_set1_ps(r < 1 + two ? wsz[r * nb + b] : 0.f);
                for (int h = 0; h < 2; ++h)
                    f[r][h] = _mm256_fnmadd_ps(z, _mm256_loadu_ps(xs + b * LB_CT_P + 8 * h), f[r][h]);
            }
    }
    float out[2][LB_CT_P];
    for (int r = 0; r < 2; ++r) {
        const __m256 bv = _mm256_set1_ps(bias && r < 1 + two ? bias[r] : 0.f); /* no read past bias[O - 1] */
        _mm256_storeu_ps(out[r], _mm256_add_ps(f[r][0], bv));
        _mm256_storeu_ps(out[r] + 8, _mm256_add_ps(f[r][1], bv));
    }
    for (int64_t p = 0; p < nv; ++p) y0[p] = lb_act(out[0][p], act);
    if (two)
        for (int64_t p = 0; p < nv; ++p) y1[p] = lb_act(out[1][p], act);
}

/* Whether the tile path serves this conv: 4-bit codes (8-bit too with VNNI), one group, column stride 1 or 2 and
   dilation 1, blocks of whole 32-column pieces (any activation scheme). */
static int ct_serves(const int64_t* geo, int bits, int64_t gk) {
    return (bits == 4 || LB_VNNI) && geo[15] == 1 && (geo[8] == 1 || geo[8] == 2) && geo[12] == 1 && gk % 32 == 0;
}

/* Image b of lb_conv_q through the tile path (xp: its padded planes, Hp rows of stride Wp each, every tap's 16
   pixels contiguous from off[k]; see ct_pad): bits 4 (pack_q4) or 8 (pack_q8) weights, unpacked once per call into w8 by the caller
   (ct_unpack). Output rows are split among threads. */
static void ct_image(const float* xp, const int64_t* geo, int64_t Hp, int64_t Wp, const uint8_t* w8,
                     const float* ws, const float* wsz, int64_t Kp, int64_t gk, int64_t nb, int mode,
                     const float* bias, int act, const int64_t* off, float* y, int64_t b, int nt) {
    const int64_t O = geo[4], OH = geo[13], OW = geo[14], K = geo[1] * geo[5] * geo[6], sh = geo[7];
    const int64_t sg = mode == LB_ACT_32 ? 32 : mode == LB_ACT_BLOCK ? gk : Kp;
    (void)Hp;
    #pragma omp parallel num_threads(nt) if (OH * OW * K > 65536)
    {
        int8_t* pan = (int8_t*)malloc((size_t)(Kp * LB_CT_P));
        float* dsc = (float*)malloc((size_t)((Kp / 32 + nb) * LB_CT_P) * sizeof(float));
        #pragma omp for schedule(static)
        for (int64_t oh = 0; oh < OH; ++oh)
            for (int64_t ow0 = 0; ow0 < OW; ow0 += LB_CT_P) {
                ct_panel(xp + oh * sh * Wp + ow0, off, K, Kp, gk, sg, pan, dsc, dsc + Kp / 32 * LB_CT_P);
                const int64_t nv = lb_min(LB_CT_P, OW - ow0);
                for (int64_t o = 0; o < O; o += 2) {
                    const int two = o + 1 < O;
                    float* yo = y + ((b * O + o) * OH + oh) * OW + ow0;
                    ct_pair(w8 + o * Kp, K, Kp, gk, ws + o * nb, wsz + o * nb, nb, pan, dsc, dsc + Kp / 32 * LB_CT_P,
                            bias ? bias + o : NULL, act, yo, yo + OH * OW, nv, two);
                }
            }
        free(pan);
        free(dsc);
    }
}

/* The O rows of weight codes as bytes (w8 (O + 1, Kp): a zero row past the last for an odd O): pack_q4's 64-code
   units (low nibbles codes 0..31, high 32..63) or pack_q8's bytes as they are. */
static void ct_unpack(const uint8_t* w, int64_t O, int64_t Kp, int bits, uint8_t* w8) {
    if (bits == 8) {
        memcpy(w8, w, (size_t)(O * Kp));
    } else {
        for (int64_t o = 0; o < O; ++o)
            for (int64_t k = 0; k < Kp; k += 64) {
                __m256i lo, hi;
                q4_unit(w + o * Kp / 2 + k / 2, &lo, &hi);
                _mm256_storeu_si256((__m256i*)(w8 + o * Kp + k), lo);
                _mm256_storeu_si256((__m256i*)(w8 + o * Kp + k + 32), hi);
            }
    }
    memset(w8 + O * Kp, 0, (size_t)Kp);
}

/* Channel c of image b zero-padded into xp (Hp rows of sw * Wq floats): column stride 1 the padded plane as is
   (pad_planes, Wq >= its width); stride 2 each padded row split into its even and odd columns (parity p at p * Wq),
   so that a tap's 16 pixels are again 16 contiguous floats. */
static void ct_pad(const float* x, const int64_t* geo, int64_t b, int64_t c, int64_t Hp, int64_t Wq, float* xp) {
    const int64_t H = geo[2], W = geo[3], ph = geo[9], pw = geo[10], sw = geo[8];
    if (sw == 1) {
        pad_planes(x, geo, 0, b, c, c + 1, Hp, Wq, xp);
        return;
    }
    const float* src = x + (b * geo[1] + c) * H * W;
    for (int64_t r = 0; r < Hp; ++r) {
        float* d = xp + (c * Hp + r) * 2 * Wq;
        const int64_t ih = r - ph;
        for (int64_t p = 0; p < 2; ++p)
            for (int64_t q = 0; q < Wq; ++q) {
                const int64_t iw = 2 * q + p - pw;
                d[p * Wq + q] = ih >= 0 && ih < H && iw >= 0 && iw < W ? src[ih * W + iw] : 0.f;
            }
    }
}

#ifndef LB_CT_MIN_PLANE /* output pixels per image from which the tile path runs (1 thread, Zen 4, resnet18's 3x3
                            layers, tile vs general in ms): with VNNI 1.45 vs 1.91 at 56x56 (64 channels), 1.22 vs
                            1.06 at 14x14; without, 4-bit, 1.55 vs 2.7 at 56x56, 1.38 vs 1.73 at 14x14, 2.68 vs 1.82
                            at 7x7 (512 channels: each 16-pixel tile streams all the weight codes) */
#define LB_CT_MIN_PLANE (LB_VNNI ? 2048 : 196)
#endif

/* lb_conv_q through the tile path (ct_image) when it serves the conv; returns 0 when it does not (or out of
   memory: the general path then runs). */
static int conv_tiles(const float* x, const int64_t* geo, const lb_conv_src* S, const uint8_t* w, const float* ws,
                      const float* wsz, int64_t Kp, int64_t gk, int64_t nb, int mode, int bits, const float* bias,
                      int act, float* y, int nt) {
    if (!S->padded || !ct_serves(geo, bits, gk) || S->L < LB_CT_MIN_PLANE) return 0;
    const int64_t O = geo[4], kh = geo[5], kw = geo[6], dh = geo[11], sw = geo[8], Hp = S->Hp;
    const int64_t half = (geo[3] + 2 * geo[10] + 1) / 2, need = (geo[14] + 15) / 16 * 16 + (kw - 1) / 2 + 1;
    const int64_t Wq = sw == 1 ? S->Wp : half > need ? half : need, Wr = sw * Wq; /* row stride */
    uint8_t* w8 = (uint8_t*)malloc((size_t)((O + 1) * Kp));
    int64_t* off = (int64_t*)malloc((size_t)S->K * sizeof(int64_t));
    float* xp = (float*)malloc((size_t)(S->Cg * Hp * Wr) * sizeof(float));
    const int ok = w8 && off && xp;
    if (ok) {
        ct_unpack(w, O, Kp, bits, w8);
        for (int64_t k = 0; k < S->K; ++k) { /* (c, i, j) of patch element k: its offset in the planes */
            const int64_t j = k % kw;
            off[k] = (k / (kh * kw) * Hp + k % (kh * kw) / kw * dh) * Wr + j % sw * Wq + j / sw;
        }
        for (int64_t b = 0; b < geo[0]; ++b) {
            #pragma omp parallel for num_threads(nt) schedule(static) if (S->Cg * Hp * Wr > 65536)
            for (int64_t c = 0; c < S->Cg; ++c) ct_pad(x, geo, b, c, Hp, Wq, xp);
            ct_image(xp, geo, Hp, Wr, w8, ws, wsz, Kp, gk, nb, mode, bias, act, off, y, b, nt);
        }
    }
    free(w8);
    free(off);
    free(xp);
    return ok;
}
