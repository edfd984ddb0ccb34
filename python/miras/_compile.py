"""miras.compile: a .miras file to a loaded module, through mirasc, cached by content."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from . import _core
from ._errors import CompileError

_lock = threading.Lock()
_loaded: dict[str, object] = {}  # library path -> Module: a second call in a process is a dict hit
# Closed before the interpreter tears the extension down.
atexit.register(_loaded.clear)


def find_mirasc() -> str:
    """The mirasc to run: $MIRAS_MIRASC, else the build tree this package was built in
    (BUILD/python/miras -> BUILD/bin/mirasc), else mirasc on PATH."""
    explicit = os.environ.get("MIRAS_MIRASC")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise CompileError(f"MIRAS_MIRASC={explicit} is not an executable file")
        return explicit
    in_build = Path(__file__).resolve().parent.parent.parent / "bin" / "mirasc"
    if os.access(in_build, os.X_OK):
        return str(in_build)
    on_path = shutil.which("mirasc")
    if on_path:
        return on_path
    raise CompileError(
        "cannot find mirasc: set MIRAS_MIRASC to its path or put it on PATH "
        "(it is built by `make build` into build/bin/mirasc)")


def cache_dir() -> Path:
    """$MIRAS_CACHE_DIR, else $XDG_CACHE_HOME/miras, else ~/.cache/miras."""
    explicit = os.environ.get("MIRAS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "miras"


def _compiler_identity(mirasc: str) -> dict:
    # A rebuilt mirasc is another compiler: its size and modification time are in the key.
    st = os.stat(mirasc)
    return {"path": os.path.realpath(mirasc), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


_host = None


def _host_identity() -> dict:
    """What else decides the generated code: mirasc targets the host CPU (its model and
    features: a cache shared between machines must not hand an AVX-512 kernel to another
    CPU), reads MIRAS_VECTOR_WIDTH and finds ptxas through CUDA_ROOT / CUDA_HOME /
    CUDA_PATH; and the ABI the runtime loads."""
    global _host
    if _host is None:
        cpu = platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                lines = [line for line in f if line.startswith(("model name", "flags", "Features"))]
            # One processor's lines are every processor's on the machines mirasc targets.
            cpu += "|" + "|".join(dict.fromkeys(line.strip() for line in lines))
        except OSError:
            pass
        _host = {"cpu": hashlib.sha256(cpu.encode()).hexdigest()[:16],
                 "abi": _core.ABI_VERSION}
    env = {v: os.environ.get(v, "") for v in
           ("MIRAS_VECTOR_WIDTH", "CUDA_ROOT", "CUDA_HOME", "CUDA_PATH")}
    return {**_host, "env": env}


def _option_args(params: dict, chunk, backward: bool, target, algorithm,
                 backward_segment, extra_args) -> list[str]:
    args = []
    for name, value in sorted(params.items()):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"miras.compile: parameter {name}={value!r} is not a number")
        args.append(f"-D{name}={value!r}")
    if chunk is not None:
        args.append(f"--chunk={int(chunk)}")
    if algorithm is not None:
        args.append(f"--algorithm={algorithm}")
    if target is not None:
        args.append(f"--target={target}")
    if backward:
        args.append("--backward")
        if backward_segment is not None:
            args.append(f"--backward-segment={int(backward_segment)}")
    elif backward_segment is not None:
        raise ValueError("miras.compile: backward_segment needs backward=True")
    args.extend(extra_args)
    return args


def compile_module(path, *, chunk=None, backward=True, target=None, algorithm=None,
                   backward_segment=None, extra_args=(), cache=True, **params):
    """Compiles a .miras file and loads it as a miras.Module.

    ``miras.compile("examples/gated_deltanet.miras", D=64, chunk=1)``: keyword
    parameters override the module's ``param`` values (mirasc -DNAME=VALUE); ``chunk``,
    ``algorithm`` ("auto", "sequential", "chunked"), ``target`` ("cpu", "cuda",
    "cpu,cuda") and ``backward_segment`` are mirasc's options; ``backward`` (default
    True) builds the backward pass that autograd needs; ``extra_args`` go to mirasc as
    they are. The library is cached under miras.cache_dir() by the source's content,
    the parameters, the options and the compiler's identity, so a second call (in this
    process or a later one) compiles nothing. A module mirasc rejects raises
    miras.CompileError carrying its located diagnostic.
    """
    from ._module import Module  # the Module class needs torch; imported when used

    source_path = Path(path)
    try:
        source = source_path.read_bytes()
    except OSError as err:
        raise CompileError(f"cannot read {path}: {err.strerror}") from None
    mirasc = find_mirasc()
    args = _option_args(params, chunk, backward, target, algorithm, backward_segment,
                        list(extra_args))
    key_data = {
        "source": hashlib.sha256(source).hexdigest(),
        "file": source_path.name,
        "args": args,
        "compiler": _compiler_identity(mirasc),
        "host": _host_identity(),
    }
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:32]
    with _lock:
        directory = cache_dir() / key
        library = directory / f"lib{source_path.stem}.so"
        if cache and str(library) in _loaded:
            return _loaded[str(library)]
        if not (cache and library.is_file()):
            directory.mkdir(parents=True, exist_ok=True)
            # mirasc writes into a temporary file that is renamed into place only when it
            # succeeded, so neither a failed compile nor a concurrent one leaves a broken
            # library under the cache key.
            # It is built under its final name (the library's SONAME) in a directory
            # of its own.
            with tempfile.TemporaryDirectory(prefix=".partial-", dir=directory) as partial:
                built = os.path.join(partial, library.name)
                run = subprocess.run([mirasc, str(source_path), *args, "-o", built],
                                     capture_output=True, text=True)
                if run.returncode != 0:
                    raise CompileError(run.stderr.strip() or
                                       f"mirasc exited with status {run.returncode}",
                                       diagnostic=run.stderr, returncode=run.returncode)
                os.replace(built, library)
            (directory / "key.json").write_text(json.dumps(key_data, indent=2) + "\n")
        module = Module(str(library))
        if cache:
            _loaded[str(library)] = module
        return module
