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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the learner's modules at the top; the lab's scripts import each other from their folders
sys.path[:0] = [ROOT, os.path.join(ROOT, "experiments"), os.path.join(ROOT, "bench")]
