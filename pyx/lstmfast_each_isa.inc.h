/*
 * Includes the template LF_EACH_ISA_TEMPLATE (a quoted file name, #defined by the includer) once
 * per instruction set: the baseline, and where the compiler can target them at function level
 * (LF_HAVE_DISPATCH, lstmfast_isa.h) AVX2+FMA and AVX-512, with LF_ISA (the variant's name
 * suffix), LF_TARGET (its function attribute) and LF_LEVEL (its LF_ISA_* level) defined for each
 * inclusion; LF_EACH_VECTOR_ISA_TEMPLATE, if #defined, after it on the vector instruction sets
 * only. The element type's parameters (LF_T, LF_SFX, ...) are the includer's.
 */

#define LF_ISA baseline
#define LF_TARGET
#define LF_LEVEL LF_ISA_BASELINE
#include LF_EACH_ISA_TEMPLATE
#undef LF_ISA
#undef LF_TARGET
#undef LF_LEVEL

#if LF_HAVE_DISPATCH
#define LF_ISA avx2
#define LF_TARGET LF_TARGET_AVX2
#define LF_LEVEL LF_ISA_AVX2
#include LF_EACH_ISA_TEMPLATE
#ifdef LF_EACH_VECTOR_ISA_TEMPLATE
#include LF_EACH_VECTOR_ISA_TEMPLATE
#endif
#undef LF_ISA
#undef LF_TARGET
#undef LF_LEVEL

#define LF_ISA avx512
#define LF_TARGET LF_TARGET_AVX512
#define LF_LEVEL LF_ISA_AVX512
#include LF_EACH_ISA_TEMPLATE
#ifdef LF_EACH_VECTOR_ISA_TEMPLATE
#include LF_EACH_VECTOR_ISA_TEMPLATE
#endif
#undef LF_ISA
#undef LF_TARGET
#undef LF_LEVEL
#endif
