"""Fused hybrid distillation loss: CE + two temperature-scaled KL terms, loss and student gradient in one launch.

Math (docs/design.md §2, hybridft/loss.py): per row, m = α·pre + (1−α)·student and b = m/T,

    loss = ce_weight·(lse(m) − m_y) + T²·Σ_t w_t·KL(softmax(t/T) ‖ softmax(b))      t ∈ {pre, fine}, w = β, γ
    d/dm = (1−α)·[ce_weight·(softmax(m) − onehot(y)) + T·Σ_t w_t·(softmax(b) − softmax(t/T))]

Each program takes a (ROWS, BLOCK) tile: one row, or for C ≤ 256 several (a warp's worth of short rows, so C = 2,
3, 9 keep the lanes busy; a warp per row from 32 lanes of columns). Two passes, as in Liger's fused cross-entropy:
  pass 1  softmax statistics — a max and sum of exp for b (and for m when T ≠ 1; m and b share the max) and for
          each teacher a = t/T, plus acc_t = Σ exp(a − max_a)·(a − b). Then
          KL_t = acc_t/sum_a − (max_a − max_b) − log(sum_a/sum_b), which keeps precision when student ≈ teacher
          (a − b is formed per element, the two logs as one ratio). A row that fits one block (C ≤ 2048) is reduced
          directly and stays in registers. A longer row streams in blocks of 2048 with per-lane running statistics
          (one exp per element and statistic: exp(−|x − max|) is x's weight or the old sum's rescale) and a single
          cross-warp reduction after the loop, instead of ~20 bar.sync per block.
  pass 2  the gradient, from the registers (one block) or by reloading the row block by block, mostly from L2.
DRAM traffic is close to the floor of 3 reads + 1 write, and exactly that for rows of up to 2048 classes.
Probabilities are never stored. Loads and stores are 128-bit where VEC (the power of two ≤ 16 dividing C and every
row stride) allows: the kernel restates C and the strides as multiples of VEC, which the compiler can see.

Launches per call of HybridKDFunction on CUDA: forward 1 (this kernel) for "none", 2 for "sum" (+ the sum of the
rows), 3 for "mean" (+ _term_scales_kernel, which counts the labelled rows on the device); backward 0 (float32
logits, grad_output 1, gradient ≥ 2^22 entries: one host sync instead) or 1 (scale, and cast for half precision).
No host sync on the forward. hybrid_kd_loss's label check adds a few small torch launches and a device-side assert.

Backward only scales the stored gradient by grad_output (hybridft.loss.scale_grad). The stored gradient is float32
for every input dtype (N·C·4 bytes): a loss scaler's factor is applied in float32 and the result cast once.

Masked classes are −inf. The maxima never go below −FLT_MAX (−FLT_MAX·T for m when T < 1), so a block that is fully masked
gives exp(−inf − (−FLT_MAX)) = 0 rather than exp(−inf + inf) = NaN, and no lane ever forms 0·inf: a teacher class at
−inf has p = 0 and is zeroed before it multiplies (a − b). Where b is −inf but a teacher is finite, KL is +inf (its
true value), also where the teacher's weight exp(a − max) underflowed to 0 (a +inf term is never rescaled to
0·inf); the gradient stays finite. NaN inputs propagate to the row's loss and gradient. Rows past N in the last
program reread row N − 1 (finite, in bounds) and are never stored.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from hybridft.loss_checks import LossParams, scale_grad

# Blend modes: which inputs m reads. α = 0 and α = 1 read one input only, so 0·(−inf) can never appear.
BLEND_STUDENT, BLEND_PRE, BLEND_MIX = 0, 1, 2
# Column block: a power of two ≤ 2048, 16 bytes of each input per thread (8 bf16 over 8 warps, 4 fp32 over 16).
# Compiled for sm_90 (H100) with ptxas and read back with cuobjdump (tests/kernels/test_hybrid_kd.py keeps checking
# it): the streamed row keeps 9 per-lane statistics, 148 registers for bf16 (157 at VEC = 1), 76 for fp32, no
# spills; a row of one block 80; multi-row tiles 32–85. A whole 128k row in registers, as Liger's JSD loads it, would
# spill and collapse. Not yet timed on a GPU: this session had none.
MAX_BLOCK_SIZE = 2048


@triton.jit
def _lane_softmax_update(run_max, run_sum, x, scale):
    """Fold x into per-lane running (max, Σ exp(scale·(x − max))) with one exp per element: exp(−scale·|x − max|)
    is the weight of x where x does not raise the lane's max, and the rescale of the old sum where it does."""
    gap = tl.exp(-tl.abs(x - run_max) * scale)
    raises = x > run_max
    return tl.where(raises, x, run_max), tl.where(raises, run_sum * gap + 1.0, run_sum + gap)


