"""Fused Triton kernels (RMSNorm, SwiGLU, causal flash attention) and their plain PyTorch references.

Each op runs its Triton kernel on CUDA tensors and its reference on CPU tensors, or its Triton kernel under
Triton's interpreter when TRITON_INTERPRET=1 (see `kernels._dispatch`).
"""

from kernels._dispatch import kernel_import_mode

with kernel_import_mode():
    from kernels.flash_attention import flash_attention, flash_attention_reference
    from kernels.rms_norm import rms_norm, rms_norm_reference
    from kernels.swiglu import swiglu, swiglu_reference

__all__ = [
    "flash_attention",
    "flash_attention_reference",
    "rms_norm",
    "rms_norm_reference",
    "swiglu",
    "swiglu_reference",
]
