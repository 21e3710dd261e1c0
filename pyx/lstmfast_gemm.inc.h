/*
 * Template: the packed per-step matrix products (see lstmfast_simd.h) for one element type and
 * one vector instruction set; lstmfast_simd.h includes it once per pair.
 *
 * Parameters (#defined by the includer, #undefined by lstmfast_simd.h after each inclusion):
 *   LF_T, LF_SFX, LF_ISA, LF_TARGET as for lstmfast_math.inc.h (LF_ISA avx2 or avx512 here)
 *   LF_F32     1 for float, 0 for double
 *   LF_LEVEL   LF_ISA_AVX2 or LF_ISA_AVX512: picks the rows of the vector tables below
 *
 * The layouts are those of every instruction set (lstmfast/_layout.pxd sizes them once): B in
 * panels of LF_NR = 6 columns or in rows padded to LF_ROW_PAD, A packed in blocks of LF_MR rows
 * (16 floats, 8 doubles). An instruction set differs only in its register tile, LF_RB_MAX row
 * blocks by LF_CP_MAX panels of LF_VPB vectors each:
 *   avx2    1 block x 1 panel, 2 ymm per block:  12 accumulators of 16 ymm;
 *   avx512  2 blocks x 2 panels, 1 zmm per block: 24 accumulators of 32 zmm (half the loads of
 *           A and B per multiply-add of the avx2 tile).
 * Every element of C is the same sum in the same order on every instruction set (bias or 0, then
 * the K products by fused multiply-adds in order of k, then the addend), so the paths agree to
 * the bit.
 */

/* ---- vector tables: 256-bit operations (the row kernel, the transposes) and the panel
 * kernel's vectors (LF_P_*) */
#if LF_F32
#define LF_MR 16
_Static_assert(LF_MR == LF_A_BLOCK_ROWS, "lf_pack_a_columns packs A in blocks of LF_MR rows");
#define LF_Y __m256
#define LF_Y_W 8
#define LF_Y_ZERO _mm256_setzero_ps
#define LF_Y_LOAD _mm256_loadu_ps
#define LF_Y_STORE _mm256_storeu_ps
#define LF_Y_BCAST _mm256_broadcast_ss
#define LF_Y_FMADD _mm256_fmadd_ps
#define LF_Y_ADD _mm256_add_ps
/* the first `count` lanes (as the integer mask of the masked loads) */
#define LF_Y_MASK_OF(count) \
    _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define LF_Y_LOAD_MASKED(p, mask) _mm256_maskload_ps(p, mask)
#else
#define LF_MR 8
_Static_assert(LF_MR == LF_A_BLOCK_ROWS, "lf_pack_a_columns packs A in blocks of LF_MR rows");
#define LF_Y __m256d
#define LF_Y_W 4
#define LF_Y_ZERO _mm256_setzero_pd
#define LF_Y_LOAD _mm256_loadu_pd
#define LF_Y_STORE _mm256_storeu_pd
#define LF_Y_BCAST _mm256_broadcast_sd
#define LF_Y_FMADD _mm256_fmadd_pd
#define LF_Y_ADD _mm256_add_pd
#define LF_Y_MASK_OF(count) \
    _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(count)), _mm256_setr_epi64x(0, 1, 2, 3))
#define LF_Y_LOAD_MASKED(p, mask) _mm256_maskload_pd(p, mask)
#endif