@triton.jit
def _kl_terms(a, b):
    """a − b per element, 0 where the teacher has no mass (p = 0: no lane forms 0·inf or inf − inf) and +inf where a
    finite teacher meets a −inf blend (KL = +inf, module docstring)."""
    no_mass = a == float("-inf")
    blend_masked = b == float("-inf")
    diff = tl.where(no_mass, 0.0, a) - tl.where(no_mass | blend_masked, 0.0, b)
    return tl.where(blend_masked & (a != float("-inf")), float("inf"), diff)


@triton.jit
def _lane_teacher_update(run_max, run_sum, run_acc, a, b):
    """Per-lane statistics of one teacher a = t/T against b = m/T: max, Σ exp(a − max), Σ exp(a − max)·(a − b).
    A +inf term stays +inf through every later rescale, also one that underflows to 0 (never 0·inf = NaN)."""
    diff = _kl_terms(a, b)
    to_inf = (run_acc == float("inf")) | (diff == float("inf"))
    diff = tl.where(to_inf, 0.0, diff)  # the products below only ever see finite values
    acc = tl.where(to_inf, 0.0, run_acc)
    gap = tl.exp(-tl.abs(a - run_max))
    raises = a > run_max
    new_sum = tl.where(raises, run_sum * gap + 1.0, run_sum + gap)
    new_acc = tl.where(raises, acc * gap + diff, acc + gap * diff)
    new_acc = tl.where(to_inf, float("inf"), new_acc)
    return tl.where(raises, a, run_max), new_sum, new_acc


@triton.jit
def _teacher_stats(a, b, floor):
    """Row statistics of one teacher over a whole tile in registers: (max, Σ exp(a − max), Σ exp(a − max)·(a − b))."""
    a_max = tl.maximum(tl.max(a, axis=1), floor)
    weight = tl.exp(a - a_max[:, None])
    term = _kl_terms(a, b)
    term = tl.where(term == float("inf"), term, weight * tl.where(term == float("inf"), 0.0, term))
    return a_max, tl.sum(weight, axis=1), tl.sum(term, axis=1)


@triton.jit
def _lane_combine(lane_max, lane_sum, lane_acc, floor):
    """The cross-lane reduction after the loop: per-lane (max, sum, acc) → per-row, each lane rescaled to the row max."""
    row_max = tl.maximum(tl.max(lane_max, axis=1), floor)
    weight = tl.exp(lane_max - row_max[:, None])
    is_inf = lane_acc == float("inf")
    acc = tl.where(is_inf, lane_acc, tl.where(is_inf, 0.0, lane_acc) * weight)
    return row_max, tl.sum(lane_sum * weight, axis=1), tl.sum(acc, axis=1)


@triton.jit
def _load_tile(
    student_rows, pre_rows, fine_rows, cols, mask, alpha, BLEND: tl.constexpr, LOAD_PRE: tl.constexpr,
    LOAD_FINE: tl.constexpr,
):  # fmt: skip
    """A (ROWS, BLOCK) tile of the three inputs in fp32 (padding −inf) and the blend m; unused inputs read 0.
    *_rows are (ROWS, 1) row pointers, cols is (1, BLOCK)."""
    neg_inf = float("-inf")
    pre = tl.zeros(mask.shape, dtype=tl.float32)
    fine = tl.zeros(mask.shape, dtype=tl.float32)
    if LOAD_PRE:
        pre = tl.load(pre_rows + cols, mask=mask, other=neg_inf).to(tl.float32)
    if LOAD_FINE:
        fine = tl.load(fine_rows + cols, mask=mask, other=neg_inf).to(tl.float32)
    if BLEND == 0:
        m = tl.load(student_rows + cols, mask=mask, other=neg_inf).to(tl.float32)
    elif BLEND == 1:
        m = pre
    else:
        student = tl.load(student_rows + cols, mask=mask, other=neg_inf).to(tl.float32)
        m = alpha * pre + (1.0 - alpha) * student
    return pre, fine, m


