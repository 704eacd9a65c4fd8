#!/usr/bin/env python3
"""Reference quantizer of docs/QUANT.md (numpy, float32 throughout).

The C++ quantizer (kernels/cpu/quant.cpp) is checked bitwise against the output of this file:
    python scripts/quant_reference.py --write-fixture tests/fixtures/quant
writes the inputs and the expected blocks (little-endian raw arrays) that
tests/kernels/test_quant.cpp reads. Also importable (quantize_q8, quantize_q4, dequantize_*,
quantize_activations) for the goldens of the dequantized-weight anchor.
"""
import argparse
import os

import numpy as np

BLOCK = 32


def round_half_away(v):
    """Round half away from zero, exactly: v - trunc(v) is exact in float32."""
    v = np.asarray(v, dtype=np.float32)
    t = np.trunc(v)
    frac = np.abs(v - t)
    return np.where(frac >= np.float32(0.5), t + np.sign(v), t).astype(np.float32)


def _blocks(w):
    w = np.asarray(w, dtype=np.float32)
    rows, cols = w.shape
    if cols % BLOCK:
        raise ValueError(f"{cols} columns are not a multiple of {BLOCK}")
    if not np.all(np.isfinite(w)):
        raise ValueError("only finite weights can be quantized")
    return w.reshape(rows, cols // BLOCK, BLOCK)


def _quantize(v, d16, lo, hi):
    d = d16.astype(np.float32)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(round_half_away(v / np.where(d == 0, np.float32(1), d)), lo, hi)
    return np.where(d == 0, np.float32(0), q).astype(np.int8)


def quantize_q8(w):
    """-> (qs int8 [rows, cols], scales float16 [rows, cols/32]). d = fp16(amax / 127)."""
    v = _blocks(w)
    amax = np.max(np.abs(v), axis=-1)
    with np.errstate(over="ignore"):
        d16 = (amax / np.float32(127)).astype(np.float16)
    if not np.all(np.isfinite(d16)):
        raise ValueError("a block is too large for an fp16 scale")
    q = _quantize(v, d16, -127, 127)
    return q.reshape(w.shape), d16


def quantize_q4(w):
    """-> (qs uint8 [rows, cols/2] packed, scales float16 [rows, cols/32]).

    m = the block's value of largest magnitude (first among equals), d = fp16(m / -8),
    q = clamp(round_half_away(w / d), -8, 7), stored as q + 8; byte j of a block holds element j
    in its low nibble and element j + 16 in its high nibble."""
    v = _blocks(w)
    idx = np.argmax(np.abs(v), axis=-1)
    m = np.take_along_axis(v, idx[..., None], axis=-1)[..., 0]
    with np.errstate(over="ignore"):
        d16 = (m / np.float32(-8)).astype(np.float16)
    if not np.all(np.isfinite(d16)):
        raise ValueError("a block is too large for an fp16 scale")
    q = (_quantize(v, d16, -8, 7).astype(np.int16) + 8).astype(np.uint8)
    packed = q[..., : BLOCK // 2] | (q[..., BLOCK // 2 :] << 4)
    rows, cols = np.asarray(w).shape
    return packed.reshape(rows, cols // 2).astype(np.uint8), d16


def dequantize_q8(qs, d16):
    rows, cols = qs.shape
    q = qs.reshape(rows, cols // BLOCK, BLOCK).astype(np.float32)
    return (d16.astype(np.float32)[..., None] * q).reshape(rows, cols)


def dequantize_q4(qs, d16):
    rows, half = qs.shape
    b = qs.reshape(rows, half * 2 // BLOCK, BLOCK // 2)
    q = np.concatenate([b & 0x0F, b >> 4], axis=-1).astype(np.float32) - np.float32(8)
    return (d16.astype(np.float32)[..., None] * q).reshape(rows, half * 2)


def quantize_activations(x):
    """-> (q int8 [n, cols], d float32 [n, cols/32], sum int32 [n, cols/32]).

    d = amax / 127 in fp32 (not rounded to fp16), q = clamp(round_half_away(x / d), -127, 127),
    q = 0 where d == 0; a block holding a non-finite value gets d = NaN and q = 0."""
    x = np.asarray(x, dtype=np.float32)
    n, cols = x.shape
    v = x.reshape(n, cols // BLOCK, BLOCK)
    finite = np.all(np.isfinite(v), axis=-1)
    with np.errstate(invalid="ignore"):
        amax = np.max(np.abs(np.where(np.isfinite(v), v, 0)), axis=-1)
    d = np.where(finite, amax / np.float32(127), np.float32(np.nan)).astype(np.float32)
    ok = finite & (d != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(round_half_away(v / np.where(ok, d, np.float32(1))[..., None]), -127, 127)
    q = np.where(ok[..., None], q, 0).astype(np.int8)
    return q.reshape(n, cols), d, q.astype(np.int32).sum(axis=-1).astype(np.int32)


def fixture_inputs():
    """Weights [40, 256] and activations [6, 256] covering the corner cases of the spec."""
    rng = np.random.default_rng(15)
    rows, cols, n = 40, 256, 6
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    # Per-block magnitudes from 1e-7 (fp16 subnormal scales) to 1e3.
    mags = (10.0 ** rng.uniform(-7, 3, size=(rows, cols // BLOCK))).astype(np.float32)
    w = (w.reshape(rows, -1, BLOCK) * mags[..., None]).reshape(rows, cols)
    w[0, :BLOCK] = 0  # all-zero block: d = 0, q = 0
    # Exact ties: d = 1 (Q8: amax 127), halves must round away from zero.
    w[1, :BLOCK] = np.array([127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5] * 4, dtype=np.float32)
    # Q4 ties: m = -8 gives d = 1; 7.5 clamps to 7, -8.5 cannot occur (|w| <= |m|).
    w[2, :BLOCK] = np.array([-8, 0.5, 1.5, -2.5, 6.5, 7.5, 8, -7.5] * 4, dtype=np.float32)
    # Equal magnitudes of opposite sign: the first one sets the Q4 sign.
    w[3, :BLOCK] = np.array([3, -3] + [1] * 30, dtype=np.float32)
    w[4, :BLOCK] = np.array([-3, 3] + [1] * 30, dtype=np.float32)
    w[5, :BLOCK] = 1e-30  # scale underflows to 0 in fp16
    w[6, :BLOCK] = rng.uniform(-1e-6, 1e-6, BLOCK).astype(np.float32)  # subnormal fp16 scale
    x = rng.standard_normal((n, cols)).astype(np.float32) * np.float32(3)
    x[0, :BLOCK] = 0
    x[1, :BLOCK] = np.array([127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5] * 4, dtype=np.float32)
    x[2, :BLOCK] = 1e-43  # subnormal fp32 activations: clamped to 127
    return w, x


def write_fixture(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    w, x = fixture_inputs()
    q8, d8 = quantize_q8(w)
    q4, d4 = quantize_q4(w)
    aq, ad, asum = quantize_activations(x)
    arrays = {
        "weights_f32.bin": w.astype("<f4"),
        "q8_qs.bin": q8.astype("i1"),
        "q8_scales.bin": d8.view(np.uint16).astype("<u2"),
        "q4_qs.bin": q4.astype("u1"),
        "q4_scales.bin": d4.view(np.uint16).astype("<u2"),
        "act_f32.bin": x.astype("<f4"),
        "act_q.bin": aq.astype("i1"),
        "act_d.bin": ad.astype("<f4"),
        "act_sum.bin": asum.astype("<i4"),
    }
    for name, a in arrays.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(a.tobytes())
    with open(os.path.join(out_dir, "shapes.txt"), "w") as f:
        f.write(f"rows {w.shape[0]}\ncols {w.shape[1]}\ntokens {x.shape[0]}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write-fixture", metavar="DIR", required=True)
    write_fixture(ap.parse_args().write_fixture)


if __name__ == "__main__":
    main()
