"""The public trainers' float32 group statistics, bit for bit, in numpy: torch's CPU ``sum``, ``mean``
and ``std`` of a 1-D float32 tensor, and verl's GRPO baseline built from them.

The public DAPO recipe and GRESO keep rewards in float32 torch tensors and reduce them on the CPU.
Float32 sums depend on their order, and neither numpy's pairwise float32 sum nor a float64 sum rounded
to float32 follows torch's: a group mean lying on GRESO's threshold 0.11 can land on the other side.
So the order is reproduced here, from PyTorch's ``aten/src/ATen/native/cpu/SumKernel.cpp``
(``cascade_sum``: a contiguous row of 8 or more floats is summed as vectors of 8 lanes, four vector
accumulators interleaved, in levels of 16; the tail and the lanes are then added one by one; shorter
rows as four interleaved scalars), ``ReduceOps.cpp`` (CPU ``mean`` = ``sum`` divided by n in float32;
``std`` of a whole tensor = two passes in double from the float32 mean, summed in order, its square root
cast to float32). Checked with torch 2.13 under its default, AVX2 and AVX-512 CPU dispatch (the same
order in all three), and by ``tests/test_torch_stats.py`` against torch itself on every group size 1-256.
"""

from __future__ import annotations

import math

import numpy as np

_LANES = 8  # floats per vector in the sum kernel's order (a 256-bit Vectorized<float>)
_ILP = 4  # interleaved accumulators of row_sum
_LEVELS = 4  # cascade levels of multi_row_sum


def _multi_row_sum(rows: np.ndarray) -> np.ndarray:
    """``multi_row_sum``: the column sums of ``rows`` [size, ILP, ...] in torch's cascade order."""
    size = rows.shape[0]
    power = max(4, (1 if size <= 2 else int(size - 1).bit_length()) // _LEVELS)
    step, mask = 1 << power, (1 << power) - 1
    acc = [np.zeros(rows.shape[1:], dtype=np.float32) for _ in range(_LEVELS)]
    i = 0
    while i + step <= size:
        for _ in range(step):
            acc[0] = acc[0] + rows[i]
            i += 1
        for j in range(1, _LEVELS):
            acc[j], acc[j - 1] = acc[j] + acc[j - 1], np.zeros_like(acc[j - 1])
            if i & (mask << (j * power)):
                break
    for k in range(i, size):
        acc[0] = acc[0] + rows[k]
    for j in range(1, _LEVELS):
        acc[0] = acc[0] + acc[j]
    return acc[0]


def _row_sum(items: np.ndarray) -> np.ndarray:
    """``row_sum``: ``items`` [size, ...] summed as ILP interleaved partial sums, then combined in order."""
    size = items.shape[0]
    whole = size // _ILP
    partial = _multi_row_sum(items[: whole * _ILP].reshape((whole, _ILP) + items.shape[1:]))
    first = partial[0]
    for k in range(whole * _ILP, size):
        first = first + items[k]
    for j in range(1, _ILP):
        first = first + partial[j]
    return first


def torch_sum(values) -> np.float32:
    """``torch.sum`` of a 1-D float32 tensor on the CPU (at most 32768 values: torch splits longer ones
    over threads)."""
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    if v.size > 32768:
        raise ValueError(f"torch_sum reproduces torch's single-thread order only, up to 32768 values; got {v.size}")
    if v.size < _LANES:
        return np.float32(_row_sum(v))
    vectors = v.size // _LANES
    lanes = _row_sum(v[: vectors * _LANES].reshape(vectors, _LANES))
    total = np.float32(0)
    for x in v[vectors * _LANES :]:  # the tail first, then the vector's lanes
        total = np.float32(total + x)
    for x in lanes:
        total = np.float32(total + x)
    return total


def torch_mean(values) -> float:
    """``torch.mean`` of a float32 group on the CPU (its sum divided by n in float32), as a Python float
    (the value ``.item()`` or ``.tolist()`` gives)."""
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    if v.size == 0:
        raise ValueError("the mean of an empty group is undefined")
    return float(torch_sum(v) / np.float32(v.size))


def torch_std(values) -> float:
    """``torch.std`` (unbiased) of a float32 group of at least two on the CPU: the squared deviations
    from the float32 mean, in double and in order, over n - 1, its square root cast to float32."""
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    if v.size < 2:
        raise ValueError("the unbiased std needs at least two values")
    d = v.astype(np.float64) - torch_mean(v)
    return float(np.float32(math.sqrt(float(np.add.accumulate(d * d)[-1]) / (v.size - 1))))


def grpo_baseline(values) -> tuple[float, float]:
    """verl's GRPO statistics of one group (``compute_grpo_outcome_advantage``): (torch.mean, torch.std)
    of its float32 rewards; a group of one: (0, 1), so it trains on its raw reward."""
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    return (0.0, 1.0) if v.size == 1 else (torch_mean(v), torch_std(v))
