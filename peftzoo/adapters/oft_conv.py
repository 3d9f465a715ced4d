"""OFT on ``nn.Conv2d`` (PEFT 0.21.2's ``oft.Conv2d``), for the convolutions where PEFT's OFT is coherent: 1×1 kernels.

    y = conv(R x, W) + b,  R acting on every pixel's c_in channels (n = c_in / b blocks, as for Linear)
    merged: W' = W Rᵀ with W viewed as c_out × c_in (its 1×1 kernel)

Exact for any stride, padding and ``padding_mode``: a 1×1 kernel mixes channels pixel by pixel, and zero, reflected,
replicated or circular padding of R x is R times the padding of x. Refused, each with its reason:

* a kernel other than 1×1: PEFT 0.21.2 flattens the filter to c_in·kh·kw inputs, unfolds x into overlapping
  stride-1 patches, rotates them and folds them back with ``F.fold`` (which sums the overlaps) through a mis-ordered
  reshape; already at init (R = I) its output is not the base layer's (one probe on random 4 → 6-channel convs:
  max |Δ| 8.0 on a 3×3 one, 3.5 on a 2×2 stride-2 one; tests/test_oft.py asserts it), and it differs from PEFT's
  own merge W Rᵀ, so no adapter can equal PEFT there;
* ``groups > 1``: PEFT views the weight as c_out × c_in·kh·kw, which a grouped weight (c_out × c_in/groups × …)
  is not, so it cannot merge it;
* ``dilation[0] > 1``: PEFT refuses it (a 1×1 kernel ignores dilation; PEFT checks the height's only, so do we).

Trainable elements per adapted layer: c_in · (b−1)/2 (``block_share``: b(b−1)/2), as for a Linear with d_in = c_in.
"""
from __future__ import annotations

import torch


class ConvRotation:
    """What ``oft.OftConv`` (this mixin on ``oft.OftLayer``) changes for a Conv2d: its sizes, refusals and forward.
    Merge, unmerge, counts and PEFT's tensors are OftLayer's: a 1×1 kernel's c_out × c_in × 1 × 1 weight is
    rotated by OftLayer's block products as it is."""

    @staticmethod
    def dims(base):
        return base.in_channels, base.out_channels

    @classmethod
    def check(cls, name, base, config):
        why = ("a groups > 1 weight is not c_out × c_in·kh·kw, which PEFT's merge assumes" if base.groups != 1 else
               "PEFT's OFT refuses dilation > 1 (in height)" if base.dilation[0] > 1 else
               None if tuple(base.kernel_size) == (1, 1) else
               f"kernel {tuple(base.kernel_size)}: PEFT 0.21.2's OFT on a kernel larger than 1×1 rotates overlapping "
               "stride-1 patches and folds them back summed (its output differs from the base layer's already at "
               "init, and from its own merge), so no adapter can equal it; only 1×1 kernels are supported")
        if why:
            raise ValueError(f"OFT on {name!r}, a Conv2d: {why}")
        super().check(name, base, config)

    def adapted(self, x):
        """conv(R x): each pixel's channel vector cut into n blocks of b and each block rotated (PEFT's forward)."""
        r = self.rotation()
        xs = x.movedim(-3, -1)  # (…, H, W, C)
        xs = torch.einsum("...rk,rkc->...rc", xs.reshape(*xs.shape[:-1], self.n, self.b), r).reshape(xs.shape)
        return self.base(xs.movedim(-1, -3))
