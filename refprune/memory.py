"""Arrays refused before they are allocated: the bytes an array needs, known from shapes
alone, against the memory available.

A ``MemoryError`` raised by NumPy deep inside a computation names neither the argument
that made the array large nor what would fit; worse, with memory overcommitted the
allocation can succeed and the process be killed later.  Every allocation whose size
refprune can know in advance is therefore checked here first (the list is in
``docs/conventions.md`` §10) and refused with an :class:`ArrayTooLargeError` that names the
function, the array, the GiB it needs and the GiB available (and the exact bytes of both
when the GiB alone would read the same).

The module imports nothing from refprune, so every part of the package can use it.
"""

import math
import os


class ArrayTooLargeError(MemoryError):
    """An array whose size is known in advance would not fit in the memory available."""


class CurvatureTooLargeError(ArrayTooLargeError):
    """An ``n x n`` matrix (or blocks of one) would not fit in the memory available."""


#: allocations up to this many bytes are not checked: reading ``/proc/meminfo`` would cost
#: more than the allocation, and every machine refprune runs on has this much free
ALWAYS_FITS = 2**24


def available_memory():
    """Bytes of memory available to this process (Linux ``MemAvailable``; elsewhere the
    available physical pages; ``2**63`` if neither can be read)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**63


def nbytes(shape, itemsize=8):
    """Bytes of an array of ``shape`` (Python integers: no int64 overflow for absurd shapes)."""
    return math.prod(int(s) for s in shape) * int(itemsize)


def describe(shape):
    """``"a x b x c"`` for a message."""
    return " x ".join(str(int(s)) for s in shape)


def check_fits(need, where, what, hint="", error=ArrayTooLargeError, limit=None):
    """Refuse (``error``, an :class:`ArrayTooLargeError`) ``need`` bytes for ``what``
    when they exceed the memory available; ``where`` names the function.  ``where`` and
    ``what`` may be functions returning the text, called only for a refusal (the check
    runs in every layer's pass, where formatting a message each time would cost more
    than the check).  ``limit=(bytes, name)`` replaces the memory available by a
    caller's own limit (e.g. ``(max_bytes, "max_bytes")``), checked at any size."""
    if limit is None:
        if need <= ALWAYS_FITS:
            return
        allowed, said = available_memory(), "are available"
    else:
        allowed, said = limit[0], f"may be used ({limit[1]})"
    if need > allowed:
        where, what = (s() if callable(s) else s for s in (where, what))
        need_text, allowed_text = amounts(need, max(allowed, 0))
        raise error(f"{where}: {what} would need {need_text} but only {allowed_text} {said}{hint}")


def amounts(need, allowed):
    """The two sizes of a refusal, in GiB with two decimals; when those read the same
    ("0.00 GiB but only 0.00 GiB" for ``max_bytes=100``), each with its exact bytes too,
    so that the message still says by how much the limit is short."""
    texts = [f"{b / 2**30:.2f} GiB" for b in (need, allowed)]
    if texts[0] == texts[1]:
        texts = [f"{t} ({int(b):,} byte{'' if b == 1 else 's'})" for t, b in zip(texts, (need, allowed))]
    return texts
