"""Keep the memory the photometry frees for its next arrays (glibc's ``mallopt``).

A whole-frame pair allocates and frees image-sized arrays (135 MB at 4088^2) a few dozen times.
glibc serves each array over 32 MB with a fresh ``mmap`` and returns it with ``munmap`` when it
is freed, so every one of them is page-faulted in again and zeroed by the kernel: on the 2-CPU
machine of ``benchmarks/`` (a virtual machine, where a fresh page can cost the hypervisor too)
that system time was a third of a pair's wall time. With ``M_MMAP_MAX = 0`` the arrays come
from the heap, and with a high ``M_TRIM_THRESHOLD`` the heap keeps what is freed, so the next
pair's arrays reuse pages that are already mapped. One whole 4088^2 pair run three times in one
process (``benchmarks/photometry_stages.py --repeat 3``, figures in ``benchmarks/README.md``):

    glibc's defaults   14.5, 14.4, 14.5 s a pair (system time 5.2, 5.9, 5.4 s), peak 2.7 GB
    memory kept        15.6, 10.9, 10.9 s a pair (system time 5.6, 0.5, 0.1 s), peak 3.0-3.3 GB

(the subtraction alone 9.1, 6.7, 6.4 s with memory kept); later, with the lag sums on both
cores and a quiet machine, memory kept: 12.5-17.3, 9.6-9.8, 9.7-9.8 s, the subtraction 5.6-5.8 s
from the second pair, peak 2.9-3.1 GB. The first pair pays for every fresh
page either way (single pairs in fresh processes, 7-10 runs each over the session: 14.3-17.4 s
kept against 13.0-19.5 s with the defaults, no better on average), so only a process that will
run several pairs asks for this, and only one that exists for the run: ``photometry run``
(:func:`orchestrator.dia.pipeline.runner.run_pairs` with ``keep_memory``: its own loop, and pool
workers that get more than one pair), never a library caller that goes on with other work. The
price is the peak: the heap cannot always fit a large array into
the holes freed arrays left, so a worker's resident size settles ~0.6 GB above the default's
after two whole-frame pairs (cutout pairs, a few MB each, do not notice either way). Set
``ORCH_DIA_KEEP_MEMORY=0`` to keep glibc's defaults. The daemon never calls this. A no-op where
the C library has no ``mallopt`` (musl, macOS).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_MAX = -4
ENV = "ORCH_DIA_KEEP_MEMORY"


def keep_freed_memory() -> bool:
    """Serve large arrays from the heap and keep freed memory in the process (see the module
    docstring); True when the C library took both settings."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; the threshold is an int: 2 GiB - 1 is the most it takes
    return bool(mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1)
