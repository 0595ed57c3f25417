import os
import sys

# Triton kernels run on CPU tensors under its interpreter. triton.jit reads this variable when
# kernel.py is imported, so it must be set before any test imports it.
if os.environ.get("TRITON_INTERPRET") is None:
    try:
        import torch
        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
    except ImportError:
        pass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
