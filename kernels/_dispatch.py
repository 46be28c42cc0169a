"""Host-side helpers shared by the ops; above all, where an op runs. One rule for every op:

- CUDA tensor                        -> the Triton kernel, compiled;
- CPU tensor                         -> the plain PyTorch reference;
- CPU tensor with TRITON_INTERPRET=1 -> the Triton kernel under Triton's interpreter (how CI tests kernels).

Triton decides when a function is decorated with `@triton.jit` whether it will be compiled or interpreted,
and its own helpers (`tl.sum`, `tl.max`, ...) are decorated when `triton` is first imported. So on a machine
without a GPU, where compiling is impossible anyway, `triton` is imported here and every kernel decorated with
this module's `jit`, in interpreter mode whatever the environment says. TRITON_INTERPRET then only has to be
set at call time (a test can monkeypatch it), and the rest of the process keeps running the fast references.
The ops take `triton` and `tl` from here, so that this module is the first to import them.

The folder kernels/ is installed as the package `pretrain_kernels` and holds no `__init__.py`: in a checkout,
with the repository root on sys.path, a namespace folder never shadows an installed package of the same name
(Hugging Face's `kernels`, which transformers imports).
"""

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator

import torch

_ENV = "TRITON_INTERPRET"


def interpret_requested() -> bool:
    """True when TRITON_INTERPRET asks for the Triton kernels on CPU (read at every call)."""
    return os.environ.get(_ENV, "").strip().lower() in {"1", "true", "on"}


# Decided once, before this module imports triton: a process that imported triton first (to compile for a GPU
# without one, as the launch-config check does) keeps the compiler.
_FORCE_INTERPRETER = not torch.cuda.is_available() and "triton" not in sys.modules


@contextlib.contextmanager
def _decoration_mode() -> Iterator[None]:
    """Within the block, Triton decorates for its interpreter where no GPU could compile (see the module doc)."""
    saved = os.environ.get(_ENV)
    if _FORCE_INTERPRETER:
        os.environ[_ENV] = "1"
    try:
        yield
    finally:
        if _FORCE_INTERPRETER:
            if saved is None:
                del os.environ[_ENV]
            else:
                os.environ[_ENV] = saved


with _decoration_mode():
    import triton
    import triton.language as tl

__all__ = ["as_rows", "jit", "kernels_interpreted", "tl", "triton", "use_triton"]


def jit(fn: Callable) -> Callable:
    """`triton.jit`, compiled or interpreted as this machine allows."""
    with _decoration_mode():
        return triton.jit(fn)


@functools.cache
def kernels_interpreted() -> bool:
    """True when the Triton kernels were decorated for the interpreter rather than for the GPU compiler."""
    import triton.language.standard as tl_standard
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl_standard.sum, InterpretedFunction)


def use_triton(x: torch.Tensor) -> bool:
    """Whether an op on `x` should run the Triton kernel (True) or the PyTorch reference (False)."""
    if x.is_cuda:
        return True
    if not interpret_requested():
        return False
    if not kernels_interpreted():
        raise RuntimeError(
            f"{_ENV}=1 asks for the Triton kernels on CPU, but triton was imported for the GPU compiler "
            f"before `pretrain_kernels` was; set {_ENV}=1 before the first `import triton`, or import a "
            "`pretrain_kernels` op first."
        )
    check_interpreter_numpy()
    return True


def check_interpreter_numpy() -> None:
    """Triton's interpreter before 3.7 turns a loop bound's 1-element array into an int with int(), which NumPy
    2.4 refuses: every kernel with a runtime loop bound would fail deep inside the interpreter."""
    import numpy
    import triton

    if _major_minor(triton.__version__) < (3, 7) and _major_minor(numpy.__version__) >= (2, 4):
        raise RuntimeError(f"{_ENV}=1 with triton {triton.__version__} needs numpy < 2.4 (found {numpy.__version__}):"
                           " its interpreter cannot index with NumPy 2.4 arrays; pip install 'numpy<2.4' or "
                           "'triton>=3.7'")


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """View `t` as (rows, last dim) with unit column stride, copying only when no such view exists."""
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()
