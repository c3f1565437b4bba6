"""The CPU configurations the report measures, and what each library really ran in them.

Emulating AVX2 on an AVX-512 machine takes one setting per library, in the environment of a fresh
process (:data:`ISA_ENV`):

* Numba: ``NUMBA_CPU_NAME=haswell`` *and* ``NUMBA_CPU_FEATURES=`` (empty). Numba takes its
  feature string from ``NUMBA_CPU_FEATURES``, else from the host, so the CPU name alone keeps
  the host's AVX-512 features and the code stays AVX-512 (an axpy loop: 21 zmm references with
  the name alone, 0 zmm and 25 ymm with both; Zen 4). Empty means the named CPU's own features.
* OpenBLAS: ``OPENBLAS_CORETYPE=Haswell`` (its AVX2 kernel).
* PyTorch: ``ATEN_CPU_CAPABILITY=avx2`` (ATen's kernels) and ``ONEDNN_MAX_CPU_ISA=AVX2``
  (oneDNN's JIT convolutions).

Settings are not trusted, they are checked: :func:`describe` reports the vector registers Numba
emitted for a small loop (:func:`numba_vector_width`), the vector width fastconv's generated
micro-kernels target, the OpenBLAS kernel threadpoolctl names and the ISA and convolution
implementation oneDNN's verbose log names (:func:`onednn_isa`).

``python -m benchmarks.isa`` prints the Numba probe as JSON (the tests run it under each setting).
"""
import json
import os
import re
import subprocess
import sys

