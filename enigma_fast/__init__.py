"""enigma_fast: fast C++/CUDA kernels and models for small DNA language models on PyTorch.

Layers (each imports only those below it; the table is docs/architecture.md): ``files``/``progress`` ->
``_extension``/``reference`` -> ``ops`` -> ``tokenizers`` -> ``nn``/``data`` -> ``generation`` -> ``models`` ->
``scoring`` -> ``train``/``heldout``/``variants`` -> ``cli`` -> the ``python -m enigma_fast.<tool>`` modules.
"""

from enigma_fast import _extension as _extension
from enigma_fast import nn as nn
from enigma_fast import ops, reference
from enigma_fast import scoring as scoring
from enigma_fast import tokenizers as tokenizers
from enigma_fast._extension import (
    backend_info,
    cpu_capability,
    get_cpu_capability,
    set_cpu_capability,
    supported_cpu_capabilities,
)
from enigma_fast.hf import _hook as _hf_hook

# transformers' Auto classes learn our models when they are imported (enigma_fast.hf); nothing is imported here
_hf_hook.install()

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "backend_info",
    "cpu_capability",
    "get_cpu_capability",
    "nn",
    "ops",
    "reference",
    "scoring",
    "set_cpu_capability",
    "supported_cpu_capabilities",
    "tokenizers",
]