#if LF_LEVEL == LF_ISA_AVX2
#define LF_RB_MAX 1
#define LF_CP_MAX 1
#define LF_P LF_Y
#define LF_P_W LF_Y_W
#define LF_P_ZERO LF_Y_ZERO
#define LF_P_LOAD LF_Y_LOAD
#define LF_P_STORE LF_Y_STORE
#define LF_P_BCAST LF_Y_BCAST
#define LF_P_FMADD LF_Y_FMADD
#if LF_F32
#define LF_P_MASK __m256i
#define LF_P_SET1 _mm256_set1_ps
#define LF_P_ADD _mm256_add_ps
#else
#define LF_P_MASK __m256i
#define LF_P_SET1 _mm256_set1_pd
#define LF_P_ADD _mm256_add_pd
#endif
#define LF_P_MASK_OF LF_Y_MASK_OF
#define LF_P_LOAD_MASKED LF_Y_LOAD_MASKED
#elif LF_LEVEL == LF_ISA_AVX512
#define LF_RB_MAX 2
#define LF_CP_MAX 2
/* a lane mask of the first `count` lanes (count may be <= 0 or >= the width) */
#define LF_P_MASK_BITS(count, width) \
    ((count) <= 0 ? 0u : (count) >= (width) ? (1u << (width)) - 1u : (1u << (count)) - 1u)
#if LF_F32
#define LF_P __m512
#define LF_P_W 16
#define LF_P_ZERO _mm512_setzero_ps
#define LF_P_SET1 _mm512_set1_ps
#define LF_P_LOAD _mm512_loadu_ps
#define LF_P_STORE _mm512_storeu_ps
#define LF_P_ADD _mm512_add_ps
#define LF_P_BCAST(p) _mm512_set1_ps(*(p))
#define LF_P_FMADD _mm512_fmadd_ps
#define LF_P_MASK __mmask16
#define LF_P_MASK_OF(count) ((__mmask16)LF_P_MASK_BITS(count, 16))
#define LF_P_LOAD_MASKED(p, mask) _mm512_maskz_loadu_ps(mask, p)
#else
#define LF_P __m512d
#define LF_P_W 8
#define LF_P_ZERO _mm512_setzero_pd
#define LF_P_SET1 _mm512_set1_pd
#define LF_P_LOAD _mm512_loadu_pd
#define LF_P_STORE _mm512_storeu_pd
#define LF_P_ADD _mm512_add_pd
#define LF_P_BCAST(p) _mm512_set1_pd(*(p))
#define LF_P_FMADD _mm512_fmadd_pd
#define LF_P_MASK __mmask8
#define LF_P_MASK_OF(count) ((__mmask8)LF_P_MASK_BITS(count, 8))
#define LF_P_LOAD_MASKED(p, mask) _mm512_maskz_loadu_pd(mask, p)
#endif
#else
#error "lstmfast_gemm.inc.h: LF_LEVEL must be LF_ISA_AVX2 or LF_ISA_AVX512"
#endif
#define LF_VPB (LF_MR / LF_P_W)                 /* vectors per block of LF_MR rows */
#define LF_TILE_COLUMNS (LF_CP_MAX * LF_NR)

/* ---- row packing of a column-major B (sk 1: the forward's W and RW) is a transpose, done in
 * LF_Y_W x LF_Y_W blocks through 256-bit registers; the rest (a last partial block of k or of
 * columns, the zero padding) as lf_pack_rows_*_generic. Element by element the reads jumped sn
 * apart: packing W and RW was 7.4% of the instructions of a (20, 1, 32, 32) float32 training
 * step (callgrind). */

/* LF_Y_W values down each of LF_Y_W columns sn apart from src, to LF_Y_W rows of Bp Np apart
 * from row */
