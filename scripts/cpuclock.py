"""The clock the CPU's cores run at, measured rather than read.

/proc/cpuinfo's `cpu MHz` is what the kernel was told; on a VM it is usually the nominal clock, not the
boost clock the cores run at under load (on the development machine 2.60 GHz, while its bf16 matmul ran
at 1.2-1.3x the peak that clock allows). So `make bench` measures it: a chain of dependent 64-bit
integer additions (`add rax, rdx`) takes exactly one cycle each on every x86-64 core of the last decade
(a latency of 1 in Agner Fog's instruction tables,
https://www.agner.org/optimize/instruction_tables.pdf, for AMD Zen 1-5 and Intel since Sandy Bridge; renamers
eliminate moves and zeroing idioms, not register-register adds), so additions / seconds is the clock. It runs on
`threads` threads at once, as the matmul does, because a core's boost clock falls as more cores are
busy.

What it measures is the scalar clock: where wide vector work lowers the clock (Intel's AVX-512
licences; AMD's Zen 4 and 5 do not), the hardware peak computed from it is an upper bound.

The chain is a dozen lines of machine code (`program`), mapped executable with `mmap` and called through
ctypes (which releases the GIL, so the threads run in parallel). x86-64 Linux only (the System V calling
convention: the count arrives in rdi); elsewhere, or where the kernel refuses executable memory,
`measure_mhz` returns None and the bench falls back to /proc/cpuinfo.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import sys
import threading
import time
from collections.abc import Callable

ADDS = 400  # dependent additions per loop iteration: the loop's own dec/jnz run beside them, hidden

# the x86-64 encoding of each instruction (Intel SDM vol. 2)
MOV_EDX_1 = b"\xba\x01\x00\x00\x00"  # mov edx, 1
XOR_EAX_EAX = b"\x31\xc0"  # xor eax, eax
ADD_RAX_RDX = b"\x48\x01\xd0"  # add rax, rdx: 1 cycle, and the next one waits for it
DEC_RDI = b"\x48\xff\xcf"  # dec rdi (the iteration count, the first argument)
JNZ_REL32 = b"\x0f\x85"  # jnz rel32: back to the first add while rdi != 0
RET = b"\xc3"

Chain = Callable[[int], int]


def program(adds: int = ADDS) -> bytes:
    """fn(iterations) -> iterations x adds, computed one dependent addition at a time."""
    body = ADD_RAX_RDX * adds + DEC_RDI
    back = -(len(body) + len(JNZ_REL32) + 4)  # relative to the end of the jnz, to the loop's first add
    return MOV_EDX_1 + XOR_EAX_EAX + body + JNZ_REL32 + back.to_bytes(4, "little", signed=True) + RET


def supported() -> bool:
    return sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


def load(code: bytes) -> Chain | None:
    """The machine code as a callable taking and returning a uint64, or None where it cannot run here."""
    if not supported():
        return None
    try:
        memory = mmap.mmap(-1, len(code), prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError):  # executable anonymous memory refused (SELinux execmem, PaX)
        return None
    memory.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    function = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(address)

    def call(iterations: int) -> int:
        if iterations < 1:  # dec would wrap 0 to 2**64 - 1: a loop for a century
            raise ValueError(f"iterations must be at least 1, not {iterations}")
        _ = memory  # the mapping lives as long as the callable
        return int(function(iterations))

    return call


def _window(chain: Chain, threads: int, iterations: int, adds: int, clock: Callable[[], float]) -> float:
    """Additions per second per thread (the clock in Hz), mean over `threads` threads run at once."""
    rates: list[float] = []
    start = threading.Barrier(threads)

    def run() -> None:
        start.wait()
        began = clock()
        chain(iterations)
        rates.append(iterations * adds / (clock() - began))

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(rates) / len(rates)


def measure_mhz(
    threads: int,
    *,
    windows: int = 5,
    window_seconds: float = 0.05,
    adds: int = ADDS,
    chain: Chain | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> float | None:
    """The cores' clock in MHz with `threads` of them busy: the best of `windows` windows of about
    `window_seconds` (descheduling on a VM can only make a window slower, never faster than the clock,
    so the best window is the closest). None where the chain cannot run here or computes a wrong sum."""
    chain = chain or load(program(adds))
    if chain is None or chain(3) != 3 * adds:
        return None
    probe = 1000
    began = clock()
    chain(probe)
    per_iteration = max(clock() - began, 1e-9) / probe
    iterations = max(probe, int(window_seconds / per_iteration))
    return max(_window(chain, threads, iterations, adds, clock) for _ in range(windows)) / 1e6
