/*
 * Template: for one element type (LF_T, LF_SFX, LF_F32; see lstmfast_simd.h), the vectorised
 * math and the packed products on every instruction set, the variants in use, and their choice.
 */

/* rows per block of A packed for the panel kernel (lf_gemm_packed's a_pack; its LF_MR) */
#define LF_A_BLOCK_ROWS (LF_F32 ? 16 : 8)

/* Columns k0 .. k0 + count - 1 of A [M, K] (column k at A + k * lda) into a_pack, laid out as
 * lf_gemm_packed packs A (blocks of LF_A_BLOCK_ROWS rows, each a run of K columns): the threads
 * of a team that each write some columns of the next step's A pack their own, and the product
 * then reads all of a_pack as packed (a_packed 1), instead of every thread packing all of A;
 * lf_gemm_packed packs all of an A with it. */
static inline void LF_TYPED(lf_pack_a_columns)(ptrdiff_t M, ptrdiff_t K, const LF_T* A, ptrdiff_t lda,
                                        ptrdiff_t k0, ptrdiff_t count, LF_T* a_pack)
{
    for (ptrdiff_t m0 = 0; m0 < M; m0 += LF_A_BLOCK_ROWS) {
        ptrdiff_t rows = M - m0 < LF_A_BLOCK_ROWS ? M - m0 : LF_A_BLOCK_ROWS;
        LF_T* block = a_pack + (m0 / LF_A_BLOCK_ROWS) * LF_A_BLOCK_ROWS * K;
        for (ptrdiff_t k = k0; k < k0 + count; k++)
            for (ptrdiff_t r = 0; r < rows; r++)
                block[k * LF_A_BLOCK_ROWS + r] = A[m0 + r + k * lda];
    }
}

/* ---- one instantiation per instruction set (the packed products on the vector ones only) */
#define LF_EACH_ISA_TEMPLATE "lstmfast_math.inc.h"
#define LF_EACH_VECTOR_ISA_TEMPLATE "lstmfast_gemm.inc.h"
#include "lstmfast_each_isa.inc.h"
#undef LF_EACH_ISA_TEMPLATE
#undef LF_EACH_VECTOR_ISA_TEMPLATE

/* ---- the packings in plain C (element (k, n) of B at B[k * sk + n * sn]) */

/* B packed in panels of LF_NR columns */
static void LF_TYPED(lf_pack_b)(const LF_T* B, ptrdiff_t sk, ptrdiff_t sn, ptrdiff_t K,
                                ptrdiff_t N, LF_T* Bp)
{
    for (ptrdiff_t n0 = 0; n0 < N; n0 += LF_NR) {
        LF_T* panel = Bp + (n0 / LF_NR) * K * LF_NR;
        for (ptrdiff_t k = 0; k < K; k++)
            for (ptrdiff_t j = 0; j < LF_NR; j++)
                panel[k * LF_NR + j] = n0 + j < N ? B[k * sk + (n0 + j) * sn] : (LF_T)0;
    }
}

/* B packed as rows of N padded to LF_ROW_PAD */
static void LF_TYPED(lf_pack_rows_generic)(const LF_T* B, ptrdiff_t sk, ptrdiff_t sn,
                                           ptrdiff_t K, ptrdiff_t N, LF_T* Bp)
{
    ptrdiff_t Np = ((N + LF_ROW_PAD - 1) / LF_ROW_PAD) * LF_ROW_PAD;
    for (ptrdiff_t k = 0; k < K; k++)
        for (ptrdiff_t n = 0; n < Np; n++)
            Bp[k * Np + n] = n < N ? B[k * sk + n * sn] : (LF_T)0;
}

/* ---- the variants in use; written once by lf_select_simd (at module import), read-only after */
typedef void (*LF_TYPED(lf_array_fn))(const LF_T*, LF_T*, ptrdiff_t);
static LF_TYPED(lf_array_fn) LF_TYPED(lf_tanh_array) = LF_VARIANT(lf_tanh_array, baseline);
static LF_TYPED(lf_array_fn) LF_TYPED(lf_sigmoid_array) = LF_VARIANT(lf_sigmoid_array, baseline);
static LF_TYPED(lf_array_fn) LF_TYPED(lf_exp_array) = LF_VARIANT(lf_exp_array, baseline);

