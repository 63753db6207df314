"""Threads for the host-side work that runs in C without the GIL (BLAS products, Numba kernels
compiled ``nogil``): how many, and one shared pool.

BLAS is held to one thread in ``photometry run`` (its idle threads spin and take the cores the
FFTs and Numba kernels need), so a large product is split into independent parts that this pool
runs side by side, each on a one-thread BLAS; the parts' results are added in a fixed order, so
the result does not depend on which thread finished first. Only calls that release the GIL
gain: NumPy's ``matmul`` does; SciPy's f2py BLAS wrappers (``scipy.linalg.blas.dsyrk``) do not
(the design rows' rank updates split this way took as long as on one thread), and a complex
``matmul`` with a thin inner dimension (a kernel's spectrum) is bound by writing its output.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numba


def workers() -> int:
    """The cores this process may use, and no more than Numba's pool (``NUMBA_NUM_THREADS``,
    which ``photometry run -p N`` sets per worker)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return max(1, min(cores, numba.get_num_threads()))


@lru_cache(maxsize=4)
def pool(n: int) -> ThreadPoolExecutor:
    """A pool of ``n`` threads, made once per process."""
    return ThreadPoolExecutor(max_workers=n, thread_name_prefix="dia")
