"""What this machine is and has: the processor and library versions, and the memory free for a new job."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path

import torch


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """Processor, cores, torch threads, GPU and library versions: for model cards and benchmark records."""
    import transformers

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def available_memory_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory a new job can still use on device: CUDA's free count; on the CPU, MemAvailable or, inside a
    container with a memory limit (a Space), what is left under that limit if less; None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    candidates = [value for value in (_mem_available(), _container_room()) if value is not None]
    if not candidates and hasattr(os, "sysconf"):
        with contextlib.suppress(OSError, ValueError):
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(candidates) if candidates else None


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _read_number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _container_room() -> int | None:
    """The container's memory limit less its working set (usage without reclaimable file cache), cgroup v2
    or v1; None without a limit. /proc/meminfo shows the host's memory, not the container's."""
    root = Path("/sys/fs/cgroup")
    for limit_file, usage_file, stat_file, inactive in (
        ("memory.max", "memory.current", "memory.stat", "inactive_file"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "memory/memory.stat", "total_inactive_file"),
    ):
        limit, usage = _read_number(root / limit_file), _read_number(root / usage_file)
        if limit is None or usage is None or limit >= 2**60:  # "max", or v1's stand-in for no limit
            continue
        cache = 0
        try:
            for line in (root / stat_file).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == inactive and value.strip().isdigit():
                    cache = int(value)
        except OSError:
            pass
        return max(limit - (usage - cache), 0)
    return None


_speed: dict[str, float] = {}


def matmul_flops_per_second(device: torch.device | str = "cpu") -> float:
    """Floating-point operations per second of a float32 matrix product the size of a transformer layer's
    feed-forward block, on torch's current threads; measured once per device (a few milliseconds)."""
    device = torch.device(device)
    key = f"{device}/{torch.get_num_threads()}"
    if key not in _speed:
        a = torch.randn(1024, 768, device=device)
        b = torch.randn(768, 3072, device=device)
        torch.matmul(a, b)  # warm-up: thread pool and kernels
        best = float("inf")
        for _ in range(5):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            torch.matmul(a, b)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
        _speed[key] = 2 * 1024 * 768 * 3072 / max(best, 1e-9)
    return _speed[key]


# torch's threads when this module was first imported: what every pass returns to (torch.get_num_threads() reads
# a process-wide value that the last set_num_threads on any thread wrote, not the calling thread's own).
_DEFAULT_THREADS = torch.get_num_threads()


def torch_threads() -> int:
    """torch's intra-op threads as the process started with them (one per core unless OMP_NUM_THREADS says)."""
    return _DEFAULT_THREADS


@contextlib.contextmanager
def pass_threads(count: int | None):
    """Run the body with count intra-op threads on this thread (None: leave torch's setting alone).

    torch's OpenMP and MKL thread counts are per calling thread, so two passes on two threads can each have their own;
    afterwards this thread returns to torch_threads(). Set even when count is the default: a thread takes its first
    count from the process-wide value, which another pass may have lowered at that moment."""
    if count is None:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(_DEFAULT_THREADS)
