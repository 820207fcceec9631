"""ctest helper: load the CMake-built operator library into torch and check each op family once."""

from __future__ import annotations

import sys

import torch

torch.ops.load_library(sys.argv[1])
x = torch.randn(5, 33, dtype=torch.float64)
w = torch.rand(33, dtype=torch.float64) + 0.5
y, rstd = torch.ops.enigma_fast.rms_norm_fwd(x, w, 1e-6)
expect = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w
torch.testing.assert_close(y, expect)
print("torch library OK:", sys.argv[1])
