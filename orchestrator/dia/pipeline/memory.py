"""How a photometry run's process gets its pages: kept when freed, and no huge-page stalls.

A whole-frame pair allocates and frees image-sized arrays (135 MB at 4088^2) a few dozen times.
Two things made the kernel's page handling, not the arithmetic, a third of a pair's wall time
on the 2-CPU machine of ``benchmarks/`` (a virtual machine):

- glibc serves each array over 32 MB with a fresh ``mmap`` and returns it with ``munmap`` when
  it is freed, so every one of them is page-faulted in and zeroed again. With
  ``M_MMAP_MAX = 0`` the arrays come from the heap, and with a high ``M_TRIM_THRESHOLD`` the
  heap keeps what is freed, so later arrays reuse pages that are already mapped
  (:func:`keep_freed_memory`).
- NumPy advises the kernel to back every array of 4 MB or more with 2 MB pages
  (``madvise(MADV_HUGEPAGE)``). Where transparent huge pages are ``madvise`` and their defrag
  ``madvise`` (Debian's default, and this machine's), a fault in such an array compacts memory
  on the spot to find a free 2 MB page: 2-4.5 s more system time on one fresh whole pair here
  (the table below), as much as the faults themselves. :func:`no_huge_page_advice` turns the
  advice off.

One whole 4088^2 pair in a fresh process (``benchmarks/photometry_stages.py``, three runs of
each, interleaved; figures in ``benchmarks/README.md``; "subtract" is the subtraction alone):

    the libraries' defaults          13.8-16.3 s, subtract 8.2-8.9 s, system time 5.8-8.4 s
    no huge-page advice              12.1-12.4 s, subtract 7.1-7.3 s, system time 3.9-4.0 s
    memory kept, huge-page advice    12.7-13.1 s, subtract 7.0-7.2 s, system time 4.5-4.6 s
    both (what photometry run does)  10.1-10.3 s, subtract 5.6-5.7 s, system time 1.0-1.1 s

The price is the peak: the heap cannot always fit a large array into the holes freed arrays
left (+0.2 GB for one pair, +0.35 GB after a few), and without huge pages a pair that reuses
kept memory runs ~0.7 s slower than with them (8.9 against 8.2 s: the TLB covers less), which a
process would win back only after six or more pairs. Both are process-wide and never undone,
so only a process that exists for the run asks for them (``photometry run``:
:func:`orchestrator.dia.pipeline.runner.run_pairs` with ``keep_memory``, its own loop and its
pool workers), never a library caller that goes on with other work, and the daemon never does.
``ORCH_DIA_KEEP_MEMORY=0`` keeps both defaults; a ``NUMPY_MADVISE_HUGEPAGE`` in the environment
is the user's choice and is left as set. A no-op where the C library has no ``mallopt`` (musl,
macOS) or NumPy no switch.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_MAX = -4
ENV = "ORCH_DIA_KEEP_MEMORY"
NUMPY_ENV = "NUMPY_MADVISE_HUGEPAGE"  # read by NumPy at import


def _enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def keep_freed_memory() -> bool:
    """Serve large arrays from the heap and keep freed memory in the process (see the module
    docstring); True when the C library took both settings."""
    if not _enabled() or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; the threshold is an int: 2 GiB - 1 is the most it takes
    return bool(mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1)


def no_huge_page_advice() -> bool:
    """Stop NumPy advising huge pages for its large arrays (see the module docstring); True
    when the advice is off afterwards. Left alone where the user set ``NUMPY_MADVISE_HUGEPAGE``."""
    if not _enabled() or NUMPY_ENV in os.environ:
        return False
    import numpy as np

    # documented in NumPy's 1.20 release notes as the way to turn the advice off at run time
    multiarray = getattr(np, "_core", None) or getattr(np, "core", None)
    switch = getattr(getattr(multiarray, "multiarray", None), "_set_madvise_hugepage", None)
    if switch is None:
        return False
    switch(False)
    return True


def tune_for_run() -> bool:
    """Both of the above, for a process that exists for a photometry run; True when the freed
    memory is kept."""
    no_huge_page_advice()
    return keep_freed_memory()
