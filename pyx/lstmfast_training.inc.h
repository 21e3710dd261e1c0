/*
 * Template: the element-wise loops of a training step around the LSTM passes, for one element
 * type and one instruction set (lstmfast_training_types.inc.h includes it once per pair):
 * the softmax output layer's activations, its cross-entropy (DL4J's MCXENT) and that loss's
 * gradient, and Adam's update. Parameters LF_T, LF_SFX, LF_ISA, LF_TARGET as for
 * lstmfast_math.inc.h. Defines lf_{softmax_rows, softmax_xent, softmax_xent_gradient,
 * adam}_<SFX>_<ISA>.
 *
 * Rows are contiguous [rows, n] arrays. NumPy took a pass over memory and a temporary for each
 * operation of these formulas (a softmax: five passes, four temporaries); here a row's work is
 * one or two passes while the row is in L1. Reductions along a row keep LF_TRAINING_PARTS
 * partial results, so that they vectorise and no chain of dependent adds sets the pace.
 *
 * Multiplies and adds are not fused (fp-contract off): every instruction set gives the same
 * bits, and Adam the bits of NumPy evaluating its formula operation by operation.
 */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

/* the largest of z[0:n] (n >= 1) that is not NaN: a NaN in a row makes its sum of exponentials
 * NaN, and so its softmax and its loss, as with NumPy's max. Compiled as if no operand were NaN
 * (finite-math-only) so that GCC may vectorise the compare-and-select as a max (it kept 16
 * scalar chains otherwise): the vector max returns one of its operands either way, and a NaN in
 * the row is not lost, since its difference to the max is NaN. */
#pragma GCC push_options
#pragma GCC optimize("finite-math-only", "no-signed-zeros")
LF_TARGET static inline LF_T LF_NAME(lf_row_max)(const LF_T* restrict z, ptrdiff_t n)
{
    LF_T m = z[0];
    for (ptrdiff_t j = 1; j < n; j++) m = z[j] > m ? z[j] : m;
    return m;
}
#pragma GCC pop_options

/* the LF_TRAINING_PARTS (8) partial sums added pairwise */
LF_TARGET LF_ALWAYS_INLINE double LF_NAME(lf_sum_parts)(const double* part)
{
    return ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
}

/* x[0] + ... + x[n-1] in double (a float32 row of many classes keeps its digits) */
LF_TARGET LF_ALWAYS_INLINE double LF_NAME(lf_row_sum)(const LF_T* restrict x, ptrdiff_t n)
{
    double part[LF_TRAINING_PARTS];
    ptrdiff_t full = n - n % LF_TRAINING_PARTS, j;
    for (int k = 0; k < LF_TRAINING_PARTS; k++) part[k] = 0;
    for (j = 0; j < full; j += LF_TRAINING_PARTS)
        for (int k = 0; k < LF_TRAINING_PARTS; k++) part[k] += (double)x[j + k];
    for (; j < n; j++) part[0] += (double)x[j];
    return LF_NAME(lf_sum_parts)(part);
}

/* For `rows` rows of z (rows * n at most LF_TRAINING_BLOCK, or one row): row_max[r], the row's
 * e = exp(z - row_max[r]) and sums[r], the sum of e (in double). e may be z. The exponentials of
 * the whole block are one loop: a loop per row left each row's last n % (vector width) elements
 * to the scalar code, most of the time at 77 classes. */
LF_TARGET static void LF_NAME(lf_shifted_exp_block)(ptrdiff_t rows, ptrdiff_t n, const LF_T* z,
                                                    LF_T* e, LF_T* row_max, double* sums)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        LF_T m = LF_NAME(lf_row_max)(z + r * n, n);
        row_max[r] = m;
        for (ptrdiff_t j = 0; j < n; j++) e[r * n + j] = z[r * n + j] - m;
    }
    for (ptrdiff_t i = 0; i < rows * n; i++) e[i] = LF_TYPED(lf_exp)(e[i]);
    for (ptrdiff_t r = 0; r < rows; r++) sums[r] = LF_NAME(lf_row_sum)(e + r * n, n);
}

/* a = softmax(z) row by row, exp(z - max) times 1 / sum: the row's largest is subtracted first,
 * so that no exponential overflows. a may be z. */
LF_TARGET static void LF_NAME(lf_softmax_rows)(ptrdiff_t rows, ptrdiff_t n, const LF_T* z,
                                               LF_T* a)
{
    LF_T row_max[LF_TRAINING_BLOCK];
    double sums[LF_TRAINING_BLOCK];
    ptrdiff_t block = n < LF_TRAINING_BLOCK ? LF_TRAINING_BLOCK / n : 1;
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += block) {
        ptrdiff_t count = rows - r0 < block ? rows - r0 : block;
        LF_NAME(lf_shifted_exp_block)(count, n, z + r0 * n, a + r0 * n, row_max, sums);
        for (ptrdiff_t r = 0; r < count; r++) {
            /* one division per row (a division per element was most of the pass's time) */
            LF_T inverse = (LF_T)(1.0 / sums[r]);
            LF_T* restrict row = a + (r0 + r) * n;
            for (ptrdiff_t j = 0; j < n; j++) row[j] = row[j] * inverse;
        }
    }
}

