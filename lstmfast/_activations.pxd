# Activation functions and their derivatives with DL4J's definitions, inline and typed over
# float/double. Codes are the public ACT_* values of lstmfast.kernels.
#
# Only kernels.pyx cimports this file (it needs pyx/lstmfast_simd.h on the include path).
#
# Derivatives take both the pre-activation x and the activation y = f(x): where f' is cheaper from
# y (tanh, sigmoid) it is computed from y, as the seed does (TimesOneMinus on the gate activation).
from cython cimport floating
from libc.math cimport (exp, expf, expm1, expm1f, log1p, log1pf, fabs, fabsf, NAN)

from lstmfast.kernels cimport (
    ACT_TANH, ACT_SIGMOID, ACT_HARDSIGMOID, ACT_SOFTSIGN, ACT_RELU, ACT_LEAKYRELU, ACT_ELU,
    ACT_SELU, ACT_SOFTPLUS, ACT_IDENTITY, ACT_HARDTANH, ACT_CUBE, ACT_RECTIFIEDTANH,
    ACT_RATIONALTANH)

# Vectorised exp/tanh/sigmoid array functions (pyx/lstmfast_simd.h), the instruction set chosen
# at run time (lf_select_isa in lstmfast/_cells.pxd).
cdef extern from "lstmfast_simd.h" nogil:
    void lf_tanh_array_f64(const double* x, double* y, Py_ssize_t n)
    void lf_sigmoid_array_f64(const double* x, double* y, Py_ssize_t n)
    void lf_exp_array_f64(const double* x, double* y, Py_ssize_t n)
    void lf_tanh_array_f32(const float* x, float* y, Py_ssize_t n)
    void lf_sigmoid_array_f32(const float* x, float* y, Py_ssize_t n)
    void lf_exp_array_f32(const float* x, float* y, Py_ssize_t n)
    int lf_load_flag(const int* flag)
    # the recurrent GEMM on weights packed once per pass (vector instruction sets only)
    int lf_packed_gemm_available
    # below LF_SMALL_M rows of A the weights are packed as rows padded to 8 (lf_pack_rows_*)
    Py_ssize_t LF_SMALL_M
    void lf_pack_rows_f32(const float* B, Py_ssize_t sk, Py_ssize_t sn, Py_ssize_t K, Py_ssize_t N, float* Bp)
    void lf_pack_rows_f64(const double* B, Py_ssize_t sk, Py_ssize_t sn, Py_ssize_t K, Py_ssize_t N, double* Bp)
    void lf_pack_b_f32(const float* B, Py_ssize_t sk, Py_ssize_t sn, Py_ssize_t K, Py_ssize_t N, float* Bp)
    void lf_pack_b_f64(const double* B, Py_ssize_t sk, Py_ssize_t sn, Py_ssize_t K, Py_ssize_t N, double* Bp)
    void lf_gemm_packed_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A, Py_ssize_t lda,
                            const float* Bp, float* C, Py_ssize_t ldc, const float* addend,
                            Py_ssize_t ld_addend, const float* bias, float* a_pack,
                            int a_packed)
    void lf_gemm_packed_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* A, Py_ssize_t lda,
                            const double* Bp, double* C, Py_ssize_t ldc, const double* addend,
                            Py_ssize_t ld_addend, const double* bias, double* a_pack,
                            int a_packed)

# DL4J's constants (ActivationLReLU default alpha, ActivationSELU, ActivationRationalTanh).
cdef extern from *:
    """
    #define LSTMFAST_LEAKYRELU_ALPHA 0.01
    #define LSTMFAST_SELU_ALPHA 1.6732632423543772848170429916717
    #define LSTMFAST_SELU_LAMBDA 1.0507009873554804934193349852946
    #define LSTMFAST_RATIONALTANH_SCALE 1.7159
    #define LSTMFAST_RATIONALTANH_A 1.41645
    """
    const double LEAKYRELU_ALPHA "LSTMFAST_LEAKYRELU_ALPHA"
    const double SELU_ALPHA "LSTMFAST_SELU_ALPHA"
    const double SELU_LAMBDA "LSTMFAST_SELU_LAMBDA"
    const double RATIONALTANH_SCALE "LSTMFAST_RATIONALTANH_SCALE"
    const double RATIONALTANH_A "LSTMFAST_RATIONALTANH_A"


cdef inline floating f_exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating f_expm1(floating x) noexcept nogil:
    if floating is float:
        return expm1f(x)
    else:
        return expm1(x)


cdef inline floating f_log1p(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)


