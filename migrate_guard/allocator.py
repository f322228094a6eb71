"""Process-wide memory allocator tuning for the command-line program (a library user keeps theirs)."""

from __future__ import annotations

import os

_TUNED = False


def keep_freed_memory() -> None:
    """Have glibc keep freed chunk-sized buffers for reuse instead of handing them back to the kernel.

    By default glibc unmaps a freed block above its mmap threshold at once and trims each heap's
    free top beyond a few MiB, so every chunk (4 MiB), compressed file and decompressed blob was
    mapped afresh and page-faulted in again: some 2,500 page faults per blob, about 40% of the CPU
    time of checking one. Blocks up to 16 MiB now come from the heaps, which keep up to 16 MiB free
    at their top, and there are at most two heaps (CPython's small objects do not use them). Peak
    memory is still bounded by the chunks held at once. Only on glibc, once per process, and not
    when the MALLOC_*_ environment variables already say otherwise."""
    global _TUNED
    if _TUNED:
        return
    _TUNED = True
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")):
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    mallopt(m_mmap_threshold, 16 << 20)
    mallopt(m_trim_threshold, 16 << 20)
    mallopt(m_arena_max, 2)