/* The sum over rows of -sum_j y[j] log softmax(z)[j], each row's loss times row_mask[r] (NULL:
 * no mask), in double, with log softmax(z) = (z - max) - log(sum exp(z - max)): never a log of
 * 0. scratch: max(n, LF_TRAINING_BLOCK) elements. */
LF_TARGET static double LF_NAME(lf_softmax_xent)(ptrdiff_t rows, ptrdiff_t n, const LF_T* z,
                                                 const LF_T* y, const LF_T* row_mask,
                                                 LF_T* scratch)
{
    LF_T row_max[LF_TRAINING_BLOCK];
    double sums[LF_TRAINING_BLOCK];
    ptrdiff_t block = n < LF_TRAINING_BLOCK ? LF_TRAINING_BLOCK / n : 1;
    double total = 0;
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += block) {
        ptrdiff_t count = rows - r0 < block ? rows - r0 : block;
        LF_NAME(lf_shifted_exp_block)(count, n, z + r0 * n, scratch, row_max, sums);
        for (ptrdiff_t r = 0; r < count; r++) {
            const LF_T* restrict zr = z + (r0 + r) * n;
            const LF_T* restrict yr = y + (r0 + r) * n;
            LF_T m = row_max[r], log_sum = (LF_T)log(sums[r]);
            double part[LF_TRAINING_PARTS];
            ptrdiff_t full = n - n % LF_TRAINING_PARTS, j;
            for (int k = 0; k < LF_TRAINING_PARTS; k++) part[k] = 0;
            for (j = 0; j < full; j += LF_TRAINING_PARTS)
                for (int k = 0; k < LF_TRAINING_PARTS; k++)
                    part[k] += (double)(yr[j + k] * ((zr[j + k] - m) - log_sum));
            for (; j < n; j++) part[0] += (double)(yr[j] * ((zr[j] - m) - log_sum));
            double row_sum = LF_NAME(lf_sum_parts)(part);
            total -= row_mask != NULL ? row_sum * (double)row_mask[r0 + r] : row_sum;
        }
    }
    return total;
}

/* dz = (a sum_j y[j] - y) (times row_mask[r]; NULL: no mask) / divisor: the gradient of
 * lf_softmax_xent / divisor with respect to z, from a = softmax(z). dz may be a or y. */
LF_TARGET static void LF_NAME(lf_softmax_xent_gradient)(ptrdiff_t rows, ptrdiff_t n,
                                                        const LF_T* a, const LF_T* y,
                                                        const LF_T* row_mask, LF_T divisor,
                                                        LF_T* dz)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        const LF_T* ar = a + r * n;
        const LF_T* yr = y + r * n;
        LF_T* dr = dz + r * n;
        LF_T label_sum = (LF_T)LF_NAME(lf_row_sum)(yr, n);
        if (row_mask != NULL) {
            LF_T scale = row_mask[r];
            for (ptrdiff_t j = 0; j < n; j++) dr[j] = ((ar[j] * label_sum - yr[j]) * scale) / divisor;
        } else {
            for (ptrdiff_t j = 0; j < n; j++) dr[j] = (ar[j] * label_sum - yr[j]) / divisor;
        }
    }
}

/* Adam (DL4J's AdamUpdater) on n parameters, into new arrays:
 *   m' = b1 m + (1 - b1) g,  v' = b2 v + (1 - b2) g^2,  p' = p - alpha m' / (sqrt(v') + eps)
 * alpha = lr sqrt(1 - b2^t) / (1 - b1^t); one_minus_b1 = 1 - b1 and one_minus_b2 = 1 - b2 rounded
 * from double, as NumPy rounds a Python float. Each operation rounds in the formula's order. */
LF_TARGET static void LF_NAME(lf_adam)(ptrdiff_t n, const LF_T* restrict p,
                                       const LF_T* restrict g, const LF_T* restrict m,
                                       const LF_T* restrict v, LF_T b1, LF_T b2,
                                       LF_T one_minus_b1, LF_T one_minus_b2, LF_T eps,
                                       LF_T alpha, LF_T* restrict new_p, LF_T* restrict new_m,
                                       LF_T* restrict new_v)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        LF_T mi = m[i] * b1 + one_minus_b1 * g[i];
        LF_T square = (g[i] * g[i]) * one_minus_b2;
        LF_T vi = v[i] * b2 + square;
        new_m[i] = mi;
        new_v[i] = vi;
        new_p[i] = p[i] - (mi * alpha) / (LF_SQRT(vi) + eps);
    }
}

#pragma GCC pop_options