cdef inline floating f_abs(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline floating f_sigmoid(floating x) noexcept nogil:
    return <floating>1 / (<floating>1 + f_exp(-x))


cdef inline floating f_hardsigmoid(floating x) noexcept nogil:
    cdef floating y = <floating>0.2 * x + <floating>0.5
    if y < 0:
        return 0
    if y > 1:
        return 1
    return y


cdef inline floating activate(int kind, floating x) noexcept nogil:
    """f(x) for the activation codes activate_array does not handle itself (NaN for an unknown
    code)."""
    cdef floating y, ax
    if kind == ACT_SOFTSIGN:
        return x / (<floating>1 + f_abs(x))
    elif kind == ACT_RELU:
        return 0 if x <= 0 else x   # max(0, x); NaN stays NaN
    elif kind == ACT_LEAKYRELU:
        return x if x > 0 else <floating>LEAKYRELU_ALPHA * x
    elif kind == ACT_ELU:
        return x if x > 0 else f_expm1(x)
    elif kind == ACT_SELU:
        if x > 0:
            return <floating>SELU_LAMBDA * x
        return <floating>(SELU_LAMBDA * SELU_ALPHA) * f_expm1(x)
    elif kind == ACT_SOFTPLUS:
        # log(1 + e^x) without overflow for large x
        if x > 0:
            return x + f_log1p(f_exp(-x))
        return f_log1p(f_exp(x))
    elif kind == ACT_HARDTANH:
        if x < -1:
            return -1
        if x > 1:
            return 1
        return x
    elif kind == ACT_CUBE:
        return x * x * x
    elif kind == ACT_RATIONALTANH:
        # 1.7159 * t(2x/3), t(y) = sgn(y) (1 - 1/(1 + |y| + y^2 + 1.41645 y^4))
        y = x * <floating>(2.0 / 3.0)
        ax = f_abs(y)
        ax = <floating>1 - <floating>1 / (<floating>1 + ax + y * y + <floating>RATIONALTANH_A * (y * y) * (y * y))
        if y < 0:
            ax = -ax
        return <floating>RATIONALTANH_SCALE * ax
    return <floating>NAN


cdef inline floating derivative(int kind, floating x, floating y) noexcept nogil:
    """f'(x), given y = f(x), for the codes derivative_array does not handle itself."""
    cdef floating t, ax, d
    if kind == ACT_SOFTSIGN:
        t = <floating>1 + f_abs(x)
        return <floating>1 / (t * t)
    elif kind == ACT_RELU:
        return 1 if x > 0 else 0
    elif kind == ACT_LEAKYRELU:
        return 1 if x >= 0 else <floating>LEAKYRELU_ALPHA   # DL4J: d1 >= 0 ? 1 : alpha
    elif kind == ACT_ELU:
        return 1 if x > 0 else f_exp(x)
    elif kind == ACT_SELU:
        if x > 0:
            return <floating>SELU_LAMBDA
        return <floating>(SELU_LAMBDA * SELU_ALPHA) * f_exp(x)
    elif kind == ACT_SOFTPLUS:
        return f_sigmoid(x)
    elif kind == ACT_HARDTANH:
        return 0 if (x < -1 or x > 1) else 1
    elif kind == ACT_CUBE:
        return <floating>3 * x * x
    elif kind == ACT_RECTIFIEDTANH:
        return <floating>1 - y * y if x > 0 else 0
    elif kind == ACT_RATIONALTANH:
        # d/dx 1.7159 t(2x/3) = 1.7159 * 2/3 * (1 + 2|y| + 4a|y|^3) / D^2, y = 2x/3
        t = x * <floating>(2.0 / 3.0)
        ax = f_abs(t)
        d = <floating>1 + ax + t * t + <floating>RATIONALTANH_A * (t * t) * (t * t)
        return (<floating>(RATIONALTANH_SCALE * 2.0 / 3.0)
                * (<floating>1 + <floating>2 * ax + <floating>4 * <floating>RATIONALTANH_A * ax * ax * ax) / (d * d))
    return <floating>NAN


cdef inline void activate_array(int kind, const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    """y[i] = f(x[i]); the switch is outside the loops so that each loop vectorises."""
    cdef Py_ssize_t i
    if kind == ACT_TANH:
        if floating is float:
            lf_tanh_array_f32(x, y, n)
        else:
            lf_tanh_array_f64(x, y, n)
    elif kind == ACT_SIGMOID:
        if floating is float:
            lf_sigmoid_array_f32(x, y, n)
        else:
            lf_sigmoid_array_f64(x, y, n)
    elif kind == ACT_HARDSIGMOID:
        for i in range(n):
            y[i] = f_hardsigmoid(x[i])
    elif kind == ACT_IDENTITY:
        for i in range(n):
            y[i] = x[i]
    elif kind == ACT_RECTIFIEDTANH:
        activate_array(ACT_TANH, x, y, n)
        for i in range(n):
            y[i] = 0 if y[i] <= 0 else y[i]
    else:
        for i in range(n):
            y[i] = activate(kind, x[i])


cdef inline void derivative_array(int kind, const floating* x, const floating* y, floating* out,
                                  Py_ssize_t n) noexcept nogil:
    """out[i] = f'(x[i]) given y[i] = f(x[i])."""
    cdef Py_ssize_t i
    if kind == ACT_TANH:
        for i in range(n):
            out[i] = <floating>1 - y[i] * y[i]
    elif kind == ACT_SIGMOID:
        for i in range(n):
            out[i] = y[i] * (<floating>1 - y[i])
    elif kind == ACT_HARDSIGMOID:
        for i in range(n):
            out[i] = <floating>0.2 if (x[i] > <floating>-2.5 and x[i] < <floating>2.5) else 0
    elif kind == ACT_IDENTITY:
        for i in range(n):
            out[i] = 1
    else:
        for i in range(n):
            out[i] = derivative(kind, x[i], y[i])
