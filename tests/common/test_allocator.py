"""retain_freed_memory: a freed large block is reused without page-faulting it back in."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

_PROBE = """
import ctypes, json, resource, sys
from services.common.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "tuned" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def faults_of_one_64mb_block():
    # What torch's CPU allocator does for a large activation: malloc, write, free.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 * 2**20)  # above glibc's largest mmap threshold (32 MiB)
    ctypes.memset(block, 1, 64 * 2**20)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one_64mb_block()  # the first one always faults its pages in
print(json.dumps({"applied": applied, "faults": faults_of_one_64mb_block()}))
"""


def _probe(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning is glibc's")
def test_a_reallocated_large_block_is_not_faulted_in_again() -> None:
    default, tuned = _probe("default"), _probe("tuned")
    pages = 64 * 2**20 // 4096
    assert default["faults"] > pages // 2  # glibc unmapped it: every page faults again
    assert tuned["applied"] is True
    assert tuned["faults"] < pages // 50