@triton.jit
def _tile_grad(
    pre, fine, m, cols, label, ce_coef, kd_coef, lse_b, lse_c, lse_p, lse_f, beta, gamma, inv_temperature,
    NEED_B: tl.constexpr, HAS_CE: tl.constexpr, HAS_PRE_KD: tl.constexpr, HAS_FINE_KD: tl.constexpr,
    T_IS_ONE: tl.constexpr,
):  # fmt: skip
    """d(loss)/d(student) of one tile from the per-row normalisers (every per-row argument is (ROWS, 1))."""
    grad = tl.zeros(m.shape, dtype=tl.float32)
    q_b = grad  # softmax(b), formed only where pass 1 gathered its statistics
    if NEED_B:
        q_b = tl.exp(m * inv_temperature - lse_b)
    if HAS_CE:
        q_c = q_b if T_IS_ONE else tl.exp(m - lse_c)
        grad += ce_coef * (q_c - tl.where(cols == label, 1.0, 0.0))
    if HAS_PRE_KD:
        grad += (beta * kd_coef) * (q_b - tl.exp(pre * inv_temperature - lse_p))
    if HAS_FINE_KD:
        grad += (gamma * kd_coef) * (q_b - tl.exp(fine * inv_temperature - lse_f))
    return grad


@triton.jit
def _hybrid_kd_kernel(
    student_ptr,  # (N, C) student logits, any float dtype, last dim contiguous
    student_stride,  # elements between two rows of student
    pre_ptr,  # (N, C) pretrained-teacher logits
    pre_stride,  # row stride of pre
    fine_ptr,  # (N, C) fine-tuned-teacher logits
    fine_stride,  # row stride of fine
    labels_ptr,  # (N,) int64 labels (ignored unless HAS_CE)
    labels_stride,  # elements between two labels (a column view of an (N, k) tensor has k)
    grad_ptr,  # (N, C) out: d(loss)/d(student), float32 (written only if NEED_GRAD); may be student_ptr itself
    grad_stride,  # row stride of grad
    loss_ptr,  # (N,) out: fp32 per-row loss, already multiplied by the reduction's term scales
    scale_ptr,  # (2,) fp32: [CE scale, KD scale] of the reduction (read only if SCALED)
    n_rows,  # N, the number of rows
    n_cols,  # C, the number of classes
    alpha,  # blend weight of pre in m
    beta,  # weight of KL(pre ‖ m)
    gamma,  # weight of KL(fine ‖ m)
    inv_temperature,  # 1/T
    ce_weight,  # weight of the CE term
    ignore_index,  # label value that skips CE for its row
    BLEND: tl.constexpr,  # 0: m = student, 1: m = pre, 2: the α-mix
    HAS_CE: tl.constexpr,  # labels given and ce_weight > 0
    HAS_PRE_KD: tl.constexpr,  # beta > 0
    HAS_FINE_KD: tl.constexpr,  # gamma > 0
    T_IS_ONE: tl.constexpr,  # T = 1: the CE softmax and the KD softmax are the same one
    NEED_GRAD: tl.constexpr,  # write the gradient
    SCALED: tl.constexpr,  # read the term scales from scale_ptr (else both are 1)
    VEC: tl.constexpr,  # a power of two ≤ 16 that divides n_cols and every row stride (1: nothing is known)
    ROWS: tl.constexpr,  # rows per program (> 1 only when a whole row fits in one block)
    BLOCK_SIZE: tl.constexpr,  # columns per block
    ONE_BLOCK: tl.constexpr,  # BLOCK_SIZE ≥ n_cols: the tile stays in registers, one read instead of two
):
    # int64 row offsets: N·C exceeds 2^31 at e.g. 16384 × 128k.
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_mask = rows < n_rows  # stores only: rows past N read row N − 1 again (finite, in bounds) and are dropped
    read_rows = tl.minimum(rows, n_rows - 1)
    # Restated as multiples of VEC (exact: the launcher checked that VEC divides them), so the compiler can prove
    # each thread's columns 16-byte aligned and the column mask constant over them: 128-bit loads and stores.
    n_cols = (n_cols // VEC) * VEC
    student_row = student_ptr + read_rows * ((student_stride // VEC) * VEC)
    pre_row = pre_ptr + read_rows * ((pre_stride // VEC) * VEC)
    fine_row = fine_ptr + read_rows * ((fine_stride // VEC) * VEC)
    student_rows, pre_rows, fine_rows = student_row[:, None], pre_row[:, None], fine_row[:, None]
    offsets = tl.arange(0, BLOCK_SIZE)[None, :]
    HAS_KD: tl.constexpr = HAS_PRE_KD or HAS_FINE_KD
    NEED_B: tl.constexpr = HAS_KD or (HAS_CE and T_IS_ONE)  # the statistics of b = m/T are gathered
    NEED_C: tl.constexpr = HAS_CE and not T_IS_ONE  # those of m itself, for CE when T ≠ 1
    LOAD_PRE: tl.constexpr = HAS_PRE_KD or BLEND != 0
    temperature = 1.0 / inv_temperature
    # Maxima never go below −FLT_MAX (module docstring); a literal, since a module-level float is not readable from
    # a CUDA-compiled kernel.
    floor = -3.4028234663852886e38
    m_floor = floor * tl.minimum(temperature, 1.0)  # for m, so that neither m_max/T nor (m − m_max)/T overflows

    # ---- the label's logit m_y, read directly (a gather of ROWS scalars instead of a masked pick per block)
    zero_rows = tl.zeros([ROWS], dtype=tl.float32)
    label = tl.zeros([ROWS], dtype=tl.int64)
    valid = rows < 0  # all False
    m_label = zero_rows
    if HAS_CE:
        label = tl.load(labels_ptr + rows * labels_stride, mask=row_mask, other=ignore_index)
        valid = row_mask & (label != ignore_index)
        safe = tl.where(valid, label, 0)
        if BLEND == 0:
            m_label = tl.load(student_row + safe, mask=valid, other=0.0).to(tl.float32)
        elif BLEND == 1:
            m_label = tl.load(pre_row + safe, mask=valid, other=0.0).to(tl.float32)
        else:
            pre_y = tl.load(pre_row + safe, mask=valid, other=0.0).to(tl.float32)
            student_y = tl.load(student_row + safe, mask=valid, other=0.0).to(tl.float32)
            m_label = alpha * pre_y + (1.0 - alpha) * student_y

    # ---- pass 1: softmax statistics, all in fp32. m and b = m/T share one maximum (x ↦ x/T keeps the order).
    if ONE_BLOCK:  # the whole row is one tile: reduce it directly
        cols = offsets
        mask = tl.broadcast_to(cols < n_cols, [ROWS, BLOCK_SIZE])
        pre, fine, m = _load_tile(student_rows, pre_rows, fine_rows, cols, mask, alpha, BLEND, LOAD_PRE, HAS_FINE_KD)
        b = m * inv_temperature
        m_max = tl.maximum(tl.max(m, axis=1), m_floor)
        b_sum = tl.sum(tl.exp(b - (m_max * inv_temperature)[:, None]), axis=1) if NEED_B else m_max
        c_sum = tl.sum(tl.exp(m - m_max[:, None]), axis=1) if NEED_C else m_max
        p_max, p_sum, p_acc = _teacher_stats(pre * inv_temperature, b, floor) if HAS_PRE_KD else (m_max, m_max, m_max)
        f_max, f_sum, f_acc = _teacher_stats(fine * inv_temperature, b, floor) if HAS_FINE_KD else (m_max, m_max, m_max)
    else:  # stream the row: per-lane running statistics, one cross-lane reduction after the loop
        lane_zero = tl.zeros([ROWS, BLOCK_SIZE], dtype=tl.float32)
        lane_m_max, lane_b_sum, lane_c_sum = lane_zero + m_floor, lane_zero, lane_zero
        lane_p_max, lane_p_sum, lane_p_acc = lane_zero + floor, lane_zero, lane_zero
        lane_f_max, lane_f_sum, lane_f_acc = lane_zero + floor, lane_zero, lane_zero
        for start in range(0, n_cols, BLOCK_SIZE):
            cols = start + offsets
            mask = tl.broadcast_to(cols < n_cols, [ROWS, BLOCK_SIZE])
            pre, fine, m = _load_tile(
                student_rows, pre_rows, fine_rows, cols, mask, alpha, BLEND, LOAD_PRE, HAS_FINE_KD
            )
            b = m * inv_temperature
            if NEED_B:
                _m, lane_b_sum = _lane_softmax_update(lane_m_max, lane_b_sum, m, inv_temperature)
            if NEED_C:
                _m, lane_c_sum = _lane_softmax_update(lane_m_max, lane_c_sum, m, 1.0)
            lane_m_max = tl.maximum(lane_m_max, m)
            if HAS_PRE_KD:
                lane_p_max, lane_p_sum, lane_p_acc = _lane_teacher_update(
                    lane_p_max, lane_p_sum, lane_p_acc, pre * inv_temperature, b
                )
            if HAS_FINE_KD:
                lane_f_max, lane_f_sum, lane_f_acc = _lane_teacher_update(
                    lane_f_max, lane_f_sum, lane_f_acc, fine * inv_temperature, b
                )
        m_max = tl.maximum(tl.max(lane_m_max, axis=1), m_floor)
        lane_shift = lane_m_max - m_max[:, None]
        b_sum = tl.sum(lane_b_sum * tl.exp(lane_shift * inv_temperature), axis=1)
        c_sum = tl.sum(lane_c_sum * tl.exp(lane_shift), axis=1)
        p_max, p_sum, p_acc = _lane_combine(lane_p_max, lane_p_sum, lane_p_acc, floor)
        f_max, f_sum, f_acc = _lane_combine(lane_f_max, lane_f_sum, lane_f_acc, floor)

    # ---- per-row loss. log-sum-exps only of the statistics that were gathered (log(0) of an unused one is −inf)
    b_max = m_max * inv_temperature
    lse_b, lse_c, lse_p, lse_f = zero_rows, zero_rows, zero_rows, zero_rows
    if NEED_B:
        lse_b = b_max + tl.log(b_sum)
    if HAS_CE:
        lse_c = lse_b if T_IS_ONE else m_max + tl.log(c_sum)
    if HAS_PRE_KD:
        lse_p = p_max + tl.log(p_sum)
    if HAS_FINE_KD:
        lse_f = f_max + tl.log(f_sum)
    ce_scale, kd_scale = 1.0, 1.0
    if SCALED:
        ce_scale = tl.load(scale_ptr)
        kd_scale = tl.load(scale_ptr + 1)
    row_loss = tl.zeros([ROWS], dtype=tl.float32)
    if HAS_CE:
        row_loss += tl.where(valid, ce_weight * (lse_c - m_label), 0.0) * ce_scale
    if HAS_PRE_KD:  # KL = E_p[a − b] − (max_a − max_b) − log(sum_a/sum_b)
        kl = p_acc / p_sum - (p_max - b_max) - tl.log(p_sum / b_sum)
        row_loss += beta * temperature * temperature * kl * kd_scale
    if HAS_FINE_KD:
        kl = f_acc / f_sum - (f_max - b_max) - tl.log(f_sum / b_sum)
        row_loss += gamma * temperature * temperature * kl * kd_scale
    tl.store(loss_ptr + rows, row_loss, mask=row_mask)

    # ---- pass 2: the gradient (ONE_BLOCK: from the registers; else block by block, mostly from L2)
    if NEED_GRAD:
        grad_rows = (grad_ptr + rows * ((grad_stride // VEC) * VEC))[:, None]
        ce_coef = (tl.where(valid, ce_weight * ce_scale, 0.0) * (1.0 - alpha))[:, None]
        kd_coef = temperature * kd_scale * (1.0 - alpha)
        label, lse_b, lse_c, lse_p, lse_f = (
            label[:, None],
            lse_b[:, None],
            lse_c[:, None],
            lse_p[:, None],
            lse_f[:, None],
        )
        if ONE_BLOCK:
            grad = _tile_grad(
                pre, fine, m, cols, label, ce_coef, kd_coef, lse_b, lse_c, lse_p, lse_f, beta, gamma,
                inv_temperature, NEED_B, HAS_CE, HAS_PRE_KD, HAS_FINE_KD, T_IS_ONE,
            )  # fmt: skip
            tl.store(grad_rows + cols, grad, mask=mask & row_mask[:, None])
        else:
            for start in range(0, n_cols, BLOCK_SIZE):
                cols = start + offsets
                mask = tl.broadcast_to(cols < n_cols, [ROWS, BLOCK_SIZE])
                pre, fine, m = _load_tile(
                    student_rows, pre_rows, fine_rows, cols, mask, alpha, BLEND, LOAD_PRE, HAS_FINE_KD
                )
                grad = _tile_grad(
                    pre, fine, m, cols, label, ce_coef, kd_coef, lse_b, lse_c, lse_p, lse_f, beta, gamma,
                    inv_temperature, NEED_B, HAS_CE, HAS_PRE_KD, HAS_FINE_KD, T_IS_ONE,
                )  # fmt: skip
                tl.store(grad_rows + cols, grad, mask=mask & row_mask[:, None])


@triton.jit
def _term_scales_kernel(
    labels_ptr,  # (N,) int64 labels (read only if HAS_LABELS)
    labels_stride,  # elements between two labels
    scale_ptr,  # (2,) fp32 out: ["mean" CE scale 1/#labelled (0 if none), KD scale 1/N (0 if N = 0)]
    n_rows,  # N
    ignore_index,  # label value that is not counted
    HAS_LABELS: tl.constexpr,  # labels given (else the CE scale is 0)
    BLOCK_SIZE: tl.constexpr,  # labels per step of the one program
):
    """One program counts the labelled rows (per-lane counts, one reduction) and writes both "mean" scales."""
    offsets = tl.arange(0, BLOCK_SIZE)
    count = tl.zeros([BLOCK_SIZE], dtype=tl.int32)
    if HAS_LABELS:
        for start in range(0, n_rows, BLOCK_SIZE):
            index = start + offsets
            label = tl.load(labels_ptr + index.to(tl.int64) * labels_stride, mask=index < n_rows, other=ignore_index)
            count += (label != ignore_index).to(tl.int32)
    labelled = tl.sum(count, axis=0)
    tl.store(scale_ptr, tl.where(labelled > 0, 1.0 / tl.maximum(labelled, 1).to(tl.float32), 0.0))
    tl.store(scale_ptr + 1, tl.where(n_rows > 0, 1.0 / tl.maximum(n_rows, 1).to(tl.float32), 0.0))


# --------------------------------------------------------------------------------------------------- launcher

# Rows of at most SMALL_ROW_COLS classes share a program: each thread holds one row's columns (one 128-bit access
# where VEC allows), so the per-row statistics take a few registers per thread and every reduction stays inside a
# warp (no bar.sync). Up to 8 warps per program, fewer while that would leave fewer than MIN_PROGRAMS programs
# (about two per SM of an H100/H200, which has 132). Read from the sm_90 compile, not yet timed on a GPU.
SMALL_ROW_COLS = 256
MIN_PROGRAMS = 256
SCALES_BLOCK = 1024  # labels per step of _term_scales_kernel


class LaunchConfig(NamedTuple):
    """How _hybrid_kd_kernel is launched: a (rows, block) tile per program over cdiv(N, rows) programs."""

    block: int  # columns per block (BLOCK_SIZE)
    rows: int  # rows per program (ROWS)
    num_warps: int
    one_block: bool  # block ≥ C: each row is read once and its tile kept in registers (ONE_BLOCK)


def _launch_config(
    n_rows: int, n_cols: int, block_size: int | None = None, vec: int = 1, itemsize: int = 4
) -> LaunchConfig:
    """The whole row in one block up to MAX_BLOCK_SIZE columns, else blocks of that size (16 bytes per thread);
    for C ≤ SMALL_ROW_COLS, one warp per row where a row needs 32 lanes, else several rows per warp and program.
    vec and itemsize (of the logits) give the columns one thread loads at once."""
    if block_size is None:
        block_size = min(MAX_BLOCK_SIZE, triton.next_power_of_2(max(n_cols, 1)))
    elif block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size}")
    one_block = block_size >= n_cols
    if not (one_block and n_cols <= SMALL_ROW_COLS):  # 16 bytes of each input per thread and block: 128-bit loads
        return LaunchConfig(block_size, 1, max(1, min(16, block_size * itemsize // 512)), one_block)
    lanes_per_row = block_size // max(1, min(vec, 16 // itemsize, block_size))
    if lanes_per_row >= 32:  # a row fills a warp: one warp per row, so its reductions need no shared memory
        return LaunchConfig(block_size, 1, 1, True)
    rows_per_warp, num_warps = 32 // lanes_per_row, 8
    while num_warps > 1 and -(-n_rows // (rows_per_warp * num_warps)) < MIN_PROGRAMS:
        num_warps //= 2
    return LaunchConfig(block_size, rows_per_warp * num_warps, num_warps, True)


def _vector_width(n_cols: int, strides) -> int:
    """VEC: the largest power of two ≤ 16 dividing C and every row stride (16 bf16 or 4 fp32 make 128 bits)."""
    common = math.gcd(n_cols, *strides)
    return min(16, common & -common) if common else 16


def term_scales_tensor(labels: torch.Tensor | None, num_rows: int, params: LossParams, device) -> torch.Tensor:
    """[CE scale, KD scale] as a device tensor, so "mean" needs no host sync to count the labelled rows.
    On CUDA one launch of _term_scales_kernel; elsewhere the same numbers from torch ops."""
    device = torch.device(device)
    if params.reduction != "mean":
        return torch.ones(2, dtype=torch.float32, device=device)
    if device.type == "cuda":
        scales = torch.empty(2, dtype=torch.float32, device=device)
        with torch.cuda.device(device):
            _launch_term_scales(labels, num_rows, params.ignore_index, scales)
        return scales
    scales = torch.ones(2, dtype=torch.float32, device=device)
    labelled = (labels != params.ignore_index).sum() if labels is not None else scales.new_zeros(())
    scales[0] = torch.where(labelled > 0, 1.0 / labelled.clamp(min=1), 0.0)
    scales[1] = 1.0 / num_rows if num_rows else 0.0
    return scales


def _launch_term_scales(labels, num_rows, ignore_index, scales):
    """One program of _term_scales_kernel writes the "mean" scales into ``scales`` (works under the interpreter)."""
    _term_scales_kernel[(1,)](
        labels_ptr=scales if labels is None else labels, labels_stride=0 if labels is None else labels.stride(0),
        scale_ptr=scales, n_rows=num_rows, ignore_index=ignore_index,
        HAS_LABELS=labels is not None, BLOCK_SIZE=SCALES_BLOCK, num_warps=4,
    )  # fmt: skip


def hybrid_kd_forward(
    student, pre, fine, labels, params: LossParams, *, need_grad: bool, block_size=None, scales=None, grad=None
):
    """Launch the kernel once (twice for "mean" without ``scales``): (fp32 per-row losses scaled for the
    reduction, gradient or None).

    ``scales``: the reduction's [CE scale, KD scale] as a (2,) float32 device tensor, for callers that run the rows
    in chunks of a larger batch (hybridft.linear_loss); default: from ``labels`` and ``params`` ("sum" and "none"
    need none). ``grad``: a float32 (N, C) buffer (last dim contiguous) to write the gradient into, instead of a new
    one; it may be ``student`` itself (float32), which the kernel then overwrites in place: each program reads every
    element of its rows before it writes that element, and no program reads another program's rows.
    """
    if student.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"the Triton kernel takes float32, bfloat16 or float16 logits, got {student.dtype}")
    num_rows, n_cols = student.shape
    student, pre, fine = (x if x.stride(-1) == 1 else x.contiguous() for x in (student, pre, fine))
    has_ce = labels is not None and params.ce_weight > 0
    blend_mode = BLEND_STUDENT if params.alpha == 0 else BLEND_PRE if params.alpha == 1 else BLEND_MIX
    need_grad = need_grad or grad is not None
    write_grad = need_grad and params.alpha < 1  # with α = 1 the student does not enter the loss: gradient 0
    loss_rows = torch.empty(num_rows, dtype=torch.float32, device=student.device)
    if grad is not None and (grad.dtype != torch.float32 or grad.shape != student.shape or grad.stride(-1) != 1):
        raise ValueError(
            f"grad must be a float32 {tuple(student.shape)} buffer with a contiguous last dim, got {grad.dtype} "
            f"{tuple(grad.shape)} with strides {grad.stride()}"
        )
    if need_grad and grad is None:  # float32 whatever the logits' dtype: scaled and cast once in backward
        grad = torch.empty(student.shape, dtype=torch.float32, device=student.device)
    if need_grad and not write_grad:
        grad.zero_()
    if num_rows == 0:
        return loss_rows, grad
    if scales is None and params.reduction == "mean":
        scales = term_scales_tensor(labels, num_rows, params, student.device)
    grad_stride = grad.stride(0) if write_grad else 0
    vec = _vector_width(n_cols, (student.stride(0), pre.stride(0), fine.stride(0), grad_stride))
    config = _launch_config(num_rows, n_cols, block_size, vec, student.element_size())
    # Triton launches on the current CUDA device: make it the inputs' one (a no-op on CPU under the interpreter).
    on_device = torch.cuda.device(student.device) if student.is_cuda else contextlib.nullcontext()
    with on_device:
        _launch(
            student, pre, fine, labels if has_ce else loss_rows, grad if write_grad else None, loss_rows, scales,
            params, blend_mode, has_ce, vec, config,
        )  # fmt: skip
    return loss_rows, grad


def _launch(student, pre, fine, labels, grad, loss_rows, scales, params, blend_mode, has_ce, vec, config):
    """The kernel launch itself, every argument by keyword. grad None: no gradient (the student pointer is a dummy);
    scales None: both term scales are 1."""
    num_rows = student.shape[0]
    _hybrid_kd_kernel[(triton.cdiv(num_rows, config.rows),)](
        student_ptr=student, student_stride=student.stride(0),
        pre_ptr=pre, pre_stride=pre.stride(0),
        fine_ptr=fine, fine_stride=fine.stride(0),
        labels_ptr=labels, labels_stride=labels.stride(0),
        grad_ptr=student if grad is None else grad, grad_stride=0 if grad is None else grad.stride(0),
        loss_ptr=loss_rows,
        scale_ptr=loss_rows if scales is None else scales,
        n_rows=num_rows, n_cols=student.shape[1],
        alpha=params.alpha, beta=params.beta, gamma=params.gamma,
        inv_temperature=1.0 / params.temperature, ce_weight=params.ce_weight, ignore_index=params.ignore_index,
        BLEND=blend_mode, HAS_CE=has_ce, HAS_PRE_KD=params.beta > 0, HAS_FINE_KD=params.gamma > 0,
        T_IS_ONE=params.temperature == 1.0, NEED_GRAD=grad is not None, SCALED=scales is not None,
        VEC=vec, ROWS=config.rows, BLOCK_SIZE=config.block, ONE_BLOCK=config.one_block,
        num_warps=config.num_warps,
        enable_fp_fusion=True,  # FMA contraction, said explicitly (Triton 3.9 warns when it is left to the default)
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------- autograd


class HybridKDFunction(torch.autograd.Function):
    """Forward launches the kernel (loss and gradient together); backward only scales the stored gradient."""

    @staticmethod
    def forward(ctx, student, pre, fine, labels, params: LossParams, block_size):
        need_grad = ctx.needs_input_grad[0]
        loss_rows, grad = hybrid_kd_forward(
            student, pre, fine, labels, params, need_grad=need_grad, block_size=block_size
        )
        ctx.per_row = params.reduction == "none"
        ctx.grad_dtype = student.dtype
        if need_grad:
            ctx.save_for_backward(grad)
        # The kernel already applied the "mean" scales, so every reduction other than "none" is a plain sum.
        return loss_rows if ctx.per_row else loss_rows.sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return scale_grad(grad, grad_output, ctx.per_row, ctx.grad_dtype), None, None, None, None, None


def hybrid_kd(student, pre, fine, labels, params: LossParams, block_size: int | None = None) -> torch.Tensor:
    """Fused loss on validated (N, C) inputs; block_size overrides the column block (tests use it on small C)."""
    return HybridKDFunction.apply(student, pre, fine, labels, params, block_size)
