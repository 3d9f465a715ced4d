"""What a run records about the machine: peak memory over a block, the device's name, the library versions."""
from __future__ import annotations

import contextlib
import platform
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
