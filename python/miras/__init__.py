"""miras: compiled MIRAS memory modules for PyTorch.

    import miras
    m = miras.compile("examples/gated_deltanet.miras", D=64, chunk=1)  # params as keywords
    m = miras.load("out/libgdn.so")                                    # an existing library
    o, state = m(q, k, v, state=None, eta=eta, alpha=alpha)            # gates by DSL name
    m.metadata                                                         # what `miras info` prints

Tensors follow the SPEC layout ([B, T, H, D]); o and the final states are differentiable
with respect to q, k, v, every gate and every initial state through the compiled backward
kernels (torch.library custom ops miras::forward / miras::backward, which
torch.compile(fullgraph=True) traces without graph breaks).
"""

from __future__ import annotations

try:
    from . import _core
except ImportError as err:  # the extension was not built for this interpreter
    raise ImportError(
        "miras: the extension miras._core is missing or was built for another Python "
        f"({err}); build the package with `make build` (build/venv) or `pip install .`"
    ) from err

from ._compile import cache_dir, find_mirasc
from ._compile import compile_module as compile  # noqa: A001 (the API's name)
from ._errors import CompileError, MirasError

__version__ = "0.1.0"
ABI_VERSION = _core.ABI_VERSION


def load(path):
    """Opens an existing compiled library (lib<name>.so) as a miras.Module."""
    from ._module import Module

    return Module(path)


def cuda_available():
    """(usable, reason): whether the runtime can use a CUDA GPU from this process."""
    return _core.cuda_available()


# The custom ops are registered at import, so torch.compile finds them.
from . import _ops  # noqa: E402,F401
from ._module import Module  # noqa: E402

__all__ = ["compile", "load", "Module", "MirasError", "CompileError", "cache_dir",
           "find_mirasc", "cuda_available", "ABI_VERSION"]
