// llama.cpp's M = 1 matmul (ggml's CPU mul_mat, the kernels under llama-bench) on given Linear shapes, weights read
// from DRAM as in decode: each (shape, type) holds enough weight copies (> MIB MiB together) that one graph of one
// mul_mat per copy never finds a weight in cache; time per mul_mat = graph time / copies (median of 15 graphs after
// 3 warm-ups; thread CPU time at 1 thread, wall time otherwise). Types Q4_0, Q4_K, Q8_0 from the CPU buffer, and Q4_0 / Q4_K also from the repacked ("CPU_REPACK")
// buffer that llama.cpp uses by default on x86 (suffix "r"). Prints "ggml TYPE KxN us US bytes BYTES" per line
// (benchmarks/gemv_cpu.py --ggml reads them).
// Build (GGML: a llama.cpp/ggml tree with build/bin holding libggml*.so):
//   cc -O2 -o ggml_gemv benchmarks/ggml_gemv.c -I$GGML/ggml/include -L$GGML_LIB -lggml -lggml-base -lggml-cpu \
//      -Wl,-rpath,$GGML_LIB
// Usage: ggml_gemv THREADS MIB KxN [KxN ...]
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

// 1 thread: ggml computes on the calling thread, timed by its CPU time (the shared machine's load does not count,
// as for lowbit's rows); more threads: wall time
static clockid_t clock_id = CLOCK_MONOTONIC;
static double now(void) { struct timespec t; clock_gettime(clock_id, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

static void bench(ggml_backend_t be, ggml_backend_buffer_type_t buft, enum ggml_type type, const char *tag, int K,
                  int N, double mib) {
    const size_t per = ggml_row_size(type, K) * N;
    const int copies = (int)(mib * 1048576.0 / per) + 1;
    struct ggml_init_params ip = {.mem_size = ggml_tensor_overhead() * (copies + 1), .mem_buffer = NULL, .no_alloc = true};
    struct ggml_context *cw = ggml_init(ip);
    struct ggml_tensor **w = malloc(sizeof(*w) * copies);
    for (int c = 0; c < copies; c++) w[c] = ggml_new_tensor_2d(cw, type, K, N);
    ggml_backend_buffer_t bw = ggml_backend_alloc_ctx_tensors_from_buft(cw, buft);
    if (!bw) { fprintf(stderr, "ggml %s: cannot allocate\n", tag); return; }
    float *src = malloc(sizeof(float) * K * N);
    for (long i = 0; i < (long)K * N; i++) src[i] = ((float)rand() / RAND_MAX - 0.5f) * 0.04f;
    void *q = malloc(per);
    ggml_quantize_chunk(type, src, q, 0, N, K, NULL);
    for (int c = 0; c < copies; c++) ggml_backend_tensor_set(w[c], q, 0, per);
    free(q);
    free(src);
    struct ggml_init_params ip2 = {.mem_size = ggml_tensor_overhead() * (copies + 2) + ggml_graph_overhead_custom(4 * copies + 16, false),
                                   .mem_buffer = NULL, .no_alloc = true};
    struct ggml_context *cx = ggml_init(ip2);
    struct ggml_tensor *x = ggml_new_tensor_2d(cx, GGML_TYPE_F32, K, 1);
    struct ggml_cgraph *g = ggml_new_graph_custom(cx, 4 * copies + 16, false);
    for (int c = 0; c < copies; c++) ggml_build_forward_expand(g, ggml_mul_mat(cx, w[c], x));
    ggml_backend_buffer_t bx = ggml_backend_alloc_ctx_tensors(cx, be);
    float *xv = malloc(sizeof(float) * K);
    for (int i = 0; i < K; i++) xv[i] = (float)rand() / RAND_MAX - 0.5f;
    ggml_backend_tensor_set(x, xv, 0, sizeof(float) * K);
    free(xv);
    double ts[15];
    for (int r = 0; r < 3; r++) ggml_backend_graph_compute(be, g);
    for (int r = 0; r < 15; r++) { double s = now(); ggml_backend_graph_compute(be, g); ts[r] = (now() - s) / copies; }
    qsort(ts, 15, sizeof(double), cmp);
    printf("ggml %s %dx%d us %.2f bytes %zu\n", tag, K, N, ts[7] * 1e6, per);
    fflush(stdout);
    ggml_backend_buffer_free(bx);
    ggml_free(cx);
    ggml_backend_buffer_free(bw);
    ggml_free(cw);
    free(w);
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s THREADS MIB KxN [KxN ...]\n", argv[0]); return 2; }
    const int nth = atoi(argv[1]);
    if (nth == 1) clock_id = CLOCK_THREAD_CPUTIME_ID;
    const double mib = atof(argv[2]);
    srand(0);
    ggml_backend_t be = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(be, nth);
    ggml_backend_dev_t dev = ggml_backend_get_device(be);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    ggml_backend_dev_get_extra_bufts_t get_extra =
        (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    ggml_backend_buffer_type_t *extra = get_extra ? get_extra(dev) : NULL;
    for (int a = 3; a < argc; a++) {
        int K, N;
        if (sscanf(argv[a], "%dx%d", &K, &N) != 2) continue;
        bench(be, ggml_backend_get_default_buffer_type(be), GGML_TYPE_Q4_0, "q4_0", K, N, mib);
        bench(be, ggml_backend_get_default_buffer_type(be), GGML_TYPE_Q4_K, "q4_K", K, N, mib);
        bench(be, ggml_backend_get_default_buffer_type(be), GGML_TYPE_Q8_0, "q8_0", K, N, mib);
        if (extra && extra[0]) {  // x86 repacks Q4_0 and Q4_K (Q8_0 there crashes)
            bench(be, extra[0], GGML_TYPE_Q4_0, "q4_0r", K, N, mib);
            bench(be, extra[0], GGML_TYPE_Q4_K, "q4_Kr", K, N, mib);
        }
    }
    ggml_backend_free(be);
    return 0;
}
