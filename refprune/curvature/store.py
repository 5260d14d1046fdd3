"""What a block store keeps of an exact curvature matrix (``docs/derivations.md`` §11), and
the reader of a finished result.

A task computation writes each block of rows ``out[a:b, o:]`` and its mirror image
below the diagonal ``out[end:, a:b]`` (``o``, ``end``: the first and one past the last
column of the block's layer).  The store (a Zarr array's ``attrs["refprune"]``, or
``<file>.refprune.json`` beside a ``numpy.memmap``) records, for every block of the
computation, its row ranges, ``o`` and ``end``, and a SHA-256 of the bytes of the rows
and of the mirror once they are written and read back; ``complete`` becomes true only
when every block is recorded.  So:

* a restart skips a block only if the store still holds both recorded digests (a block
  whose rows or mirror were overwritten since is computed again);
* :func:`load_matrix` verifies a result without the model: the blocks must tile the
  matrix, every one must be recorded and hold its bytes, and the record must say
  ``complete``.  A record that is not valid JSON, or has other keys, is refused.
"""

import contextlib
import hashlib
import json
import mmap as _mmap
import os
import re
import uuid

import numpy as np

from .. import user_warnings

FORMAT = "refprune block record"
VERSION = 2
_KEYS = ("format", "version", "matrix", "n", "fingerprint", "complete", "blocks")
_BLOCK_KEYS = ("rows", "column_start", "layer_end", "digest", "mirror_digest")
_HEX = re.compile(r"[0-9a-f]{64}")


class IncompleteResultError(ValueError):
    """A stored matrix that cannot be trusted: blocks missing or damaged, not marked
    complete, or a record that is missing or damaged."""


class StaleBlockError(RuntimeError):
    """A worker was to add its shard to a block whose rows in the store are not the sum
    of the earlier shards that the driver saw completed (``docs/derivations.md`` §11.1):
    a task run a second time after a lost worker, a write torn by a worker's death, or a
    store changed meanwhile.  Nothing was written; the driver computes the block again
    from its first shard."""


def is_array_store(out):
    """A chunked array store (a Zarr array, or anything with ``shape``, ``dtype``,
    ``attrs`` and item assignment) rather than a NumPy array."""
    return all(hasattr(out, a) for a in ("shape", "dtype", "attrs", "__setitem__"))


def check_store(out, n, where):
    """Refuse a store of the wrong shape or dtype, naming both."""
    shape, dtype = tuple(getattr(out, "shape", ())), np.dtype(getattr(out, "dtype", None) or "O")
    if shape != (n, n) or dtype != np.float64:
        raise ValueError(f"{where}: out must be a float64 store of shape ({n}, {n}), got shape {shape} and dtype "
                         f"{dtype}")
    if getattr(out, "read_only", False) is True:
        raise ValueError(f"{where}: out is a read-only {type(out).__name__} (opened with mode 'r'); open it with "
                         "mode 'r+' or 'a' to write the matrix into it")
    return out


def fingerprint(*parts):
    """SHA-256 over the arrays and values that define a computation."""
    h = hashlib.sha256()
    for p in parts:
        a = np.ascontiguousarray(p) if isinstance(p, np.ndarray) else np.frombuffer(repr(p).encode(), np.uint8)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def digest(a):
    """SHA-256 of an array's bytes in C order (``None`` for ``None``: no mirror)."""
    # the buffer of a C-ordered array is hashed in place (``tobytes`` would copy it once more)
    return None if a is None else hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()


def read_rows(out, o, rows, lock=None):
    """The rows of a block as the store holds them, ``(rows, n - o)`` (with ``lock``, a
    :class:`_ChunkLocks`, each chunk is read under its lock)."""
    n = out.shape[1]
    return np.concatenate([_get(out, a, b, o, n, lock) for a, b in rows])


def read_mirror(out, end, rows, lock=None):
    """The mirror of a block as the store holds it, transposed back to ``(rows, n - end)``
    (``None`` for the last layer, which has none)."""
    n = out.shape[0]
    if end >= n:
        return None
    return np.concatenate([_get(out, end, n, a, b, lock) for a, b in rows], axis=1).T


