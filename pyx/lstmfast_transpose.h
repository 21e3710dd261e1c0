/* Transposing copies between the kernels' per-step blocks (column-major, example index fastest)
 * and callers' arrays whose features are contiguous per example (nn.LSTM's time-major
 * [T, mb, features], a C-ordered [mb, features, T] at one step): x packed for the input
 * product, h written to the output, dL/d(output) read, dL/dx written.
 *
 *   dst[j + i * ld_dst] = src[i + j * ld_src]   for 0 <= i < rows, 0 <= j < cols
 *
 * (src column-major rows x cols, dst its transpose, column-major cols x rows). The element loop
 * this replaces wrote (or read) one element per cache line and ran at about 2 cycles an
 * element; here 4 x 4 float or 2 x 2 double tiles go through SSE registers (the x86-64
 * baseline). The values are copied, never computed: the same bits as the element loop. */
#ifndef LSTMFAST_TRANSPOSE_H
#define LSTMFAST_TRANSPOSE_H

#include <stddef.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static inline void lf_transpose_f32(const float *src, ptrdiff_t ld_src, float *dst,
                                    ptrdiff_t ld_dst, ptrdiff_t rows, ptrdiff_t cols) {
    ptrdiff_t i = 0, j = 0;
#if defined(__SSE2__)
    for (j = 0; j + 4 <= cols; j += 4) {
        for (i = 0; i + 4 <= rows; i += 4) {
            /* four columns of src (rows i..i+3), out as four columns of dst */
            __m128 c0 = _mm_loadu_ps(src + i + (j + 0) * ld_src);
            __m128 c1 = _mm_loadu_ps(src + i + (j + 1) * ld_src);
            __m128 c2 = _mm_loadu_ps(src + i + (j + 2) * ld_src);
            __m128 c3 = _mm_loadu_ps(src + i + (j + 3) * ld_src);
            _MM_TRANSPOSE4_PS(c0, c1, c2, c3);
            _mm_storeu_ps(dst + j + (i + 0) * ld_dst, c0);
            _mm_storeu_ps(dst + j + (i + 1) * ld_dst, c1);
            _mm_storeu_ps(dst + j + (i + 2) * ld_dst, c2);
            _mm_storeu_ps(dst + j + (i + 3) * ld_dst, c3);
        }
        for (; i < rows; i++) {
            dst[j + 0 + i * ld_dst] = src[i + (j + 0) * ld_src];
            dst[j + 1 + i * ld_dst] = src[i + (j + 1) * ld_src];
            dst[j + 2 + i * ld_dst] = src[i + (j + 2) * ld_src];
            dst[j + 3 + i * ld_dst] = src[i + (j + 3) * ld_src];
        }
    }
#endif
    for (; j < cols; j++)
        for (i = 0; i < rows; i++)
            dst[j + i * ld_dst] = src[i + j * ld_src];
}

static inline void lf_transpose_f64(const double *src, ptrdiff_t ld_src, double *dst,
                                    ptrdiff_t ld_dst, ptrdiff_t rows, ptrdiff_t cols) {
    ptrdiff_t i = 0, j = 0;
#if defined(__SSE2__)
    for (j = 0; j + 2 <= cols; j += 2) {
        for (i = 0; i + 2 <= rows; i += 2) {
            __m128d c0 = _mm_loadu_pd(src + i + j * ld_src);
            __m128d c1 = _mm_loadu_pd(src + i + (j + 1) * ld_src);
            _mm_storeu_pd(dst + j + i * ld_dst, _mm_unpacklo_pd(c0, c1));
            _mm_storeu_pd(dst + j + (i + 1) * ld_dst, _mm_unpackhi_pd(c0, c1));
        }
        for (; i < rows; i++) {
            dst[j + i * ld_dst] = src[i + j * ld_src];
            dst[j + 1 + i * ld_dst] = src[i + (j + 1) * ld_src];
        }
    }
#endif
    for (; j < cols; j++)
        for (i = 0; i < rows; i++)
            dst[j + i * ld_dst] = src[i + j * ld_src];
}

#endif
