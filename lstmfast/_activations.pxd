# Activation functions and their derivatives with DL4J's definitions, inline and typed over
# float/double. Codes are the public ACT_* values of lstmfast.kernels.
#
# Derivatives take both the pre-activation x and the activation y = f(x): where f' is cheaper from
# y (tanh, sigmoid) it is computed from y, as the seed does (TimesOneMinus on the gate activation).
from cython cimport floating
from libc.math cimport (tanh, tanhf, exp, expf, expm1, expm1f, log1p, log1pf, fabs, fabsf, NAN)

cdef enum:
    ACT_TANH = 0
    ACT_SIGMOID = 1
    ACT_HARDSIGMOID = 2
    ACT_SOFTSIGN = 3
    ACT_RELU = 4
    ACT_LEAKYRELU = 5
    ACT_ELU = 6
    ACT_SELU = 7
    ACT_SOFTPLUS = 8
    ACT_IDENTITY = 9
    ACT_HARDTANH = 10
    ACT_CUBE = 11
    ACT_RECTIFIEDTANH = 12
    ACT_RATIONALTANH = 13
    ACT_COUNT = 14

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


cdef inline floating f_tanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)


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
    return 1 / (1 + f_exp(-x))


cdef inline floating f_hardsigmoid(floating x) noexcept nogil:
    cdef floating y = <floating>0.2 * x + <floating>0.5
    if y < 0:
        return 0
    if y > 1:
        return 1
    return y


cdef inline floating activate(int kind, floating x) noexcept nogil:
    """f(x) for activation code `kind` (NaN for an unknown code)."""
    cdef floating y, ax
    if kind == ACT_TANH:
        return f_tanh(x)
    elif kind == ACT_SIGMOID:
        return f_sigmoid(x)
    elif kind == ACT_HARDSIGMOID:
        return f_hardsigmoid(x)
    elif kind == ACT_SOFTSIGN:
        return x / (1 + f_abs(x))
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
    elif kind == ACT_IDENTITY:
        return x
    elif kind == ACT_HARDTANH:
        if x < -1:
            return -1
        if x > 1:
            return 1
        return x
    elif kind == ACT_CUBE:
        return x * x * x
    elif kind == ACT_RECTIFIEDTANH:
        y = f_tanh(x)
        return 0 if y <= 0 else y
    elif kind == ACT_RATIONALTANH:
        # 1.7159 * t(2x/3), t(y) = sgn(y) (1 - 1/(1 + |y| + y^2 + 1.41645 y^4))
        y = x * <floating>(2.0 / 3.0)
        ax = f_abs(y)
        ax = 1 - 1 / (1 + ax + y * y + <floating>RATIONALTANH_A * (y * y) * (y * y))
        if y < 0:
            ax = -ax
        return <floating>RATIONALTANH_SCALE * ax
    return <floating>NAN


cdef inline floating derivative(int kind, floating x, floating y) noexcept nogil:
    """f'(x), given y = f(x)."""
    cdef floating t, ax, d
    if kind == ACT_TANH:
        return 1 - y * y
    elif kind == ACT_SIGMOID:
        return y * (1 - y)
    elif kind == ACT_HARDSIGMOID:
        return <floating>0.2 if (x > <floating>-2.5 and x < <floating>2.5) else 0
    elif kind == ACT_SOFTSIGN:
        t = 1 + f_abs(x)
        return 1 / (t * t)
    elif kind == ACT_RELU:
        return 1 if x > 0 else 0
    elif kind == ACT_LEAKYRELU:
        return 1 if x > 0 else <floating>LEAKYRELU_ALPHA
    elif kind == ACT_ELU:
        return 1 if x > 0 else f_exp(x)
    elif kind == ACT_SELU:
        if x > 0:
            return <floating>SELU_LAMBDA
        return <floating>(SELU_LAMBDA * SELU_ALPHA) * f_exp(x)
    elif kind == ACT_SOFTPLUS:
        return f_sigmoid(x)
    elif kind == ACT_IDENTITY:
        return 1
    elif kind == ACT_HARDTANH:
        return 0 if (x < -1 or x > 1) else 1
    elif kind == ACT_CUBE:
        return 3 * x * x
    elif kind == ACT_RECTIFIEDTANH:
        return 1 - y * y if x > 0 else 0
    elif kind == ACT_RATIONALTANH:
        # d/dx 1.7159 t(2x/3) = 1.7159 * 2/3 * (1 + 2|y| + 4a|y|^3) / D^2, y = 2x/3
        t = x * <floating>(2.0 / 3.0)
        ax = f_abs(t)
        d = 1 + ax + t * t + <floating>RATIONALTANH_A * (t * t) * (t * t)
        return (<floating>(RATIONALTANH_SCALE * 2.0 / 3.0)
                * (1 + 2 * ax + 4 * <floating>RATIONALTANH_A * ax * ax * ax) / (d * d))
    return <floating>NAN
