#!/usr/bin/env python3
# A float64 model of the rounding in fftConv's bfloat16 tensor-core kernels (native/cuda/fft_conv.cu:
# fft_conv_tc_kernel at m = 1024, fft_conv_tcr_kernel<kR> at m = 1024 kR). Every float16 operand is
# rounded after its power-of-two scale, as in the kernels; the accumulations are exact (the kernels' float32
# sums round far less). It prints, against the exact convolution of bfloat16 rows, the relative L2 error
# before the output's rounding and the share of bfloat16 outputs equal to the exact result's rounding (the
# kernels measure ~83% on the H200), for variants the kernels do not take:
#   --spectra16  the filters' spectra through the same float16 transform (no hi/lo split)
#   --radix16    the radix-kR step and its inverse with float16 operands (m > 1024)
# Usage: python3 bench/fft-tc-model.py [--m 1024|4096|16384] [--rows N] [--spectra16] [--radix16]
# (numpy; about a second a row at m = 16384).
import argparse

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--m", type=int, default=1024, choices=[1024, 4096, 16384])
ap.add_argument("--rows", type=int, default=24)
ap.add_argument("--spectra16", action="store_true")
ap.add_argument("--radix16", action="store_true")
args = ap.parse_args()

P, M1 = 32, 1024
m = args.m
kR = m // M1
n = 2 * m
L = m


def f16(a):
    return a.astype(np.float16).astype(np.float64)


def cf16(a):
    return f16(a.real) + 1j * f16(a.imag)


def bf16(a):
    b = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return b.astype(np.uint32).view(np.float32).astype(np.float64)


def scale_for(a):  # 2^e putting the largest component in [128, 256), as pow2_scale
    mx = np.max(np.abs(np.concatenate([np.ravel(a.real), np.ravel(a.imag)])))
    return 2.0 ** (7 - (np.frexp(mx)[1] - 1))


idx = np.arange(P)
F16 = cf16(np.exp(-2j * np.pi * np.outer(idx, idx) / P))
W = np.exp(-2j * np.pi * np.outer(idx, idx) / M1)


def forward(x, s1):  # a warp's 1024-point transform: x[32 r + q] in, Z[p + 32 s] out
    c2 = cf16(W * (F16 @ cf16(x.reshape(P, P) * s1))) @ F16
    return c2.T.reshape(-1) / s1


def inverse(y):  # its inverse (unnormalized), the warp's own scale
    s2 = scale_for(y)
    e = cf16(np.conj(W) * (np.conj(F16) @ cf16((y * s2).reshape(P, P)))) @ np.conj(F16)
    return e.T.reshape(-1) / s2


j = np.arange(kR)
TW = np.exp(-2j * np.pi * np.outer(j, np.arange(M1)) / m)  # W_m^(j2 k1)
DR = np.exp(-2j * np.pi * np.outer(j, j) / kR)  # W_kR^(j2 k2)
f = np.arange(m)
fm = (m - f) % m
w2 = np.exp(-1j * np.pi * f / m)  # W_2m^f


def spectrum(gp):  # S = K / (2n), S[m] last, from the filter's packed transform (mirror_spectrum)
    if not args.spectra16:
        return np.fft.fft(gp)[: m + 1] / (2 * n)
    z = gp[0::2] + 1j * gp[1::2]
    s1 = scale_for(z)
    zz = np.stack([forward(z[q::kR], s1) for q in range(kR)])
    zz = np.concatenate(list(DR @ (TW * zz))) if kR > 1 else zz[0]
    zb = np.conj(zz[fm])
    even, odd = zz + zb, -1j * (zz - zb)
    s = np.empty(m + 1, dtype=complex)
    s[:m] = (even + w2 * odd) / (4 * n)
    s[m] = np.conj(even[0] - odd[0]) / (4 * n)
    return s


def radix(a, inv):  # the DFT-kR across the subsequences, exact or with float16 operands
    d = np.conj(DR) if inv else DR
    if not args.radix16:
        return d @ a
    sc = scale_for(a)
    return (cf16(d) @ cf16(a * sc)) / sc


def conv(x, s):
    xp = np.zeros(n)
    xp[: len(x)] = x
    z = xp[0::2] + 1j * xp[1::2]
    s1 = scale_for(z)
    y = np.stack([forward(z[q::kR], s1) for q in range(kR)])
    zz = np.concatenate(list(radix(TW * y, False))) if kR > 1 else y[0]  # Z[k1 + 1024 k2]
    ka, kbc = s[f], np.conj(np.where(f == 0, s[m], s[fm]))
    d = ka - kbc
    zy = (2 * (ka + kbc + w2.imag * d)) * zz + (2j * w2.real * d) * np.conj(zz[fm])
    v = np.conj(TW) * radix(zy.reshape(kR, M1), True) if kR > 1 else zy.reshape(1, M1)
    yz = np.empty(m, dtype=complex)
    for q in range(kR):
        yz[q::kR] = inverse(v[q])
    out = np.empty(n)
    out[0::2], out[1::2] = yz.real, yz.imag
    return out[:L]


rng = np.random.default_rng(11)
num = den = 0.0
equal = total = 0
for _ in range(args.rows):
    x = bf16(rng.normal(size=L))
    gp = np.zeros(n)
    gp[:L] = rng.normal(size=L) / np.sqrt(L)
    gp[0] += rng.normal()  # D at lag 0
    exact = np.fft.irfft(np.fft.rfft(np.r_[x, np.zeros(n - L)]) * np.fft.rfft(gp))[:L]
    y = conv(x, spectrum(gp))
    num += np.sum((y - exact) ** 2)
    den += np.sum(exact**2)
    equal += int(np.sum(bf16(y) == bf16(exact)))
    total += L
variant = ", ".join(v for v, on in (("float16 spectra", args.spectra16), ("float16 radix step", args.radix16)) if on)
print(
    f"m = {m}{' (' + variant + ')' if variant else ''}, {args.rows} rows: relative L2 error before rounding "
    f"{np.sqrt(num / den):.2e}; bfloat16 outputs equal to the exact rounding {100 * equal / total:.1f}%"
)