static void LF_TYPED(lf_select_simd)(int level)
{
    LF_TYPED(lf_tanh_array) = LF_VARIANT(lf_tanh_array, baseline);
    LF_TYPED(lf_sigmoid_array) = LF_VARIANT(lf_sigmoid_array, baseline);
    LF_TYPED(lf_exp_array) = LF_VARIANT(lf_exp_array, baseline);
#if LF_HAVE_DISPATCH
    if (level == LF_ISA_AVX2) {
        LF_TYPED(lf_tanh_array) = LF_VARIANT(lf_tanh_array, avx2);
        LF_TYPED(lf_sigmoid_array) = LF_VARIANT(lf_sigmoid_array, avx2);
        LF_TYPED(lf_exp_array) = LF_VARIANT(lf_exp_array, avx2);
    } else if (level == LF_ISA_AVX512) {
        LF_TYPED(lf_tanh_array) = LF_VARIANT(lf_tanh_array, avx512);
        LF_TYPED(lf_sigmoid_array) = LF_VARIANT(lf_sigmoid_array, avx512);
        LF_TYPED(lf_exp_array) = LF_VARIANT(lf_exp_array, avx512);
    }
#else
    (void)level;
#endif
}

/* B packed as rows for the row kernel: a column-major B (sk 1) through the vector transpose when
 * the packed products are in use */
static void LF_TYPED(lf_pack_rows)(const LF_T* B, ptrdiff_t sk, ptrdiff_t sn, ptrdiff_t K,
                                   ptrdiff_t N, LF_T* Bp)
{
#if LF_HAVE_DISPATCH
    if (sk == 1 && lf_simd_level == LF_ISA_AVX2) {
        LF_VARIANT(lf_pack_rows, avx2)(B, sn, K, N, Bp);
        return;
    }
    if (sk == 1 && lf_simd_level == LF_ISA_AVX512) {
        LF_VARIANT(lf_pack_rows, avx512)(B, sn, K, N, Bp);
        return;
    }
#endif
    LF_TYPED(lf_pack_rows_generic)(B, sk, sn, K, N, Bp);
}

/* c[n] = addend[n] + a . B[:, n] for n < N (lf_dot_columns: B column-major, read in place); only
 * while lf_packed_gemm_available */
static inline void LF_TYPED(lf_dot_columns)(ptrdiff_t N, ptrdiff_t K, const LF_T* a,
                                            const LF_T* B, ptrdiff_t ldb, LF_T* c,
                                            const LF_T* addend)
{
#if LF_HAVE_DISPATCH
    if (lf_simd_level == LF_ISA_AVX2)
        LF_VARIANT(lf_dot_columns, avx2)(N, K, a, B, ldb, c, addend);
    else if (lf_simd_level == LF_ISA_AVX512)
        LF_VARIANT(lf_dot_columns, avx512)(N, K, a, B, ldb, c, addend);
#else
    (void)N; (void)K; (void)a; (void)B; (void)ldb; (void)c; (void)addend;
#endif
}

/* The packed product for M rows: row-packed B when M < LF_SMALL_M, panel-packed otherwise (the
 * caller packs with lf_pack_rows_* or lf_pack_b_* accordingly); only while
 * lf_packed_gemm_available. Direct calls (not through a pointer), so that GCC specialises the
 * kernels for the constant arguments of each call site (a pointer cost 0.7% of the instructions
 * of a (20, 1, 32, 32) float64 training step). */
static inline void LF_TYPED(lf_gemm_packed)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const LF_T* A,
                                            ptrdiff_t lda, const LF_T* Bp, LF_T* C, ptrdiff_t ldc,
                                            const LF_T* addend, ptrdiff_t ld_addend,
                                            const LF_T* bias, LF_T* a_pack, int a_packed)
{
#if LF_HAVE_DISPATCH
    if (lf_simd_level == LF_ISA_AVX2)
        LF_VARIANT(lf_gemm_packed, avx2)(M, N, K, A, lda, Bp, C, ldc, addend, ld_addend, bias,
                                         a_pack, a_packed);
    else if (lf_simd_level == LF_ISA_AVX512)
        LF_VARIANT(lf_gemm_packed, avx512)(M, N, K, A, lda, Bp, C, ldc, addend, ld_addend, bias,
                                           a_pack, a_packed);
#else
    (void)M; (void)N; (void)K; (void)A; (void)lda; (void)Bp; (void)C; (void)ldc; (void)addend;
    (void)ld_addend; (void)bias; (void)a_pack; (void)a_packed;
#endif
}
