"""Fused Triton kernels (RMSNorm, SwiGLU, causal flash attention) and their plain PyTorch references, installed
as `pretrain_kernels` (the import name `kernels` belongs to Hugging Face's kernel hub package).

Each op runs its Triton kernel on CUDA tensors and its reference on CPU tensors, or its Triton kernel under
Triton's interpreter when TRITON_INTERPRET=1 (see `pretrain_kernels._dispatch`).
"""

from pretrain_kernels._dispatch import kernel_import_mode

with kernel_import_mode():
    from pretrain_kernels.flash_attention import flash_attention, flash_attention_reference
    from pretrain_kernels.rms_norm import rms_norm, rms_norm_reference
    from pretrain_kernels.swiglu import swiglu, swiglu_reference

__all__ = [
    "flash_attention",
    "flash_attention_reference",
    "rms_norm",
    "rms_norm_reference",
    "swiglu",
    "swiglu_reference",
]