def _get(out, r0, r1, c0, c1, lock):
    """``out[r0:r1, c0:c1]``.  With ``lock``, for a sharded Zarr array, one band of chunk rows
    at a time under the locks of its chunks: such an array reads a shard's index and then
    its chunks in separate reads, which a writer replacing the shard in between would
    tear.  (An unsharded chunk is one file, read at once and replaced whole by a rename.)"""
    if lock is None or not lock.sharded:
        return np.asarray(out[r0:r1, c0:c1])
    res = np.empty((r1 - r0, c1 - c0))
    for a, b, held in _bands(r0, r1, c0, c1, lock):
        with held:
            res[a - r0 : b - r0] = out[a:b, c0:c1]
    return res


def _bands(r0, r1, c0, c1, lock):
    """The rows ``[a, b)`` of ``[r0, r1)`` in each band of chunk rows, with a context that
    holds the locks of the band's chunks met by the columns ``[c0, c1)``, taken in
    increasing order (every process takes them in this order and holds those of one band
    at a time, so no two wait on each other)."""
    cr, cc = lock.unit
    for i in range(r0 // cr, -(-r1 // cr)):
        yield max(r0, i * cr), min(r1, (i + 1) * cr), _Held(lock, i, range(c0 // cc, -(-c1 // cc)))


class _Held:
    """Holds the locks ``(i, j)`` for ``j`` in ``columns`` (in increasing order) while open."""

    def __init__(self, lock, i, columns):
        self.lock, self.i, self.columns, self.stack = lock, i, columns, None

    def __enter__(self):
        self.stack = contextlib.ExitStack()
        with self.stack as stack:
            for j in self.columns:
                stack.enter_context(self.lock(self.i, j))
            self.stack = stack.pop_all()
        return self

    def __exit__(self, *exc):
        self.stack.close()
        return False


def describe(key, rows):
    """``"layer 2 (rows 16:31)"``: a block as messages name it."""
    return f"{key} (rows " + ", ".join(f"{a}:{b}" for a, b in rows) + ")"


def _listing(items, limit=8):
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def parse_record(raw, label, where, n=None):
    """The record ``raw`` (JSON text, or the object a Zarr ``attrs`` holds) checked key by
    key; any defect raises :class:`IncompleteResultError` naming ``label``."""
    bad = f"{where}: the record {label}"
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except ValueError as err:
            where_in = f" at line {err.lineno} column {err.colno}" if hasattr(err, "lineno") else ""
            raise IncompleteResultError(f"{bad} is not valid JSON ({getattr(err, 'msg', err)}{where_in}); it is not "
                                        "trusted") from None
    if not isinstance(raw, dict):
        raise IncompleteResultError(f"{bad} is not a {FORMAT} (a JSON object with the keys {', '.join(_KEYS)}), "
                                    f"got {type(raw).__name__}")
    if set(raw) == {"fingerprint", "done"}:
        raise IncompleteResultError(f"{bad} is of version 1, which did not record the mirrored blocks; it is not "
                                    "trusted: compute the matrix again")
    if set(raw) != set(_KEYS):
        missing = [k for k in _KEYS if k not in raw]
        extra = sorted(str(k) for k in raw if k not in _KEYS)
        raise IncompleteResultError(f"{bad} is not a {FORMAT}: " + "; ".join(
            ([f"it lacks the keys {', '.join(missing)}"] if missing else [])
            + ([f"it has unknown keys {', '.join(extra)}"] if extra else [])))
    if raw["format"] != FORMAT or raw["version"] != VERSION:
        raise IncompleteResultError(f"{bad} is format {raw['format']!r} version {raw['version']!r}; this refprune "
                                    f"reads {FORMAT!r} version {VERSION}")

    def fail(what):
        raise IncompleteResultError(f"{bad} is damaged: {what}")

    size = raw["n"]
    if not (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
        fail(f"n must be a positive int, got {size!r}")
    if n is not None and size != n:
        fail(f"it is for a {size} x {size} matrix, the store holds {n} x {n}")
    if not isinstance(raw["matrix"], str):
        fail(f"matrix must be a name, got {raw['matrix']!r}")
    if not (isinstance(raw["fingerprint"], str) and _HEX.fullmatch(raw["fingerprint"])):
        fail("fingerprint must be 64 hexadecimal digits")
    if not isinstance(raw["complete"], bool):
        fail(f"complete must be true or false, got {raw['complete']!r}")
    blocks = raw["blocks"]
    if not isinstance(blocks, dict) or not blocks:
        fail("blocks must be a non-empty object")
    layout, digests = {}, {}

    def index(v):
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= size

    for key, b in blocks.items():
        if not isinstance(b, dict) or set(b) != set(_BLOCK_KEYS):
            fail(f"block {key!r} must have exactly the keys {', '.join(_BLOCK_KEYS)}")
        o, end, rows = b["column_start"], b["layer_end"], b["rows"]
        if not (index(o) and index(end) and o < end):
            fail(f"block {key!r}: column_start and layer_end must satisfy 0 <= column_start < layer_end <= {size}")
        if not (isinstance(rows, list) and rows and all(
                isinstance(r, list) and len(r) == 2 and index(r[0]) and index(r[1]) and o <= r[0] < r[1] <= end
                for r in rows)):
            fail(f"block {key!r}: rows must be [start, stop] pairs within [{o}, {end})")
        for d in ("digest", "mirror_digest"):
            if not (b[d] is None or (isinstance(b[d], str) and _HEX.fullmatch(b[d]))):
                fail(f"block {key!r}: {d} must be null or 64 hexadecimal digits")
        if b["digest"] is not None and (b["mirror_digest"] is None) != (end == size):
            fail(f"block {key!r}: a mirror digest belongs to every block but the last layer's")
        layout[key] = (o, end, [tuple(r) for r in rows])
        digests[key] = None if b["digest"] is None else (b["digest"], b["mirror_digest"])
    _check_tiling(layout, size, fail)
    return dict(matrix=raw["matrix"], n=size, fingerprint=raw["fingerprint"], complete=raw["complete"],
                layout=layout, digests=digests)


def _check_tiling(layout, n, fail):
    """The blocks tile the matrix: the layers ``[o, end)`` follow each other from 0 to ``n``
    and the rows of each layer's blocks cover it once.  Then the rows ``[a, b) x [o, n)``
    and the mirrors ``[end, n) x [a, b)`` cover every entry exactly once."""
    layers = {}
    for o, end, rows in layout.values():
        layers.setdefault((o, end), []).extend(rows)
    at = 0
    for o, end in sorted(layers):
        if o != at:
            fail(f"the layers do not follow each other: one starts at column {o}, expected {at}")
        covered = o
        for a, b in sorted(layers[(o, end)]):
            if a != covered:
                fail(f"the blocks of the layer at columns {o}:{end} do not cover its rows once (at row {covered})")
            covered = b
        if covered != end:
            fail(f"the blocks of the layer at columns {o}:{end} stop at row {covered}")
        at = end
    if at != n:
        fail(f"the blocks stop at row {at} of {n}")


class BlockRecord:
    """Which blocks of a computation a store holds, with a digest of each block's rows and
    of its mirror.

    Kept in the store's ``attrs["refprune"]`` (Zarr) or beside a ``numpy.memmap`` in
    ``<file>.refprune.json``; a plain array keeps none.  A block counts as done only if
    the store still holds the bytes recorded for it, rows and mirror (a store overwritten
    since is recomputed), and only for the same computation (``fp``).  A record that
    cannot be read is not trusted: every block is computed again (with a warning).
    """

    def __init__(self, out, fp, name, layout):
        self.out, self.fp, self.name, self.layout = out, fp, name, layout
        memmap_file = isinstance(out, np.memmap) and out.filename
        self.path = (os.fspath(out.filename) + ".refprune.json") if memmap_file else None
        self.persistent = self.path is not None or is_array_store(out)
        self.label = self.path if self.path is not None else f"the {type(out).__name__}'s attrs['refprune']"
        self.done = {}
        saved = self._load() if self.persistent else None
        if saved is not None and saved["fingerprint"] != fp:
            # a restart with other data, parameters, loss, block_rows or shards: nothing
            # recorded can be reused, and the caller may have expected otherwise
            user_warnings.warn(f"{name}: the record in {self.label} is for another computation (other model, "
                               "parameters, data, loss, Monte Carlo targets, block_rows or shards); every block is "
                               "computed again", RuntimeWarning)
        elif saved is not None:
            for key, d in saved["digests"].items():
                if d is not None and saved["layout"].get(key) == self._geometry(key):
                    self.done[key] = d

    def _geometry(self, key):
        o, end, rows = self.layout.get(key, (None, None, []))
        return o, end, [tuple(r) for r in rows]

    def _load(self):
        if self.path is not None:
            if not os.path.exists(self.path):
                return None
            with open(self.path, "rb") as fh:
                raw = fh.read()
        else:
            raw = dict(self.out.attrs).get("refprune")
            if raw is None:
                return None
        try:
            return parse_record(raw, self.label, self.name, n=self.out.shape[0])
        except IncompleteResultError as err:
            user_warnings.warn(f"{err}; every block is computed again", RuntimeWarning)
            return None

    def _save(self, complete):
        if not self.persistent:
            return
        blocks = {}
        for key, (o, end, rows) in self.layout.items():
            d, m = self.done.get(key, (None, None))
            blocks[key] = {"rows": [[int(a), int(b)] for a, b in rows], "column_start": int(o),
                           "layer_end": int(end), "digest": d, "mirror_digest": m}
        rec = {"format": FORMAT, "version": VERSION, "matrix": self.name, "n": int(self.out.shape[0]),
               "fingerprint": self.fp, "complete": bool(complete), "blocks": blocks}
        if self.path is not None:
            self.out.flush()  # the bytes reach the file before the record says so
            # written whole, then renamed over the record (atomic within one directory).  The
            # temporary has a short name of its own: neither a long record name nor anything
            # already at "<record>.tmp" stops it or is overwritten; "x" mode gives it the
            # permissions of any new file.
            tmp = os.path.join(os.path.dirname(os.path.abspath(self.path)), f".refprune-{uuid.uuid4().hex}.tmp")
            fh = open(tmp, "x")
            try:
                with fh:
                    json.dump(rec, fh)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        else:
            self.out.attrs["refprune"] = rec

    def is_done(self, key):
        """True if block ``key`` was recorded and the store still holds its rows and its
        mirror; a block that fails is forgotten."""
        d = self.done.get(key)
        if d is None:
            return False
        o, end, rows = self.layout[key]
        if (digest(read_rows(self.out, o, rows)), digest(read_mirror(self.out, end, rows))) == d:
            return True
        del self.done[key]
        return False

    def begin(self, keep=True):
        """Before anything is written: the record is not complete and holds only the blocks
        verified so far (none with ``keep=False``)."""
        if not keep:
            self.done.clear()
        self._save(complete=False)

    def mark(self, key, block):
        """Record block ``key`` as written with rows ``block``, after reading the rows and the
        mirror back from the store."""
        o, end, rows = self.layout[key]
        want = digest(block), digest(None if end >= self.out.shape[0] else block[:, end - o :])
        got = self._read(key)
        if got != want:
            raise ValueError(f"{self.name}: the store did not keep the bytes written to {describe(key, rows)} "
                             f"({self.label})")
        self.done[key] = got
        self._save(complete=False)

    def mark_written(self, key, digests, verify, lock):
        """Record block ``key`` as written by a worker, which read its rows and mirror back
        and sent their ``digests``; with ``verify`` the driver reads them back too (a store
        that the workers see but the driver does not, e.g. a path on another machine's
        disk, is caught at the first block instead of by :func:`load_matrix` at the end;
        ``lock``: the store's chunk locks, since workers may be writing other blocks)."""
        o, end, rows = self.layout[key]
        digests = tuple(digests)
        if verify and self._read(key, lock) != digests:
            raise ValueError(f"{self.name}: the block {describe(key, rows)} that a worker wrote is not in the store "
                             f"as the driver reads it ({self.label}): do the workers write the same file or "
                             "directory as this process?")
        self.done[key] = digests
        self._save(complete=False)

    def mark_from_store(self):
        """Record every block as the store holds it (after a computation that wrote the
        whole matrix in one pass)."""
        for key in self.layout:
            self.done[key] = self._read(key)

    def _read(self, key, lock=None):
        o, end, rows = self.layout[key]
        return block_digests(self.out, o, end, rows, lock)

    def finish(self):
        """Mark the record complete if every block is recorded; returns whether it is."""
        complete = set(self.done) == set(self.layout)
        self._save(complete=complete)
        return complete


def load_matrix(source):
    """A curvature matrix written by a block store, after checking that it is complete.

    Parameters
    ----------
    source : path or store
        An ``.npy`` file (its record is ``<file>.refprune.json``), a Zarr store's
        directory, a ``numpy.memmap`` of such a file, or a Zarr array.

    Returns the matrix (a read-only ``numpy.memmap`` for a file, the Zarr array for a
    store) only if its record is intact and says ``complete``, and every block's rows and
    mirror hold the bytes recorded for them; the model is not needed.  Otherwise
    :class:`IncompleteResultError` names what is wrong (the blocks missing or damaged, a
    record that is missing, not valid JSON or not a record).
    """
    where = "load_matrix"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            try:
                import zarr
            except ImportError:
                raise ImportError(f"{where}: {path} is a directory (a Zarr store?); reading it needs zarr: pip "
                                  "install zarr") from None
            try:
                arr = zarr.open_array(store=path, mode="r")
            except Exception as err:  # zarr raises several types for a directory that is not an array
                raise IncompleteResultError(f"{where}: {path} is not a Zarr array ({type(err).__name__}: {err})") \
                    from None
            raw, label = dict(arr.attrs).get("refprune"), f"of {path} (attrs['refprune'])"
        elif os.path.isfile(path):
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError as err:
                raise IncompleteResultError(f"{where}: {path} is not an .npy file ({err})") from None
            raw, label = _read_text(path + ".refprune.json"), path + ".refprune.json"
        else:
            raise FileNotFoundError(f"{where}: no file or Zarr store at {path!r}")
    elif isinstance(source, np.memmap) and source.filename:
        arr, label = source, os.fspath(source.filename) + ".refprune.json"
        raw = _read_text(label)
    elif is_array_store(source):
        arr, label = source, f"of the {type(source).__name__} (attrs['refprune'])"
        raw = dict(source.attrs).get("refprune")
    else:
        raise TypeError(f"{where}: source must be a path to an .npy file or a Zarr store, a numpy.memmap of a file "
                        f"or a Zarr array, got {type(source).__name__}")
    # every branch above has an array: a loaded one, or one that is_array_store found to
    # have a shape and a dtype
    shape, dtype = tuple(arr.shape), np.dtype(arr.dtype)
    if len(shape) != 2 or shape[0] != shape[1] or dtype != np.float64:
        raise IncompleteResultError(f"{where}: the stored array must be a square float64 matrix, got shape {shape} "
                                    f"and dtype {dtype}")
    if raw is None:
        raise IncompleteResultError(f"{where}: there is no record {label}: the matrix was not written by a refprune "
                                    "block store, or its writing was stopped before it began; it cannot be verified")
    rec = parse_record(raw, label, where, n=shape[0])
    missing, damaged = [], []
    for key, (o, end, rows) in rec["layout"].items():
        d = rec["digests"][key]
        if d is None:
            missing.append(describe(key, rows))
        elif (digest(read_rows(arr, o, rows)), digest(read_mirror(arr, end, rows))) != d:
            damaged.append(describe(key, rows))
    if missing or damaged:
        what = "; ".join(([f"blocks missing: {_listing(missing)}"] if missing else [])
                         + ([f"blocks damaged (bytes or mirror differ from the record): {_listing(damaged)}"]
                            if damaged else []))
        raise IncompleteResultError(f"{where}: the {rec['matrix']} matrix recorded in {label} is incomplete: {what}; "
                                    "run the same computation again with this store as out= to compute them")
    if not rec["complete"]:
        raise IncompleteResultError(f"{where}: the record {label} does not mark the result complete (the run "
                                    "stopped before its end); call the computation again with this out= to finish it")
    return arr


def _read_text(path):
    if not os.path.exists(path):
        return None
    with open(path, "rb") as fh:
        return fh.read()


# ---- blocks written by the workers themselves (docs/derivations.md §11.1) -------------


def write_block(out, o, end, rows, block, lock=None):
    """Write a block's rows ``out[a:b, o:]`` and their mirror ``out[end:, a:b]``.

    ``lock`` (``None``: write at once) is a :class:`_ChunkLocks`: the writes are then cut
    at the boundaries of the store's chunks and each piece is written while holding that
    chunk's lock, so that the read-modify-write of a chunk shared with another block
    written at the same time by another process cannot lose that block's entries."""
    n = out.shape[0]
    i = 0
    for a, b in rows:
        part = block[i : i + b - a]
        _put(out, a, o, part, lock)
        if end < n:
            _put(out, end, a, part[:, end - o :].T, lock)
        i += b - a


def _put(out, r0, c0, values, lock):
    r1, c1 = r0 + values.shape[0], c0 + values.shape[1]
    if lock is None:
        out[r0:r1, c0:c1] = values
        return
    for a, b, held in _bands(r0, r1, c0, c1, lock):
        with held:
            out[a:b, c0:c1] = values[a - r0 : b - r0]


def block_digests(out, o, end, rows, lock=None):
    """``(digest of the rows, digest of the mirror)`` as the store holds them."""
    return digest(read_rows(out, o, rows, lock)), digest(read_mirror(out, end, rows, lock))


class _ChunkLocks:
    """Exclusive locks on the chunks of one array, between processes and between threads.

    Chunk ``(i, j)`` of a grid with ``m`` chunk columns is byte ``i m + j`` of the lock file,
    locked with ``fcntl.lockf`` (POSIX record locks: the kernel releases them when the
    process dies, so a killed worker leaves no lock behind).  Record locks belong to a
    process, not to a thread, so a ``threading.Lock`` per chunk also excludes the threads
    of one process; and since closing any descriptor of the file releases all of the
    process's locks on it, each process keeps one descriptor per lock file, open for good
    (and the file is never removed: a worker still holding the old one and a new worker
    opening a new one at the same path would not exclude each other)."""

    _fds, _threads, _guard = {}, {}, None

    def __init__(self, path, unit, columns, sharded):
        self.path, self.unit, self.columns = path, tuple(int(u) for u in unit), int(columns)
        self.sharded = bool(sharded)

    @classmethod
    def _state(cls):
        import threading

        if cls._guard is None:
            cls._guard = threading.Lock()
        return cls._guard

    def __call__(self, i, j):
        import fcntl
        import threading

        index = i * self.columns + j
        with self._state():
            fd = self._fds.get(self.path)
            if fd is None:
                fd = self._fds[self.path] = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            tl = self._threads.setdefault((self.path, index), threading.Lock())

        @contextlib.contextmanager
        def held():
            with tl:
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, index)
                try:
                    yield
                finally:
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, index)

        return held()


def _forget_locks_after_fork():
    # a forked child owns none of its parent's record locks and must not reuse its thread locks
    _ChunkLocks._fds, _ChunkLocks._threads, _ChunkLocks._guard = {}, {}, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_after_fork)


class BlockWriter:
    """What a worker needs to write its own blocks into the store ``out`` and check them:
    the file of a ``numpy.memmap`` (reopened by name, mode ``r+``) or the Zarr array on a
    local directory with the lock file of its chunks.  Pickled to the workers; the
    driver then receives only each block's two digests (and, with several shards, one
    digest for each shard before the last)."""

    def __init__(self, out, where):
        self.n, self.where = int(out.shape[0]), where
        if isinstance(out, np.memmap):
            if not isinstance(out.base, _mmap.mmap) or not out.flags.c_contiguous:
                raise ValueError(f"{where}: out is a view of a numpy.memmap of {os.fspath(out.filename)}, which "
                                 "workers cannot reopen by its file name; pass the numpy.memmap of the whole "
                                 "matrix (numpy.lib.format.open_memmap(path, mode='w+', ...) or numpy.load(path, "
                                 "mmap_mode='r+'))")
            if out.mode == "c":
                raise ValueError(f"{where}: out is a copy-on-write numpy.memmap (mode 'c') of "
                                 f"{os.fspath(out.filename)}: what it holds never reaches the file, which the "
                                 "workers write; open it with mode 'r+'")
            self.file, self.offset, self.array, self.lock = os.fspath(out.filename), int(out.offset), None, None
        else:
            self.file, self.offset, self.array = None, 0, out
            unit = chunk_unit(out)
            self.lock = _ChunkLocks(zarr_lock_path(out), unit, -(-self.n // unit[1]),
                                    sharded=getattr(out, "shards", None) is not None)

    def open(self):
        """The store as this process sees it (a memmap of the file is opened afresh)."""
        if self.file is None:
            return self.array
        return np.memmap(self.file, dtype=np.float64, mode="r+", offset=self.offset, shape=(self.n, self.n))

    def write(self, o, end, rows, block, final=True, after=None):
        """Write ``block`` (rows and mirror), read both back and return their digests, or
        raise if the store did not keep what was written.

        Several shards of samples (``docs/derivations.md`` §11.1): ``after`` (``None``: the
        first shard, which assigns) is the digest of the rows that the earlier shards left
        in the store; they are read, checked against it (else :class:`StaleBlockError`,
        writing nothing) and ``block`` is added to them, in the driver's order
        ``earlier + this``.  A shard that is not ``final`` writes only the rows, flushes
        them and returns their digest (a string) for the next shard to check; the
        ``final`` one writes the rows and the mirror and returns both digests as above."""
        out = self.open()
        if after is not None:
            held = read_rows(out, o, rows, self.lock)
            if digest(held) != after:
                raise StaleBlockError(f"{self.where}: rows {', '.join(f'{a}:{b}' for a, b in rows)} (columns from "
                                      f"{o}) of {self.label} do not hold the sum of the earlier shards that this "
                                      "shard adds to (a task run twice after a lost worker, a torn write, or the "
                                      "store changed meanwhile)")
            # the same operands in the same order as the driver's sum in shard order
            # (``parallel._sum_in_order``), into ``block``'s memory so that ``held`` can go
            np.add(held, block, out=block)
            del held
        if not final:
            # only the rows: the mirror is written once, by the last shard (``end = n``
            # writes no mirror, as for the last layer)
            write_block(out, o, self.n, rows, block, self.lock)
            if self.file is not None:
                out.flush()  # a worker on another machine reads the file, not this page cache
            return digest(block)
        write_block(out, o, end, rows, block, self.lock)
        if self.file is not None:
            out.flush()  # on disk before the driver records the block
        got = block_digests(out, o, end, rows, self.lock)
        want = digest(block), digest(None if end >= self.n else block[:, end - o :])
        if got != want:
            raise ValueError(f"{self.where}: the store did not keep the bytes written to rows "
                             f"{', '.join(f'{a}:{b}' for a, b in rows)} (columns from {o}) in {self.label}")
        return got

    @property
    def label(self):
        """The store as messages name it: the file, or the Zarr array's directory."""
        return self.file or self.lock.path[: -len(".refprune.lock")]


def chunk_unit(out):
    """The unit a Zarr array reads and rewrites whole: its shards if it has any, else its
    chunks."""
    return tuple(getattr(out, "shards", None) or out.chunks)


def zarr_lock_path(out):
    """The lock file of a Zarr array on a local directory: ``<array directory>.refprune.lock``
    beside the array (``None`` if the array is not on a local directory)."""
    store = getattr(out, "store", None)
    root = getattr(store, "root", None)
    if root is None or not isinstance(root, (str, os.PathLike)) or not os.path.isdir(os.fspath(root)):
        return None
    path = os.path.join(os.fspath(root), getattr(out, "path", "") or "")
    return os.path.normpath(path) + ".refprune.lock"


def workers_can_write(out):
    """True if worker processes can write ``out`` themselves: a ``numpy.memmap`` of a file
    or a Zarr array on a local directory.  An array in the driver's memory (a NumPy array,
    a Zarr array in memory or on a remote store) is written by the driver."""
    if isinstance(out, np.memmap):
        return bool(out.filename)
    return is_array_store(out) and hasattr(out, "chunks") and zarr_lock_path(out) is not None \
        and _has_fcntl()


def _has_fcntl():
    try:
        import fcntl  # noqa: F401
    except ImportError:  # not on Windows: the driver writes
        return False
    return True
