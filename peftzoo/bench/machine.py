"""What a run records about the machine: peak memory over a block, the device's name, the library versions; and
whether this CPU computes bf16 natively (``bf16_cpu_warning``)."""
from __future__ import annotations

import contextlib
import platform
import warnings
from pathlib import Path

import torch


def peak_reset(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: resets the process's peak RSS
        except OSError:
            pass


def peak_mb(dev: torch.device) -> tuple[float | None, str]:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20, "cuda_max_allocated"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "process_peak_rss"
    except OSError:
        pass
    return None, "unavailable"


@contextlib.contextmanager
def peak_memory(dev: torch.device):
    """``with peak_memory(dev) as peak:`` the block's peak memory, then ``peak["mb"]`` and ``peak["kind"]`` (CUDA:
    the allocator's maximum; CPU: the process's peak RSS, reset first where Linux allows it)."""
    peak = {}
    peak_reset(dev)
    yield peak
    peak["mb"], peak["kind"] = peak_mb(dev)


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict:
    import transformers

    import peftzoo
    return {"peftzoo": peftzoo.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


# CPU flags (/proc/cpuinfo) of native bf16 arithmetic: x86 AVX512-BF16 and AMX-BF16, Arm's BF16 extension. Without
# one, torch's bf16 autocast on CPU emulates the arithmetic (converting to fp32 and back), far slower than fp32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
_warned: set[str] = set()  # the bf16 warning is given once per process (preflight, then every run would repeat it)


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The CPU's feature flags (``flags`` on x86, ``Features`` on Arm) from ``/proc/cpuinfo`` (or its text given
    as ``cpuinfo``); None where there is no such file (macOS, Windows)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def bf16_cpu_warning(flags: set[str] | None = None) -> str | None:
    """Why ``precision="bf16"`` is a bad idea on this CPU, or None (native bf16, or flags unknown).
    ``flags``: the CPU's flags (default: ``cpu_flags()``; tests inject them)."""
    flags = cpu_flags() if flags is None else flags
    if flags is None or flags & set(BF16_FLAGS):
        return None
    return (f"precision 'bf16' on a CPU without native bf16: /proc/cpuinfo lists none of the flags "
            f"{', '.join(BF16_FLAGS[:2])} (Arm: {BF16_FLAGS[2]}), so torch emulates bf16 arithmetic, far slower than "
            "fp32 here. Use precision 'fp32' (or 'auto', which is fp32 on a CPU), or a CPU or GPU with native bf16")


def warn_bf16_cpu(dev: torch.device | str, precision: str, flags: set[str] | None = None) -> str | None:
    """Warn (once per process) when ``precision`` asks bf16 on a CPU device lacking native bf16; returns the text."""
    if torch.device(dev).type != "cpu" or precision != "bf16":
        return None
    msg = bf16_cpu_warning(flags)
    if msg and msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return msg
