# lit configuration for miras. Run through the build: lit build/test/lit
import ctypes
import os
import shutil

import lit.formats

config.name = "miras"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".miras", ".test"]
config.excludes = ["Inputs", "lit.cfg.py", "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.miras_obj_root, "test", "lit")

# Our tools first, then LLVM's (FileCheck, not, count).
config.environment["PATH"] = os.pathsep.join(
    [config.miras_tools_dir, config.llvm_tools_dir, config.environment.get("PATH", os.environ["PATH"])])

config.substitutions.append(("%python", "/usr/bin/python3"))
config.substitutions.append(("%examples", os.path.join(config.miras_src_root, "examples")))
config.substitutions.append(("%numeric", os.path.join(config.miras_src_root, "test", "numeric")))
config.substitutions.append(("%scripts", os.path.join(config.miras_src_root, "scripts")))
config.substitutions.append(("%build", config.miras_obj_root))

# GPU tooling: PTX assembly checks need ptxas; launch tests need a device.
ptxas = shutil.which("ptxas") or ("/usr/local/cuda/bin/ptxas" if os.path.exists("/usr/local/cuda/bin/ptxas") else None)
if ptxas:
    config.available_features.add("ptxas")
    config.substitutions.append(("%ptxas", ptxas))


def cuda_device_present():
    """True when the CUDA driver loads and sees a GPU (the runtime's own check, by hand)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 \
            and count.value > 0
    except OSError:
        return False


# Tests that launch kernels (test/lit/CUDA/device) need both the toolkit and a GPU.
if ptxas and cuda_device_present():
    config.available_features.add("cuda-device")
