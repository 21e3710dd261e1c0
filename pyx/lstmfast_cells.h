/*
 * The element-wise code of one LSTM step for the usual activations (tanh for the block input
 * and the cell, sigmoid for the gates): lstmfast/_cells.pxd's _forward_cells and _backward_cells
 * call these instead of their pass-per-operation loops when the layer uses them.
 *
 * Why: the general path makes about a dozen passes over [mb, h] blocks per step (peepholes, each
 * activation, the cell, the output; backward each derivative and delta), every pass storing its
 * result and the next one loading it again, and Cython's loops compile for baseline x86-64
 * (SSE2). Here the backward computes each element's deltas and cell error in registers in one
 * loop, the forward makes one pass per activation with the arithmetic folded in; GCC vectorises
 * the loops, and each function is compiled once per instruction set from lstmfast_cells.inc.h,
 * chosen at run time (lf_select_isa) as in lstmfast_simd.h.
 *
 * The operations and their order are those of the general path, so the two agree to rounding
 * (the vector builds may fuse a multiply and an add into one FMA).
 *
 * Layout as the passes' element-wise code: n values per gate, the gate blocks (i, f, o, g)
 * `stride` apart; peepholes (wFF, wOO, wGG) broadcast to blocks `stride` apart, or NULL.
 */
#ifndef LSTMFAST_CELLS_H
#define LSTMFAST_CELLS_H

#include "lstmfast_simd.h"

#define LF_T float
#define LF_SFX f32
#include "lstmfast_cells_types.inc.h"
#undef LF_T
#undef LF_SFX

#define LF_T double
#define LF_SFX f64
#include "lstmfast_cells_types.inc.h"
#undef LF_T
#undef LF_SFX

/* Choose every variant (vectorised math, packed products, cells) for the CPU's instruction set,
 * lowered by LSTMFAST_ISA (lstmfast_isa.h); returns the LF_ISA_* level in use. Each compiled
 * module holds its own copy of the variants and calls this at import. */
static int lf_select_isa(void)
{
    int level = lf_select_simd(lf_isa_active());
    lf_cells_select_f32(level);
    lf_cells_select_f64(level);
    return level;
}

#endif /* LSTMFAST_CELLS_H */