#: The environment of each CPU configuration (None: remove the variable). Both remove
#: ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` as set on these machines for old OpenBLAS builds
#: (native: OpenBLAS picks its own kernel).
ISA_ENV = {
    "native": {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None,
               "NUMBA_CPU_NAME": None, "NUMBA_CPU_FEATURES": None},
    "avx2": {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "",
             "OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": None,
             "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "NUMBA_CACHE_DIR": os.path.join(os.path.expanduser("~"), ".cache", "fastconv-numba-avx2")},
}

#: Vector register name -> what it means for float32.
WIDTHS = {"zmm": "AVX-512, 16 float32 lanes", "ymm": "AVX2, 8 float32 lanes",
          "xmm": "SSE, 4 float32 lanes (no wider vectors)"}


def child_env(isa, base=None):
    """``base`` (default os.environ) with :data:`ISA_ENV` ``[isa]`` applied."""
    env = dict(os.environ if base is None else base)
    for key, value in ISA_ENV[isa].items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def shown(isa):
    """The settings of ``isa`` as a shell would write them (``-u NAME`` for a removal)."""
    return " ".join(f"{k}={v}" if v is not None else f"-u {k}" for k, v in ISA_ENV[isa].items())


def numba_vector_width():
    """Compile an axpy loop now (no cache) and count the vector registers in its assembly.

    Returns a dict: ``zmm``, ``ymm``, ``xmm`` (register references), ``widest`` ("zmm", "ymm" or
    "xmm"), ``label`` (e.g. "zmm (AVX-512, 16 float32 lanes)"), ``cpu`` (the CPU name Numba
    compiles for) and ``avx512f`` (whether its feature string enables AVX-512F). LLVM may prefer
    256-bit vectors on some AVX-512 CPUs (Intel Skylake-SP): ``avx512f`` with ``widest == "ymm"``
    says that, and the label says so too.
    """
    import llvmlite.binding as ll
    import numpy as np
    from numba import njit
    from numba.core import config

    @njit(cache=False)
    def axpy(a, x, y):
        for i in range(x.size):
            y[i] += a * x[i]

    v = np.ones(64, dtype=np.float32)
    axpy(np.float32(2), v, v)
    asm = axpy.inspect_asm(axpy.signatures[0])
    counts = {r: len(re.findall(rf"%{r}\d+", asm)) for r in WIDTHS}
    widest = next((r for r in WIDTHS if counts[r]), "xmm")
    cpu = config.CPU_NAME or ll.get_host_cpu_name()
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else ll.get_host_cpu_features().flatten()
    avx512 = "+avx512f" in features.split(",") if features else False
    if not features:  # empty: the named CPU's own features
        avx512 = cpu.lower() in _AVX512_CPU_NAMES
    label = f"{widest} ({WIDTHS[widest]})"
    if avx512 and widest != "zmm":
        label += ", although the target has AVX-512F (LLVM prefers narrower vectors here)"
    return dict(counts, widest=widest, label=label, cpu=cpu, avx512f=avx512)


#: LLVM CPU names with AVX-512F, for an empty NUMBA_CPU_FEATURES (their own features).
_AVX512_CPU_NAMES = {"skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client",
                     "icelake-server", "tigerlake", "sapphirerapids", "emeraldrapids", "graniterapids",
                     "rocketlake", "znver4", "znver5", "x86-64-v4", "knl", "knm"}


def microkernel_target():
    """``(vector bytes, vector registers)`` that fastconv's generated micro-kernels target, or
    None where this version of fastconv has no ``fastconv.kernels.cpu.microkernel.target``."""
    try:
        from fastconv.kernels.cpu import microkernel
        return tuple(microkernel.target())
    except (ImportError, AttributeError):
        return None


def openblas_kernel():
    """``"openblas 0.3.x, kernel SkylakeX"`` for each BLAS threadpoolctl finds (or "unknown")."""
    from threadpoolctl import threadpool_info
    found = [f"{i.get('internal_api')} {i.get('version')}, kernel {i.get('architecture')}"
             for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(found) or "unknown (threadpoolctl found no BLAS)"


_ONEDNN_CHILD = r"""
import torch
x = torch.randn(2, 32, 14, 14)
w = torch.randn(64, 32, 3, 3)
torch.nn.functional.conv2d(x, w, padding=1)
print("aten_capability:" + torch.backends.cpu.get_cpu_capability())
"""


def onednn_isa(env=None, timeout=60):
    """``(ISA, convolution implementation, ATen capability)`` in a fresh process with ``env``.

    oneDNN says which ISA it dispatches to and which implementation ran a small conv (e.g.
    "jit:avx512_core") only in its verbose log, and reads ``ONEDNN_VERBOSE`` when it loads, so a
    child process runs one conv with it set. Each part is "?" when not found; None without PyTorch.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    env = dict(os.environ if env is None else env, ONEDNN_VERBOSE="1")
    try:
        out = subprocess.run([sys.executable, "-c", _ONEDNN_CHILD], env=env, capture_output=True,
                             text=True, timeout=timeout).stdout
    except (OSError, subprocess.SubprocessError):
        return "?", "?", "?"
    isa = re.search(r"info,cpu,isa:([^\n]*)", out)
    conv = re.search(r"exec,cpu,convolution,([^,]*),", out)
    cap = re.search(r"aten_capability:(\S+)", out)
    return tuple(m.group(1).strip() if m else "?" for m in (isa, conv, cap))


def describe():
    """Markdown list items: what Numba, OpenBLAS and PyTorch ran in this process's configuration."""
    probe = numba_vector_width()
    features = os.environ.get("NUMBA_CPU_FEATURES")
    features = "unset (the host's)" if features is None else repr(features)
    lines = [f"- Numba emits: {probe['label']} (axpy loop: {probe['zmm']} zmm, {probe['ymm']} ymm "
             f"references; target CPU {probe['cpu']}, NUMBA_CPU_FEATURES {features})",
             f"- OpenBLAS: {openblas_kernel()}"]
    micro = microkernel_target()
    if micro is not None:
        lines.insert(1, f"- fastconv micro-kernels: {micro[0] * 8}-bit vectors ({micro[0] // 4} float32 lanes), "
                        f"{micro[1]} vector registers (fastconv.kernels.cpu.microkernel.target())")
    dnn = onednn_isa()
    if dnn is not None:
        lines.append(f"- PyTorch: oneDNN ISA {dnn[0]}, conv implementation {dnn[1]}; ATen capability {dnn[2]}")
    return lines


if __name__ == "__main__":
    json.dump(numba_vector_width(), sys.stdout)
    print()