LF_TARGET LF_ALWAYS_INLINE void LF_NAME(lf_transpose_block)(const LF_T* src, ptrdiff_t sn,
                                                            LF_T* row, ptrdiff_t Np)
{
#if LF_F32
    /* 8 x 8 floats: pairs of columns interleaved, then quads, then the 128-bit halves exchanged */
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + sn);
    __m256 r2 = _mm256_loadu_ps(src + 2 * sn), r3 = _mm256_loadu_ps(src + 3 * sn);
    __m256 r4 = _mm256_loadu_ps(src + 4 * sn), r5 = _mm256_loadu_ps(src + 5 * sn);
    __m256 r6 = _mm256_loadu_ps(src + 6 * sn), r7 = _mm256_loadu_ps(src + 7 * sn);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(row, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(row + Np, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(row + 2 * Np, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(row + 3 * Np, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(row + 4 * Np, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(row + 5 * Np, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(row + 6 * Np, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(row + 7 * Np, _mm256_permute2f128_ps(s3, s7, 0x31));
#else
    /* 4 x 4 doubles: pairs of columns interleaved, then the 128-bit halves exchanged */
    __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + sn);
    __m256d r2 = _mm256_loadu_pd(src + 2 * sn), r3 = _mm256_loadu_pd(src + 3 * sn);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(row, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(row + Np, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(row + 2 * Np, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(row + 3 * Np, _mm256_permute2f128_pd(t1, t3, 0x31));
#endif
}

/* B (column-major, element (k, n) at B[k + n * sn]) packed as rows (lf_pack_rows_*_generic's
 * layout) */
LF_TARGET static void LF_NAME(lf_pack_rows)(const LF_T* B, ptrdiff_t sn, ptrdiff_t K,
                                            ptrdiff_t N, LF_T* Bp)
{
    const ptrdiff_t BW = LF_Y_W;
    ptrdiff_t Np = ((N + LF_ROW_PAD - 1) / LF_ROW_PAD) * LF_ROW_PAD;
    ptrdiff_t Nb = N - N % BW, Kb = K - K % BW;
    for (ptrdiff_t n0 = 0; n0 < Nb; n0 += BW) {
        const LF_T* col = B + n0 * sn;
        for (ptrdiff_t k0 = 0; k0 < Kb; k0 += BW)
            LF_NAME(lf_transpose_block)(col + k0, sn, Bp + k0 * Np + n0, Np);
        for (ptrdiff_t k = Kb; k < K; k++)
            for (ptrdiff_t j = 0; j < BW; j++)
                Bp[k * Np + n0 + j] = col[k + j * sn];
    }
    for (ptrdiff_t k = 0; k < K; k++)
        for (ptrdiff_t n = Nb; n < Np; n++)
            Bp[k * Np + n] = n < N ? B[k + n * sn] : (LF_T)0;
}

/* ---- C[M, N] = addend + A[M, K] B (+ bias) for row-packed B (few rows of A), one row of C at a
 * time, 4 x LF_Y_W columns per pass over K. 256-bit vectors on every instruction set: the rows
 * are padded to 8 elements only. */
LF_TARGET static void LF_NAME(lf_gemm_rows)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const LF_T* A,
                                            ptrdiff_t lda, const LF_T* Bp, LF_T* C,
                                            ptrdiff_t ldc, const LF_T* addend,
                                            ptrdiff_t ld_addend, const LF_T* bias)
{
    const ptrdiff_t W = LF_Y_W;
    ptrdiff_t Np = ((N + LF_ROW_PAD - 1) / LF_ROW_PAD) * LF_ROW_PAD;
    LF_T tmp[4 * LF_Y_W];
    for (ptrdiff_t m = 0; m < M; m++) {
        for (ptrdiff_t n0 = 0; n0 < Np; n0 += 4 * W) {
            LF_Y acc0 = LF_Y_ZERO(), acc1 = LF_Y_ZERO(), acc2 = LF_Y_ZERO(), acc3 = LF_Y_ZERO();
            ptrdiff_t width = Np - n0 < 4 * W ? Np - n0 : 4 * W;
            if (bias != NULL) {
                /* bias has N elements, the accumulators cover up to Np: the last group through
                 * tmp */
                const LF_T* from = bias + n0;
                if (n0 + 4 * W > N) {
                    for (ptrdiff_t j = 0; j < 4 * W; j++)
                        tmp[j] = n0 + j < N ? bias[n0 + j] : (LF_T)0;
                    from = tmp;
                }
                acc0 = LF_Y_LOAD(from);
                acc1 = LF_Y_LOAD(from + W);
                acc2 = LF_Y_LOAD(from + 2 * W);
                acc3 = LF_Y_LOAD(from + 3 * W);
            }
            const LF_T* b = Bp + n0;
            if (width == 4 * W) {
                for (ptrdiff_t k = 0; k < K; k++) {
                    LF_Y a = LF_Y_BCAST(A + m + k * lda);
                    const LF_T* row = b + k * Np;
                    acc0 = LF_Y_FMADD(a, LF_Y_LOAD(row), acc0);
                    acc1 = LF_Y_FMADD(a, LF_Y_LOAD(row + W), acc1);
                    acc2 = LF_Y_FMADD(a, LF_Y_LOAD(row + 2 * W), acc2);
                    acc3 = LF_Y_FMADD(a, LF_Y_LOAD(row + 3 * W), acc3);
                }
            } else {
                /* the last 8 (float) / 4 (double)-column groups: Np is a multiple of 8 */
                for (ptrdiff_t k = 0; k < K; k++) {
                    LF_Y a = LF_Y_BCAST(A + m + k * lda);
                    const LF_T* row = b + k * Np;
                    acc0 = LF_Y_FMADD(a, LF_Y_LOAD(row), acc0);
                    if (width > W) acc1 = LF_Y_FMADD(a, LF_Y_LOAD(row + W), acc1);
                    if (width > 2 * W) acc2 = LF_Y_FMADD(a, LF_Y_LOAD(row + 2 * W), acc2);
                }
            }
            ptrdiff_t ncols = N - n0 < 4 * W ? N - n0 : 4 * W;
            LF_T* c = C + m + n0 * ldc;
            const LF_T* add = addend != NULL ? addend + m + n0 * ld_addend : NULL;
            if (ncols == 4 * W && ldc == 1 && (add == NULL || ld_addend == 1)) {
                /* one row of C (and of the addend) contiguous: straight from the registers */
                if (add != NULL) {
                    acc0 = LF_Y_ADD(LF_Y_LOAD(add), acc0);
                    acc1 = LF_Y_ADD(LF_Y_LOAD(add + W), acc1);
                    acc2 = LF_Y_ADD(LF_Y_LOAD(add + 2 * W), acc2);
                    acc3 = LF_Y_ADD(LF_Y_LOAD(add + 3 * W), acc3);
                }
                LF_Y_STORE(c, acc0);
                LF_Y_STORE(c + W, acc1);
                LF_Y_STORE(c + 2 * W, acc2);
                LF_Y_STORE(c + 3 * W, acc3);
                continue;
            }
            LF_Y_STORE(tmp, acc0);
            LF_Y_STORE(tmp + W, acc1);
            LF_Y_STORE(tmp + 2 * W, acc2);
            LF_Y_STORE(tmp + 3 * W, acc3);
            if (add != NULL)
                for (ptrdiff_t j = 0; j < ncols; j++) c[j * ldc] = add[j * ld_addend] + tmp[j];
            else
                for (ptrdiff_t j = 0; j < ncols; j++) c[j * ldc] = tmp[j];
        }
    }
}

/* ---- c[n] = addend[n] + sum_k a[k] B[k + n * ldb] for n < N: one contiguous row of A times a
 * column-major B read where it is (a single step of one example, the streaming case: packing B
 * would cost as much as the product, and BLAS's gemv was 35% of such a step). Each column is a
 * dot product down its contiguous k: lane l of a 256-bit accumulator sums the terms k = l mod
 * LF_Y_W in order of k (the last partial vector through masked loads), then the lanes are added
 * pairwise, (0+1)+(2+3) (+ (4+5)+(6+7) for float), and the addend last. 256-bit vectors on every
 * instruction set, so the paths agree to the bit. Eight columns at a time: eight independent
 * accumulator chains. c and addend (NULL: none) are contiguous. */
LF_TARGET static void LF_NAME(lf_dot_columns)(ptrdiff_t N, ptrdiff_t K, const LF_T* a,
                                              const LF_T* B, ptrdiff_t ldb, LF_T* c,
                                              const LF_T* addend)
{
    const ptrdiff_t W = LF_Y_W;
    ptrdiff_t Kb = K - K % W;
    __m256i tail = LF_Y_MASK_OF(K - Kb);
    for (ptrdiff_t n0 = 0; n0 < N; n0 += 8) {
        ptrdiff_t count = N - n0 < 8 ? N - n0 : 8;
        LF_Y acc[8];
        const LF_T* column[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            acc[j] = LF_Y_ZERO();
            /* past N: column n0 again, computed and not stored */
            column[j] = B + (j < count ? n0 + j : n0) * ldb;
        }
        for (ptrdiff_t k = 0; k < Kb; k += W) {
            LF_Y av = LF_Y_LOAD(a + k);
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                acc[j] = LF_Y_FMADD(av, LF_Y_LOAD(column[j] + k), acc[j]);
        }
        if (Kb < K) {
            LF_Y av = LF_Y_LOAD_MASKED(a + Kb, tail);
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                acc[j] = LF_Y_FMADD(av, LF_Y_LOAD_MASKED(column[j] + Kb, tail), acc[j]);
        }
        /* the sums of columns n0 .. n0 + 7 in order, LF_Y_W per vector */
        LF_Y sum[8 / LF_Y_W];
#if LF_F32
        /* hadd twice: lanes (0+1)+(2+3) of columns 0-3 (4-7) in the low 128 bits of q0 (q1),
         * (4+5)+(6+7) in the high ones; then the halves added */
        __m256 q0 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
        __m256 q1 = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
        sum[0] = _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20),
                               _mm256_permute2f128_ps(q0, q1, 0x31));
#else
        /* hadd: lanes 0+1 and 2+3 of two columns; the 128-bit halves regrouped, then added */
        for (int g = 0; g < 2; g++) {
            __m256d p01 = _mm256_hadd_pd(acc[4 * g], acc[4 * g + 1]);
            __m256d p23 = _mm256_hadd_pd(acc[4 * g + 2], acc[4 * g + 3]);
            sum[g] = _mm256_add_pd(_mm256_permute2f128_pd(p01, p23, 0x20),
                                   _mm256_permute2f128_pd(p01, p23, 0x31));
        }
#endif
        if (count == 8) {
            /* straight from the registers (through a buffer, the 512-bit load GCC made of the
             * two stores stalled on store forwarding: 20% of the kernel) */
#pragma GCC unroll 2
            for (int v = 0; v < 8 / LF_Y_W; v++) {
                LF_Y out = sum[v];
                if (addend != NULL)
                    out = LF_Y_ADD(LF_Y_LOAD(addend + n0 + v * LF_Y_W), out);
                LF_Y_STORE(c + n0 + v * LF_Y_W, out);
            }
            continue;
        }
        LF_T sums[8];
#pragma GCC unroll 2
        for (int v = 0; v < 8 / LF_Y_W; v++)
            LF_Y_STORE(sums + v * LF_Y_W, sum[v]);
        if (addend != NULL)
            for (ptrdiff_t j = 0; j < count; j++) c[n0 + j] = addend[n0 + j] + sums[j];
        else
            for (ptrdiff_t j = 0; j < count; j++) c[n0 + j] = sums[j];
    }
}

/* ---- the panel kernel: one register tile of C, rows m0 .. m0 + rows - 1 (rb blocks of LF_MR,
 * block r of A at a + r * a_block, its element (i, k) at i + k * lda), columns n0 .. n0 +
 * ncols - 1 (cp panels of B, panel q at panel + q * K * LF_NR). C, addend and bias point at
 * (m0, n0); next: the next tile's panels, fetched into L2 meanwhile, or NULL. rb, cp and full
 * are constants at every call (always inlined), so each shape is its own code with its
 * accumulators in registers; full: rows == rb * LF_MR (else the loads of A are masked past M
 * and C is written through a buffer). */
LF_TARGET LF_ALWAYS_INLINE void LF_NAME(lf_gemm_tile)(
    ptrdiff_t K, const LF_T* a, ptrdiff_t lda, ptrdiff_t a_block, ptrdiff_t rows,
    const LF_T* panel, ptrdiff_t ncols, LF_T* C, ptrdiff_t ldc, const LF_T* addend,
    ptrdiff_t ld_addend, const LF_T* bias, const LF_T* next, const int rb, const int cp,
    const int full)
{
    LF_P acc[LF_RB_MAX][LF_TILE_COLUMNS][LF_VPB];
    LF_T b[LF_TILE_COLUMNS] = {0};
    if (bias != NULL)
        for (ptrdiff_t j = 0; j < ncols; j++) b[j] = bias[j];
#pragma GCC unroll 16
    for (int j = 0; j < cp * LF_NR; j++)
#pragma GCC unroll 4
        for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
            for (int v = 0; v < LF_VPB; v++)
                acc[r][j][v] = bias != NULL ? LF_P_SET1(b[j]) : LF_P_ZERO();
    if (addend != NULL && addend != C)
        /* a cold source (the step's input projection): start its tile's lines now */
        for (ptrdiff_t j = 0; j < ncols; j++) {
            const LF_T* column = addend + j * ld_addend;
            _mm_prefetch((const char*)column, _MM_HINT_T0);
            _mm_prefetch((const char*)(column + rows - 1), _MM_HINT_T0);
        }
    LF_P_MASK mask[LF_RB_MAX][LF_VPB];
    if (!full)
#pragma GCC unroll 4
        for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
            for (int v = 0; v < LF_VPB; v++)
                mask[r][v] = LF_P_MASK_OF(rows - r * LF_MR - v * LF_P_W);
    for (ptrdiff_t k = 0; k < K; k++) {
        LF_P av[LF_RB_MAX][LF_VPB];
        /* the next tile's panels (LF_TILE_COLUMNS * K elements from `next`) into L2, one
         * prefetch LF_TILE_COLUMNS elements further per term, so every line of them by the
         * last term (past the end of B, where the next tile has fewer panels, a prefetch
         * loads nothing and never faults) */
        if (next != NULL)
            _mm_prefetch((const char*)(next + k * LF_TILE_COLUMNS), _MM_HINT_T1);
#pragma GCC unroll 4
        for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
            for (int v = 0; v < LF_VPB; v++) {
                const LF_T* p = a + r * a_block + k * lda + v * LF_P_W;
                av[r][v] = full ? LF_P_LOAD(p) : LF_P_LOAD_MASKED(p, mask[r][v]);
            }
#pragma GCC unroll 16
        for (int j = 0; j < cp * LF_NR; j++) {
            LF_P bj = LF_P_BCAST(panel + (j / LF_NR) * K * LF_NR + k * LF_NR + j % LF_NR);
#pragma GCC unroll 4
            for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
                for (int v = 0; v < LF_VPB; v++)
                    acc[r][j][v] = LF_P_FMADD(av[r][v], bj, acc[r][j][v]);
        }
    }
#pragma GCC unroll 16
    for (int j = 0; j < cp * LF_NR; j++) {
        if (j >= ncols)
            break;
        LF_T* c = C + j * ldc;
        const LF_T* add = addend != NULL ? addend + j * ld_addend : NULL;
        if (full) {
#pragma GCC unroll 4
            for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
                for (int v = 0; v < LF_VPB; v++) {
                    ptrdiff_t at = r * LF_MR + v * LF_P_W;
                    LF_P_STORE(c + at, add != NULL ? LF_P_ADD(LF_P_LOAD(add + at), acc[r][j][v])
                                                   : acc[r][j][v]);
                }
        } else {
            LF_T tmp[LF_RB_MAX * LF_MR];
#pragma GCC unroll 4
            for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
                for (int v = 0; v < LF_VPB; v++)
                    LF_P_STORE(tmp + r * LF_MR + v * LF_P_W, acc[r][j][v]);
            ptrdiff_t count = rows < rb * LF_MR ? rows : rb * LF_MR;   /* rows, as GCC can see */
            for (ptrdiff_t i = 0; i < count; i++) c[i] = add != NULL ? add[i] + tmp[i] : tmp[i];
        }
    }
}

/* Elements of B above which the panel kernel fetches each tile's successor into L2 while the
 * tile's first block of rows is computed: 2 MB of B, which L2 (1-2 MB a core) cannot keep
 * between products, so each tile's panels came from L3 as the tile needed them. Measured on
 * AMD Zen 4, one thread, float32 (bench_recurrent_product.c, 128 x 4096 x 1024): AVX-512
 * 106 -> 109 GFLOP/s, AVX2 100 -> 108; a (500, 128, 512, 1024) forward 8.25 -> 8.11 s
 * (AVX-512) and 8.89 -> 8.54 s (AVX2). At 1 MB of B and below (h 256) it only cost time. */
#define LF_PREFETCH_B_MIN ((ptrdiff_t)(2 << 20) / (ptrdiff_t)sizeof(LF_T))

/* C[M, N] = addend + A[M, K] B + 1 bias^T on panel-packed B: every tile of LF_CP_MAX panels
 * swept against all M rows of A (the panels stay in L1), LF_RB_MAX blocks of rows at a time.
 * A's rows m0 .. m0 + LF_MR - 1 start at A + (m0 / LF_MR) * a_block, element (r, k) of them at
 * r + k * lda: a_block LF_MR for column-major A, LF_MR * K with lda LF_MR for A packed by
 * lf_gemm_packed_*. */
LF_TARGET static void LF_NAME(lf_gemm_panels)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                                              const LF_T* A, ptrdiff_t lda, ptrdiff_t a_block,
                                              const LF_T* Bp, LF_T* C, ptrdiff_t ldc,
                                              const LF_T* addend, ptrdiff_t ld_addend,
                                              const LF_T* bias)
{
    int prefetch = K * N > LF_PREFETCH_B_MIN;
    for (ptrdiff_t n0 = 0; n0 < N; n0 += LF_TILE_COLUMNS) {
        const LF_T* panel = Bp + (n0 / LF_NR) * K * LF_NR;
        ptrdiff_t ncols = N - n0 < LF_TILE_COLUMNS ? N - n0 : LF_TILE_COLUMNS;
        int cp = (int)((ncols + LF_NR - 1) / LF_NR);
        const LF_T* b = bias != NULL ? bias + n0 : NULL;
        for (ptrdiff_t m0 = 0; m0 < M; m0 += LF_RB_MAX * LF_MR) {
            ptrdiff_t rows = M - m0 < LF_RB_MAX * LF_MR ? M - m0 : LF_RB_MAX * LF_MR;
            int rb = (int)((rows + LF_MR - 1) / LF_MR), full = rows == rb * LF_MR;
            const LF_T* a = A + (m0 / LF_MR) * a_block;
            LF_T* c = C + m0 + n0 * ldc;
            const LF_T* add = addend != NULL ? addend + m0 + n0 * ld_addend : NULL;
            const LF_T* next = prefetch && m0 == 0 && n0 + LF_TILE_COLUMNS < N
                               ? panel + LF_TILE_COLUMNS * K : NULL;
            /* one call per tile shape, each with its shape constant */
#define LF_TILE(RB, CP, FULL) \
    LF_NAME(lf_gemm_tile)(K, a, lda, a_block, rows, panel, ncols, c, ldc, add, ld_addend, b, \
                          next, RB, CP, FULL)
            if (rb == LF_RB_MAX && cp == LF_CP_MAX) {
                if (full) LF_TILE(LF_RB_MAX, LF_CP_MAX, 1);
                else LF_TILE(LF_RB_MAX, LF_CP_MAX, 0);
            }
#if LF_RB_MAX > 1
            else if (cp == LF_CP_MAX) {
                if (full) LF_TILE(1, LF_CP_MAX, 1);
                else LF_TILE(1, LF_CP_MAX, 0);
            }
#endif
#if LF_CP_MAX > 1
            else if (rb == LF_RB_MAX) {
                if (full) LF_TILE(LF_RB_MAX, 1, 1);
                else LF_TILE(LF_RB_MAX, 1, 0);
            }
#endif
#if LF_RB_MAX > 1 && LF_CP_MAX > 1
            else {
                if (full) LF_TILE(1, 1, 1);
                else LF_TILE(1, 1, 0);
            }
#endif
#undef LF_TILE
        }
    }
}

/* The product of lf_gemm_panels with A read in place (a_pack NULL) or first copied into blocks
 * of LF_MR rows, each one run of K columns (a_pack: ceil(M / LF_MR) * LF_MR * K elements,
 * lstmfast/_layout.pxd's _a_pack_len; a_packed != 0: a_pack holds this A packed already, by the
 * previous call on other columns). Why: in place, the columns of a block of A are lda apart; at
 * minibatch 128 (float) or 64 (double) that is 512 bytes, so one tile's column of A falls into 8
 * of L1's 64 sets and evicts the B panel it works on. Measured at 128 x 4096 x 1024 float, one
 * thread, AVX2: 70 -> 92 GFLOP/s (blocking K instead, with A in place, gave nothing). */
LF_TARGET static void LF_NAME(lf_gemm_packed)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                                              const LF_T* A, ptrdiff_t lda, const LF_T* Bp,
                                              LF_T* C, ptrdiff_t ldc, const LF_T* addend,
                                              ptrdiff_t ld_addend, const LF_T* bias,
                                              LF_T* a_pack, int a_packed)
{
    if (M < LF_SMALL_M) {
        LF_NAME(lf_gemm_rows)(M, N, K, A, lda, Bp, C, ldc, addend, ld_addend, bias);
        return;
    }
    if (a_pack == NULL) {
        LF_NAME(lf_gemm_panels)(M, N, K, A, lda, LF_MR, Bp, C, ldc, addend, ld_addend, bias);
        return;
    }
    if (!a_packed)
        LF_TYPED(lf_pack_a_columns)(M, K, A, lda, 0, K, a_pack);
    LF_NAME(lf_gemm_panels)(M, N, K, a_pack, LF_MR, LF_MR * K, Bp, C, ldc, addend, ld_addend,
                            bias);
}

#undef LF_MR
#undef LF_Y
#undef LF_Y_W
#undef LF_Y_ZERO
#undef LF_Y_LOAD
#undef LF_Y_STORE
#undef LF_Y_BCAST
#undef LF_Y_FMADD
#undef LF_Y_ADD
#undef LF_Y_MASK_OF
#undef LF_Y_LOAD_MASKED
#undef LF_RB_MAX
#undef LF_CP_MAX
#undef LF_P
#undef LF_P_W
#undef LF_P_ZERO
#undef LF_P_SET1
#undef LF_P_LOAD
#undef LF_P_STORE
#undef LF_P_ADD
#undef LF_P_BCAST
#undef LF_P_FMADD
#undef LF_P_MASK
#undef LF_P_MASK_OF
#undef LF_P_MASK_BITS
#undef LF_P_LOAD_MASKED
#undef LF_VPB
#undef LF_TILE_COLUMNS
#undef LF_PREFETCH_B_MIN
