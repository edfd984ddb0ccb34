"""miras.Module: a loaded compiled module, called on torch tensors (SPEC section 8 layout)."""

from __future__ import annotations

import json
import threading
import weakref

import torch

from . import _core
from ._errors import MirasError, translate

# Floating dtypes a caller may pass; the CPU kernels read float32, the CUDA kernels float32
# or bfloat16 inputs. Anything else is converted (by a differentiable .to), never misread.
_FLOATING = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

_registry_lock = threading.Lock()
# handle -> Module: what the custom ops call. Weak: a module lives as long as its user
# (or miras.compile's cache) holds it; handles are never reused.
_registry: "weakref.WeakValueDictionary[int, Module]" = weakref.WeakValueDictionary()
_next_handle = 1


def module_for(handle: int) -> "Module":
    try:
        return _registry[handle]
    except KeyError:
        raise MirasError(f"miras module handle {handle} is not loaded in this process",
                         "invalid argument") from None


def _as_kernel_input(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The tensor as the kernels read it: of `dtype`, C-contiguous (a differentiable
    copy when it is not already; the tensor itself when it is)."""
    if tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    return tensor if tensor.is_contiguous() else tensor.contiguous()


def _needs_op(tensors) -> bool:
    """Whether the call must go through the custom op: autograd will differentiate it,
    torch.compile is tracing it, or a tensor is not a plain one (fake, functional or
    another subclass: only the op has their semantics)."""
    if torch.compiler.is_compiling():
        return True
    if any(type(t) is not torch.Tensor for t in tensors):
        return True
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def specs(names, tensors):
    """The (name, address, shape) triples _core takes, for float32 contiguous CPU tensors."""
    return [(n, t.data_ptr(), t.shape) for n, t in zip(names, tensors)]


class Module:
    """A compiled module (lib<name>.so) opened by the runtime.

    Call it as ``o, state = m(q, k, v, state=None, **gates)``: q, k [B, T, H, Dk]
    (with steps > 1: k [B, T, H, steps, Dk]), v [B, T, H, (steps,) Dv], each gate by its
    DSL name ([B, T, H], [B, T, H, Dk|Dv] or [B, T, H, steps]), ``state`` a dict from
    state name to [B, H, *shape] (missing names and None: the declared start,
    ``initial_state``; zeros unless the module declares an ``init``). Returns o [B, T, H, Dv]
    in q's dtype and the dict of final states (float32). Both are differentiable with
    respect to q, k, v, every gate and every initial state when the library was built
    with a backward pass (miras.compile does that by default).
    """

    def __init__(self, path: str):
        try:
            self._lib = _core.Library(str(path))
        except _core.RuntimeCallError as err:
            raise translate(err) from None
        self.path = str(path)
        #: What `miras info` prints for this library, as a dict.
        self.metadata = json.loads(self._lib.metadata_json())
        self.name = self.metadata["name"]
        self.gate_names = [g["name"] for g in self.metadata["gates"]]
        self.state_names = [s["name"] for s in self.metadata["states"]]
        self.state_shapes = {s["name"]: tuple(s["shape"]) for s in self.metadata["states"]}
        self._input_names = ("q", "k", "v", *self.gate_names, *self.state_names)
        self._output_names = ("o", *self.state_names)
        # What a forward saves for the backward (runtime.h MIRAS_CHECKPOINTS_SUFFIX): the
        # carried states' checkpoints, with a CPU backward.
        self._checkpoint_states = [s["name"] for s in self.metadata["states"]
                                   if s.get("role", "carried") == "carried"]
        self._checkpoint_names = tuple(n + _core.CHECKPOINTS_SUFFIX
                                       for n in self._checkpoint_states)
        # A plain bool: torch.compile traces _call_op, not the library's properties.
        self._saves_checkpoints = bool(self._lib.has_backward)
        self._output_shapes = {}
        #: Kernel threads; None: torch.get_num_threads() at each call.
        self.threads = None
        global _next_handle
        with _registry_lock:
            self.handle = _next_handle
            _next_handle += 1
            _registry[self.handle] = self

    @property
    def has_backward(self) -> bool:
        return self._lib.has_backward

    @property
    def check_finite(self) -> bool:
        """When True, a call raises MirasError (status "non-finite value") naming the
        first NaN or infinity of an input or adjoint before the kernel runs, or of an
        output after it (the runtime's check; default: $MIRAS_CHECK_FINITE at load)."""
        return self._lib.check_finite

    @check_finite.setter
    def check_finite(self, enabled: bool):
        self._lib.check_finite = bool(enabled)

    @property
    def has_cuda(self) -> bool:
        return self._lib.has_cuda

    def __repr__(self):
        m = self.metadata
        return (f"miras.Module({self.name!r}, dk={m['dk']}, dv={m['dv']}, chunk={m['chunk']}, "
                f"gates={self.gate_names}, states={self.state_names}, path={self.path!r})")

    # -- the call --------------------------------------------------------------------

    def __call__(self, q, k, v, state=None, *, threads=None, **gates):
        try:
            tensors = [q, k, v, *[gates[n] for n in self.gate_names]]
        except KeyError as missing:
            raise TypeError(f"{self.name}: missing gate {missing} (the module's gates are "
                            f"{', '.join(self.gate_names)})") from None
        if len(gates) != len(self.gate_names):
            unknown = sorted(set(gates) - set(self.gate_names))
            raise TypeError(f"{self.name}: unknown gate(s) {', '.join(unknown)}; the module's "
                            f"gates are {', '.join(self.gate_names) or 'none'}")
        if not isinstance(q, torch.Tensor):
            raise TypeError(f"{self.name}: 'q' must be a torch.Tensor, not {type(q).__name__}")
        if q.dim() < 3 or min(q.shape[:3]) < 1:
            raise MirasError(f"{self.name}: q must be [B, T, H, Dk] with B, T and H positive, "
                             f"got shape {list(q.shape)}", "shape error")
        tensors += self._initial_states(state, q.shape[0], q.shape[2], q.device)
        # The common inference call: plain CPU float32 contiguous tensors, nothing to
        # differentiate, nothing tracing. The kernel runs without the dispatcher and
        # without conversions (the runtime checks every shape); the rest goes through the
        # custom op.
        if not torch.compiler.is_compiling() and all(
                type(t) is torch.Tensor and t.is_cpu and t.dtype is torch.float32
                and not t.requires_grad and t.is_contiguous() for t in tensors):
            if threads is None:
                threads = self.threads
            if type(threads) is not int or threads < 1:
                threads = self._threads(threads) or torch.get_num_threads()
            outputs = self._forward_prepared(threads, tensors)
            return outputs[0], dict(zip(self.state_names, outputs[1:]))
        return self._call_op(q, tensors, threads)

    def _call_op(self, q, tensors, threads):
        """Everything but the plain call: checks, conversions, the custom op."""
        from . import _ops

        for name, tensor in zip(self._input_names, tensors):
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"{self.name}: '{name}' must be a torch.Tensor, "
                                f"not {type(tensor).__name__}")
        device = q.device
        device_index = q.get_device()  # -1 on the CPU: cheaper than comparing devices
        for name, tensor in zip(self._input_names, tensors):
            if tensor.get_device() != device_index or tensor.dtype not in _FLOATING:
                self._refuse(name, tensor, device)
        input_dtype = torch.float32
        if device.type == "cuda":
            self._check_cuda(device)
            # The bfloat16 kernel where nothing is differentiated: the backward kernel
            # takes float32 inputs, so a call autograd goes through runs float32.
            if all(t.dtype == torch.bfloat16 for t in tensors[:len(tensors) - len(self.state_names)]) \
                    and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
                input_dtype = torch.bfloat16
        elif device.type != "cpu":
            raise MirasError(f"{self.name}: tensors on {device} are not supported (cpu, cuda)",
                             "device error")
        first_state = len(tensors) - len(self.state_names)
        ordered = [_as_kernel_input(t, input_dtype if i < first_state else torch.float32)
                   for i, t in enumerate(tensors)]
        if device.type == "cpu" and not _needs_op(ordered):
            # Nothing to differentiate and nothing tracing: the kernel without the
            # dispatcher (about 15 us less per call, what a decode loop pays).
            outputs = self._forward_prepared(self._threads(threads) or torch.get_num_threads(),
                                             ordered)  # e.g. float64 inputs, no gradient
        else:
            # A CPU forward autograd will differentiate saves the checkpoints its
            # backward would otherwise recompute (they come after the final states).
            save = (device.type == "cpu" and self._saves_checkpoints and torch.is_grad_enabled()
                    and any(t.requires_grad for t in ordered))
            outputs = _ops.forward(self.handle, self._threads(threads), ordered, save)
        o = outputs[0] if q.dtype == torch.float32 else outputs[0].to(q.dtype)
        return o, dict(zip(self.state_names, outputs[1:1 + len(self.state_names)]))

    def _refuse(self, name, tensor, device):
        if tensor.device != device:
            raise MirasError(f"{self.name}: '{name}' is on {tensor.device}, q on {device}: "
                             "every tensor of a call must be on one device", "invalid argument")
        raise MirasError(f"{self.name}: '{name}' has dtype {tensor.dtype}; a floating "
                         "dtype (float32, bfloat16, float16, float64) is expected", "dtype error")

    def _check_cuda(self, device):
        if not self.has_cuda:
            raise MirasError(f"{self.name}: the tensors are on {device} but {self.path} "
                             "has no CUDA kernels (compile with target='cpu,cuda')",
                             "device error")
        if (device.index or 0) != 0:
            raise MirasError(f"{self.name}: the runtime runs on GPU 0 (its primary "
                             f"context), the tensors are on {device}", "device error")

    def _threads(self, threads) -> int:
        # 0 stands for torch.get_num_threads(), read when the kernel runs (inside the
        # opaque op: torch.compile cannot trace the call itself).
        if threads is None:
            threads = self.threads if self.threads is not None else 0
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"{self.name}: threads must be a positive integer (or None: "
                             f"torch.get_num_threads()), got {threads!r}")
        return threads

    def initial_state(self, batch: int, heads: int, device=None) -> "dict[str, torch.Tensor]":
        """Every state's declared start for `batch` sequences of `heads` heads, by name:
        float32 tensors [batch, heads, ...] holding what a call uses for a state it is not
        given (the module's `init`, e.g. `init W = uniform;`; zeros without one). The
        values come from the runtime (miras_library_initial_state: a normal init is the
        same on every machine and for every batch index)."""
        for what, n in (("batch", batch), ("heads", heads)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"{self.name}: {what} must be a positive integer, got {n!r}")
        return {name: self._declared_start(i, batch, heads, device)
                for i, name in enumerate(self.state_names)}

    def _declared_start(self, index, B, H, device):
        info = self.metadata["states"][index]
        shape = (B, H, *self.state_shapes[info["name"]])
        if info.get("init", "zeros") == "zeros" or info.get("role", "carried") != "carried":
            return torch.zeros(shape, device=device)
        start = torch.empty(shape, dtype=torch.float32)
        try:
            self._lib.initial_state(index, B, H, start.data_ptr())
        except _core.RuntimeCallError as err:
            raise translate(err) from None
        return start if device is None else start.to(device)

    def _initial_states(self, state, B, H, device):
        """The initial states in metadata order: given ones as they are, else the
        declared start (initial_state; zeros without an init)."""
        given = {} if state is None else state
        if any(name not in self.state_shapes for name in given):
            unknown = sorted(set(given) - set(self.state_names))
            raise TypeError(f"{self.name}: unknown state(s) {', '.join(unknown)}; the module's "
                            f"states are {', '.join(self.state_names)}")
        out = []
        for name in self.state_names:
            tensor = given.get(name)
            if tensor is None:
                tensor = self._declared_start(self.state_names.index(name), B, H, device)
            elif not isinstance(tensor, torch.Tensor):
                raise TypeError(f"{self.name}: state '{name}' must be a torch.Tensor, "
                                f"not {type(tensor).__name__}")
            out.append(tensor)
        return out

    # -- what the custom ops run (float32 contiguous tensors in metadata order) ------

    def input_names(self):
        return self._input_names

    def output_shapes(self, q: torch.Tensor):
        """[o's shape, every final state's] for q's B, T, H."""
        key = (q.shape[0], q.shape[1], q.shape[2])
        concrete = all(type(d) is int for d in key)  # not symbolic (torch.compile's fakes)
        shapes = self._output_shapes.get(key) if concrete else None
        if shapes is None:
            B, T, H = key
            shapes = [(B, T, H, self.metadata["dv"])]
            shapes += [(B, H, *self.state_shapes[n]) for n in self.state_names]
            if concrete and len(self._output_shapes) < 64:  # a handful of shapes in practice
                self._output_shapes[key] = shapes
        return shapes


    def checkpoint_shapes(self, q: torch.Tensor):
        """The shapes of the checkpoints a forward saves for q's B, T, H: [B, H, N,
        shape] per carried state, N = ceil((T + chunk - 1) / backward_segment) (miras_abi.h
        MIRAS_CHECKPOINTS); none without a backward."""
        if not self._saves_checkpoints:
            return []
        B, T, H = q.shape[0], q.shape[1], q.shape[2]
        S, C = self.metadata["backward_segment"], self.metadata["chunk"]
        n = (T + C - 1 + S - 1) // S
        return [(B, H, n, *self.state_shapes[name]) for name in self._checkpoint_states]

    def run_forward(self, threads: int, inputs, save: bool = False):
        inputs = [_as_kernel_input(t, torch.float32) for t in inputs]  # as a compiler may pass them
        return self._forward_prepared(threads or torch.get_num_threads(), inputs, save)

    def _forward_prepared(self, threads: int, inputs, save: bool = False):
        """The CPU forward on float32 contiguous inputs in metadata order: o, the final
        states and, with `save` (a library with a backward), the checkpoints."""
        q = inputs[0]
        outputs = [torch.empty(shape, dtype=torch.float32) for shape in self.output_shapes(q)]
        names = self._output_names
        if save:
            outputs += [torch.empty(shape, dtype=torch.float32)
                        for shape in self.checkpoint_shapes(q)]
            names += self._checkpoint_names
        try:
            self._lib.forward(specs(self._input_names, inputs), specs(names, outputs), threads)
        except _core.RuntimeCallError as err:
            raise translate(err) from None
        return outputs

    def run_backward(self, threads: int, inputs, adjoints, checkpoints=None):
        if not self.has_backward:
            raise MirasError(f"{self.name}: {self.path} was built without a backward pass "
                             "(compile with backward=True, or mirasc --backward)", "unsupported")
        threads = threads or torch.get_num_threads()
        inputs = [_as_kernel_input(t, torch.float32) for t in inputs]
        adjoints = [_as_kernel_input(t, torch.float32) for t in adjoints]
        names = self.input_names()
        grads = [torch.empty_like(t) for t in inputs]
        given = specs(names, inputs)
        if checkpoints:  # saved by the forward: the backward skips its first pass
            given += specs(self._checkpoint_names,
                           [_as_kernel_input(t, torch.float32) for t in checkpoints])
        try:
            self._lib.backward(given, specs(self._output_names, adjoints),
                               specs(names, grads), threads)
        except _core.RuntimeCallError as err:
            raise translate(err) from None
        return grads

    def run_backward_cuda(self, inputs, adjoints):
        if not self._lib.has_cuda_backward:
            raise MirasError(f"{self.name}: {self.path} has no CUDA backward kernel (compile "
                             "with target='cpu,cuda' and backward=True)", "unsupported")
        inputs = [_as_kernel_input(t, torch.float32) for t in inputs]  # its kernel reads float32
        self._check_cuda_shapes(inputs)
        q = inputs[0]
        B, T, H = q.shape[0], q.shape[1], q.shape[2]
        adjoints = [_as_kernel_input(t, torch.float32) for t in adjoints]
        for name, tensor, shape in zip(self._output_names, adjoints, self.output_shapes(q)):
            if tuple(tensor.shape) != tuple(shape):
                raise MirasError(f"{self.name}: the adjoint of '{name}' has shape "
                                 f"{list(tensor.shape)}, expected {list(shape)}", "shape error")
        grads = [torch.empty_like(t) for t in inputs]
        G = len(self.gate_names)
        ptr = [t.data_ptr() for t in inputs]
        gptr = [t.data_ptr() for t in grads]
        with torch.cuda.device(q.device):
            stream = torch.cuda.current_stream(q.device).cuda_stream
            try:
                self._lib.backward_cuda(B, T, H, ptr[0], ptr[1], ptr[2], ptr[3:3 + G],
                                        ptr[3 + G:], adjoints[0].data_ptr(),
                                        [a.data_ptr() for a in adjoints[1:]], gptr[0], gptr[1],
                                        gptr[2], gptr[3:3 + G], gptr[3 + G:], stream)
            except _core.RuntimeCallError as err:
                raise translate(err) from None
        return grads

    def _check_cuda_shapes(self, inputs):
        q = inputs[0]
        B, T, H = q.shape[0], q.shape[1], q.shape[2]
        for name, tensor in zip(self._input_names, inputs):
            try:
                expected = tuple(self._lib.tensor_shape(name, B, T, H))
            except _core.RuntimeCallError as err:
                raise translate(err) from None
            if tuple(tensor.shape) != expected:
                raise MirasError(f"{self.name}: tensor '{name}' has shape {list(tensor.shape)}, "
                                 f"expected {list(expected)}", "shape error")

    def run_forward_cuda(self, inputs):
        # As a compiler may pass them: bfloat16 only when q, k, v and every gate are.
        first_state = 3 + len(self.gate_names)
        dtype = (torch.bfloat16 if all(t.dtype == torch.bfloat16 for t in inputs[:first_state])
                 else torch.float32)
        inputs = [_as_kernel_input(t, dtype if i < first_state else torch.float32)
                  for i, t in enumerate(inputs)]
        self._check_cuda_shapes(inputs)
        q = inputs[0]
        B, T, H = q.shape[0], q.shape[1], q.shape[2]
        outputs = [torch.empty(shape, dtype=torch.float32, device=q.device)
                   for shape in self.output_shapes(q)]
        gates = inputs[3:3 + len(self.gate_names)]
        states = inputs[3 + len(self.gate_names):]
        dtype = _core.DTYPE_BF16 if q.dtype == torch.bfloat16 else _core.DTYPE_F32
        with torch.cuda.device(q.device):
            stream = torch.cuda.current_stream(q.device).cuda_stream
            try:
                self._lib.forward_cuda(B, T, H, q.data_ptr(), inputs[1].data_ptr(),
                                       inputs[2].data_ptr(), [g.data_ptr() for g in gates],
                                       [s.data_ptr() for s in states],
                                       [s.data_ptr() for s in outputs[1:]],
                                       outputs[0].data_ptr(), dtype, stream)
            except _core.RuntimeCallError as err:
                raise translate(err) from None
        return outputs
