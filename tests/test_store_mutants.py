"""``refprune.curvature.store`` against records written by hand from the documented format
(``docs/derivations.md`` §11: the keys, each block's rows, ``column_start``,
``layer_end`` and the SHA-256 of its rows and mirror), with the messages written out in
full; Zarr arrays are stood in for by small classes, so that these run under mutmut."""

import hashlib
import json
import os
import re

import numpy as np
import pytest

import refprune as rp
from refprune.curvature import store


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float64).tobytes()).hexdigest()


def record(n, blocks, complete=False, matrix="hessian", fingerprint="0" * 64):
    """A record as docs/derivations.md §11 describes it; ``blocks``: key -> (o, end, rows,
    digest, mirror_digest)."""
    return {"format": "refprune block record", "version": 2, "matrix": matrix, "n": n, "fingerprint": fingerprint,
            "complete": complete,
            "blocks": {k: {"rows": [list(r) for r in rows], "column_start": o, "layer_end": end, "digest": d,
                           "mirror_digest": m} for k, (o, end, rows, d, m) in blocks.items()}}


def memmap_with_record(tmp_path, n, rec, name="h.npy"):
    path = tmp_path / name
    out = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float64, shape=(n, n))
    out[:] = np.arange(n * n, dtype=np.float64).reshape(n, n)
    out.flush()
    (tmp_path / (name + ".refprune.json")).write_text(json.dumps(rec))
    return str(path)


@pytest.mark.parametrize("count", [1, 7, 8, 9, 10, 12])
def test_missing_blocks_are_listed_up_to_eight_then_counted(tmp_path, count):
    """One layer of ``count`` one-row blocks, none recorded: the message names the first
    eight in the record's order and counts the others."""
    n = count
    keys = [f"b{i}" for i in range(count)]
    rec = record(n, {k: (0, n, [(i, i + 1)], None, None) for i, k in enumerate(keys)})
    path = memmap_with_record(tmp_path, n, rec)
    shown = ", ".join(f"{k} (rows {i}:{i + 1})" for i, k in enumerate(keys[:8]))
    more = f" and {count - 8} more" if count > 8 else ""
    with pytest.raises(store.IncompleteResultError, match="^" + re.escape(
            f"load_matrix: the hessian matrix recorded in {path}.refprune.json is incomplete: blocks missing: "
            f"{shown}{more}; run the same computation again with this store as out= to compute them") + "$"):
        rp.load_matrix(path)


# ---- a Zarr array on a local directory, stood in for ---------------------------------


class LocalStore:
    def __init__(self, root):
        self.root = root


class FakeZarr:
    """What the store code reads of a ``zarr.Array``: ``shape``, ``dtype``, ``chunks``,
    ``shards``, ``attrs``, ``store.root``, ``path`` and item access."""

    def __init__(self, root, n, chunks, shards=None, path="h"):
        self.shape, self.dtype, self.chunks, self.shards = (n, n), np.dtype(np.float64), chunks, shards
        self.attrs, self.store, self.path = {}, LocalStore(root), path
        self.a = np.full((n, n), np.nan)

    def __setitem__(self, idx, values):
        self.a[idx] = values

    def __getitem__(self, idx):
        return self.a[idx].copy()


def test_a_local_zarr_array_gets_a_lock_file_beside_it(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    z = FakeZarr(str(root), 10, (4, 3))
    assert store.zarr_lock_path(z) == str(root / "h") + ".refprune.lock"
    z.path = "group/../h2"
    assert store.zarr_lock_path(z) == str(root / "h2") + ".refprune.lock"
    z.path = ""  # the array at the store's root
    assert store.zarr_lock_path(z) == str(root) + ".refprune.lock"
    z.path = None
    assert store.zarr_lock_path(z) == str(root) + ".refprune.lock"
    assert store.workers_can_write(z)
    assert store.chunk_unit(z) == (4, 3)
    z.shards = (8, 6)
    assert store.chunk_unit(z) == (8, 6)
    for root_of in (None, 3, str(tmp_path / "nowhere")):  # in memory, remote, or not a directory here
        z.store = LocalStore(root_of)
        assert store.zarr_lock_path(z) is None and not store.workers_can_write(z)
    z.store = None
    assert store.zarr_lock_path(z) is None and not store.workers_can_write(z)


def test_a_writer_of_a_zarr_array_locks_its_chunks(tmp_path):
    n = 10
    z = FakeZarr(str(tmp_path), n, (4, 3))
    w = store.BlockWriter(z, "hessian")
    assert (w.n, w.where, w.file, w.offset, w.array) == (n, "hessian", None, 0, z) and w.open() is z
    assert (w.lock.path, w.lock.unit, w.lock.columns, w.lock.sharded) == (str(tmp_path / "h.refprune.lock"),
                                                                          (4, 3), 4, False)
    z2 = FakeZarr(str(tmp_path), n, (2, 2), shards=(4, 6))
    w2 = store.BlockWriter(z2, "ggn")
    assert (w2.lock.unit, w2.lock.columns, w2.lock.sharded) == ((4, 6), 2, True)
    block = np.arange(3 * 8, dtype=np.float64).reshape(3, 8) + 0.5
    # rows 2:5 of a layer at columns 2:6: the rows from column 2 on, the mirror below row 6
    got = w2.write(2, 6, [(2, 5)], block)
    assert got == (sha(block), sha(block[:, 4:]))
    assert np.array_equal(z2.a[2:5, 2:], block) and np.array_equal(z2.a[6:, 2:5], block[:, 4:].T)
    assert np.isnan(z2.a[:2]).all() and np.isnan(z2.a[5:6]).all()
    last = np.ones((2, 4))
    assert w2.write(6, 10, [(6, 8)], last) == (sha(last), None)  # the last layer has no mirror


class Forgetful(FakeZarr):
    def __setitem__(self, idx, values):
        self.a[idx] = np.asarray(values) + 1.0


def test_a_writer_refuses_a_store_that_does_not_keep_the_bytes(tmp_path):
    z = Forgetful(str(tmp_path), 6, (3, 3))
    with pytest.raises(ValueError, match="^" + re.escape(
            f"ggn: the store did not keep the bytes written to rows 0:2, 3:4 (columns from 0) in {tmp_path / 'h'}")
            + "$"):
        store.BlockWriter(z, "ggn").write(0, 4, [(0, 2), (3, 4)], np.zeros((3, 6)))


@pytest.mark.parametrize("chunks, shards", [((5, 7), None), ((3, 4), (6, 8))])
def test_threads_write_a_stand_in_zarr_array_themselves(tmp_path, monkeypatch, chunks, shards):
    """Workers (threads here) write their blocks through the chunk locks; the result is
    the one-process matrix to rounding, verified by load_matrix, and a second call with
    the same store recomputes nothing."""
    import concurrent.futures as cf

    from refprune.curvature import parallel

    model = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 2))
    params = model.init(seed=1)
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    H = rp.hessian(model, params, X, y, rp.CrossEntropyLoss())
    z = FakeZarr(str(tmp_path), model.n_params, chunks, shards)
    with cf.ThreadPoolExecutor(2) as ex:
        rp.hessian(model, params, X, y, rp.CrossEntropyLoss(), out=z, executor=ex, block_rows=4)
        assert np.abs(z.a - H).max() <= 1e-12 * np.abs(H).max()
        assert rp.load_matrix(z) is z and z.attrs["refprune"]["complete"] is True
        submitted = []
        real = parallel.run
        monkeypatch.setattr(parallel, "run", lambda e, jobs, *a: (submitted.append(len(jobs)), real(e, jobs, *a))[1])
        rp.hessian(model, params, X, y, rp.CrossEntropyLoss(), out=z, executor=ex, block_rows=4)
    assert submitted == [0]


class Bare:
    """An array store with only what every Zarr version has: no ``shards``, no ``path``
    (the array at its store's root)."""

    def __init__(self, root, chunks):
        self.chunks, self.store, self.shape = chunks, LocalStore(root), (6, 6)


def test_arrays_without_shards_path_or_store(tmp_path):
    bare = Bare(str(tmp_path), (2, 5))
    assert store.chunk_unit(bare) == (2, 5)
    assert store.zarr_lock_path(bare) == str(tmp_path) + ".refprune.lock"
    w = store.BlockWriter(bare, "hessian")
    assert (w.lock.unit, w.lock.columns, w.lock.sharded) == ((2, 5), 2, False)
    del bare.store
    assert store.zarr_lock_path(bare) is None


class Watched(FakeZarr):
    """Asserts that every write, and every read of a sharded array, holds the locks (as
    far as this process's threads see them) of all the chunks that it meets."""

    def _check(self, idx):
        unit = self.shards or self.chunks
        columns = -(-self.shape[1] // unit[1])
        path = store.zarr_lock_path(self)
        rs, cs = idx
        for i in range(rs.start // unit[0], -(-rs.stop // unit[0])):
            for j in range(cs.start // unit[1], -(-cs.stop // unit[1])):
                held = store._ChunkLocks._threads.get((path, i * columns + j))
                assert held is not None and held.locked(), (idx, i, j)
        self.checked += 1

    def __setitem__(self, idx, values):
        self._check(idx)
        super().__setitem__(idx, values)

    def __getitem__(self, idx):
        if self.shards is not None:
            self._check(idx)
        return super().__getitem__(idx)


def test_a_writer_holds_the_chunk_locks_while_it_writes_and_reads_back(tmp_path):
    z = Watched(str(tmp_path), 10, (2, 2), shards=(4, 6))
    z.checked = 0
    block = np.arange(3 * 8, dtype=np.float64).reshape(3, 8)
    assert store.BlockWriter(z, "ggn").write(2, 6, [(2, 5)], block) == (sha(block), sha(block[:, 4:]))
    assert z.checked >= 4  # the rows and the mirror, written and read back


def test_a_block_of_several_row_ranges_is_named_with_all_of_them(tmp_path):
    """A block may hold several row ranges of its layer (docs/derivations.md §11: ``rows``
    is a list): a missing one is named with each range, comma-separated."""
    rec = record(3, {"b0": (0, 3, [(0, 1), (2, 3)], None, None), "b1": (0, 3, [(1, 2)], None, None)})
    path = memmap_with_record(tmp_path, 3, rec)
    with pytest.raises(store.IncompleteResultError, match="^" + re.escape(
            f"load_matrix: the hessian matrix recorded in {path}.refprune.json is incomplete: blocks missing: "
            "b0 (rows 0:1, 2:3), b1 (rows 1:2); run the same computation again with this store as out= to "
            "compute them") + "$"):
        rp.load_matrix(path)


def test_a_record_with_blocks_the_layout_no_longer_has(tmp_path):
    """A record of the same computation (same fingerprint) whose blocks were cut otherwise
    (e.g. by another version of the layout): a block whose key and geometry match is
    taken over, a key the layout does not have is ignored (computed again), not an error."""
    n = 4
    m = np.arange(n * n, dtype=np.float64).reshape(n, n)
    rec = record(n, {"a": (0, n, [(0, 2)], sha(m[0:2]), None), "old": (0, n, [(2, 4)], sha(m[2:4]), None)},
                 fingerprint="1" * 64)
    path = memmap_with_record(tmp_path, n, rec)
    out = np.load(path, mmap_mode="r+")
    layout = {"a": (0, n, [(0, 2)]), "new": (0, n, [(2, 4)])}
    kept = store.BlockRecord(out, "1" * 64, "hessian", layout)
    assert sorted(kept.done) == ["a"]
    assert kept.done["a"] == (sha(m[0:2]), None)


def test_a_record_file_that_is_not_text_is_not_valid_json(tmp_path):
    """A record file of bytes that are no text at all (0xff is in no UTF-8 sequence) is a
    damaged record: IncompleteResultError naming the file, for a path and for a memmap."""
    n = 2
    path = memmap_with_record(tmp_path, n, record(n, {"a": (0, n, [(0, n)], None, None)}))
    (tmp_path / "h.npy.refprune.json").write_bytes(b"{\"format\": \"\xff\"}")
    for source in (path, np.load(path, mmap_mode="r")):
        with pytest.raises(store.IncompleteResultError, match="^" + re.escape(
                f"load_matrix: the record {path}.refprune.json is not valid JSON (") + r".*\); it is not trusted$"):
            rp.load_matrix(source)


# ---- load_matrix: what it opens, and how -----------------------------------------------


def test_a_directory_without_zarr_installed_is_named(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr raises ImportError
    with pytest.raises(ImportError) as e:
        rp.load_matrix(str(tmp_path))
    assert str(e.value) == (f"load_matrix: {tmp_path} is a directory (a Zarr store?); reading it needs zarr: pip "
                            "install zarr")


def _fake_zarr_module(monkeypatch, open_array):
    import sys
    import types

    module = types.ModuleType("zarr")
    module.open_array = open_array
    monkeypatch.setitem(sys.modules, "zarr", module)


def test_a_zarr_directory_is_opened_read_only(tmp_path, monkeypatch):
    """A reader must not be able to change the result it verifies: Zarr's default mode
    ("a") would open the array for writing."""
    n = 2
    m = np.arange(n * n, dtype=np.float64).reshape(n, n)
    z = FakeZarr(str(tmp_path), n, (1, 1))
    z.a[:] = m
    z.attrs["refprune"] = json.dumps(record(n, {"b": (0, n, [(0, n)], sha(m), None)}, complete=True))
    calls = []
    _fake_zarr_module(monkeypatch, lambda **kw: (calls.append(kw), z)[1])
    assert rp.load_matrix(str(tmp_path)) is z
    assert calls == [{"store": str(tmp_path), "mode": "r"}]


def test_a_directory_that_is_not_a_zarr_array_is_named_with_the_reason(tmp_path, monkeypatch):
    def refuse(**kw):
        raise KeyError("no zarr.json")

    _fake_zarr_module(monkeypatch, refuse)
    with pytest.raises(store.IncompleteResultError) as e:
        rp.load_matrix(str(tmp_path))
    assert str(e.value) == f"load_matrix: {tmp_path} is not a Zarr array (KeyError: 'no zarr.json')"


def test_an_npy_file_is_returned_as_a_read_only_memmap(tmp_path):
    """Not read into memory (the matrix may not fit), and not writable through the result."""
    n = 3
    m = np.arange(n * n, dtype=np.float64).reshape(n, n)
    path = memmap_with_record(tmp_path, n, record(n, {"b": (0, n, [(0, n)], sha(m), None)}, complete=True))
    got = rp.load_matrix(path)
    assert isinstance(got, np.memmap) and not got.flags.writeable
    assert np.array_equal(got, m)


def test_a_stand_in_array_without_a_record_is_named_by_its_type(tmp_path):
    z = FakeZarr(str(tmp_path), 2, (1, 1))
    with pytest.raises(store.IncompleteResultError) as e:
        rp.load_matrix(z)
    assert str(e.value) == ("load_matrix: there is no record of the FakeZarr (attrs['refprune']): the matrix was not "
                            "written by a refprune block store, or its writing was stopped before it began; it "
                            "cannot be verified")


@pytest.mark.parametrize("shape", [(4,), (2, 3), (2, 2, 2)])
def test_a_stored_array_that_is_not_a_square_matrix_is_named(tmp_path, shape):
    path = tmp_path / "v.npy"
    np.save(path, np.zeros(shape))
    with pytest.raises(store.IncompleteResultError) as e:
        rp.load_matrix(str(path))
    assert str(e.value) == (f"load_matrix: the stored array must be a square float64 matrix, got shape {shape} and "
                            "dtype float64")


def _raises_exactly(error, text, call):
    with pytest.raises(error) as e:
        call()
    assert str(e.value) == text


def test_what_is_not_an_npy_file_is_named_and_never_unpickled(tmp_path):
    """A pickle is not an .npy file: refused, and never unpickled (unpickling runs code
    the file chooses; a list would then be taken for the array)."""
    import pickle

    text, pickled = tmp_path / "h.txt", tmp_path / "h.pkl"
    text.write_bytes(b"not an array")
    pickled.write_bytes(pickle.dumps([[1.0, 0.0], [0.0, 1.0]]))
    for path in (text, pickled):
        with pytest.raises(store.IncompleteResultError) as e:
            rp.load_matrix(str(path))
        assert re.fullmatch(re.escape(f"load_matrix: {path} is not an .npy file (") + r".+\)", str(e.value))
    assert "allow_pickle" in str(e.value)  # numpy's own reason: pickles are refused


def test_what_load_matrix_cannot_open_is_named_in_full(tmp_path):
    _raises_exactly(FileNotFoundError, f"load_matrix: no file or Zarr store at {str(tmp_path / 'h.npy')!r}",
                    lambda: rp.load_matrix(tmp_path / "h.npy"))
    for source, name in ((3, "int"), (np.eye(2), "ndarray"), (None, "NoneType")):
        _raises_exactly(TypeError, "load_matrix: source must be a path to an .npy file or a Zarr store, a numpy.memmap "
                                   f"of a file or a Zarr array, got {name}", lambda: rp.load_matrix(source))


def test_a_stored_matrix_of_another_dtype_is_named(tmp_path):
    path = tmp_path / "h.npy"
    np.save(path, np.eye(2, dtype=np.float32))
    (tmp_path / "h.npy.refprune.json").write_text(json.dumps(record(2, {"b": (0, 2, [(0, 2)], None, None)})))
    _raises_exactly(store.IncompleteResultError, "load_matrix: the stored array must be a square float64 matrix, got "
                                                 "shape (2, 2) and dtype float32", lambda: rp.load_matrix(str(path)))


def test_a_record_of_another_size_is_named(tmp_path):
    path = memmap_with_record(tmp_path, 2, record(3, {"b": (0, 3, [(0, 3)], None, None)}))
    _raises_exactly(store.IncompleteResultError, f"load_matrix: the record {path}.refprune.json is damaged: it is for "
                                                 "a 3 x 3 matrix, the store holds 2 x 2", lambda: rp.load_matrix(path))


@pytest.mark.parametrize("case", ["damaged", "missing and damaged", "mirror damaged", "not complete", "complete"])
def test_load_matrix_names_damaged_blocks_and_an_unfinished_record_in_full(tmp_path, case):
    """Three blocks of one-row ranges: b0 rows 0:1 and b1 rows 1:3 of the first layer
    (mirror below row 3), b2 rows 3:4 of the last.  The digests are those of the bytes
    written by ``memmap_with_record``, except where the case spoils one."""
    n = 4
    m = np.arange(n * n, dtype=np.float64).reshape(n, n)
    good = {"b0": (0, 3, [(0, 1)], sha(m[0:1]), sha(m[3:, 0:1].T)),
            "b1": (0, 3, [(1, 3)], sha(m[1:3]), sha(m[3:, 1:3].T)),
            "b2": (3, 4, [(3, 4)], sha(m[3:4, 3:]), None)}
    blocks, complete = dict(good), case != "not complete"
    if case == "damaged":
        blocks["b1"] = good["b1"][:3] + ("0" * 64, good["b1"][4])
    elif case == "missing and damaged":
        blocks["b0"] = good["b0"][:3] + (None, None)
        blocks["b2"] = good["b2"][:3] + ("0" * 64, None)
    elif case == "mirror damaged":
        blocks["b0"] = good["b0"][:4] + ("0" * 64,)
    path = memmap_with_record(tmp_path, n, record(n, blocks, complete=complete))
    head = f"load_matrix: the hessian matrix recorded in {path}.refprune.json is incomplete: "
    tail = "; run the same computation again with this store as out= to compute them"
    damaged = "blocks damaged (bytes or mirror differ from the record): "
    expected = {
        "damaged": head + damaged + "b1 (rows 1:3)" + tail,
        "missing and damaged": head + "blocks missing: b0 (rows 0:1); " + damaged + "b2 (rows 3:4)" + tail,
        "mirror damaged": head + damaged + "b0 (rows 0:1)" + tail,
        "not complete": f"load_matrix: the record {path}.refprune.json does not mark the result complete (the run "
                        "stopped before its end); call the computation again with this out= to finish it",
    }
    if case == "complete":
        assert np.array_equal(rp.load_matrix(path), m)
    else:
        _raises_exactly(store.IncompleteResultError, expected[case], lambda: rp.load_matrix(path))


# ---- the chunk locks ---------------------------------------------------------------------


def _descriptors_of(path):
    fds = "/proc/self/fd"
    if not os.path.isdir(fds):
        pytest.skip("needs /proc to list this process's descriptors")
    out = []
    for fd in os.listdir(fds):
        try:
            if os.readlink(os.path.join(fds, fd)) == path:
                out.append(fd)
        except OSError:  # the descriptor of the listing itself, closed meanwhile
            pass
    return out


def test_the_lock_file_is_opened_once_per_process_and_readable_by_all(tmp_path, monkeypatch):
    """One descriptor per lock file for good (_ChunkLocks' docstring): a descriptor per
    lock taken would run out of descriptors in a long run (and closing one would drop the
    others' locks).  The file is created rw-r--r--, as a data file is."""
    pytest.importorskip("fcntl")
    monkeypatch.setattr(store._ChunkLocks, "_fds", {})
    monkeypatch.setattr(store._ChunkLocks, "_threads", {})
    path = str(tmp_path / "h.refprune.lock")
    locks = store._ChunkLocks(path, (2, 2), 3, sharded=False)
    old = os.umask(0o022)
    try:
        for i, j in [(0, 0), (1, 2), (0, 0), (2, 1)]:
            with locks(i, j):
                pass
    finally:
        os.umask(old)
    assert len(_descriptors_of(path)) == 1
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_an_error_while_the_locks_are_held_propagates_and_releases_them(tmp_path, monkeypatch):
    pytest.importorskip("fcntl")
    monkeypatch.setattr(store._ChunkLocks, "_threads", {})
    path = str(tmp_path / "e.refprune.lock")
    locks = store._ChunkLocks(path, (2, 2), 3, sharded=False)
    with pytest.raises(KeyError, match="inside"):
        with store._Held(locks, 1, range(0, 3)):
            raise KeyError("inside")
    assert not any(store._ChunkLocks._threads[(path, 3 + j)].locked() for j in range(3))


def test_a_later_shard_reads_the_earlier_shards_rows_under_the_locks(tmp_path):
    """Of a sharded array, the rows the earlier shards left are read under the locks of
    their chunks too (a shard's index and its chunks are separate reads)."""
    z = Watched(str(tmp_path), 10, (2, 2), shards=(4, 6))
    z.checked = 0
    w = store.BlockWriter(z, "ggn")
    first = np.arange(3 * 8, dtype=np.float64).reshape(3, 8)
    after = w.write(2, 6, [(2, 5)], first.copy(), final=False)
    before = z.checked
    second = np.ones((3, 8))
    got = w.write(2, 6, [(2, 5)], second.copy(), final=True, after=after)
    assert got == (sha(first + 1.0), sha((first + 1.0)[:, 4:]))
    assert z.checked >= before + 3  # the earlier rows read, the rows and mirror written, then read back


def test_a_stale_block_is_refused_naming_its_rows_and_the_store(tmp_path):
    n = 4
    path = str(tmp_path / "s.npy")
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, n))
    w = store.BlockWriter(out, "hessian")
    w.write(0, n, [(0, 1), (2, 3)], np.ones((2, n)), final=False)
    with pytest.raises(store.StaleBlockError) as e:
        w.write(0, n, [(0, 1), (2, 3)], np.ones((2, n)), final=True, after="0" * 64)
    assert str(e.value) == (f"hessian: rows 0:1, 2:3 (columns from 0) of {path} do not hold the sum of the earlier "
                            "shards that this shard adds to (a task run twice after a lost worker, a torn write, or "
                            "the store changed meanwhile)")


def test_without_record_locks_the_driver_writes_a_zarr_array(tmp_path, monkeypatch):
    """Workers write a local Zarr array only where ``fcntl``'s record locks exist (not on
    Windows); a memmap needs none (a write changes only its own bytes, no chunk is
    read and rewritten)."""
    import sys

    pytest.importorskip("fcntl")
    z = FakeZarr(str(tmp_path), 4, (2, 2))
    assert store.workers_can_write(z)
    monkeypatch.setitem(sys.modules, "fcntl", None)
    assert not store.workers_can_write(z)
    out = np.lib.format.open_memmap(str(tmp_path / "m.npy"), mode="w+", dtype=np.float64, shape=(4, 4))
    assert store.workers_can_write(out)


# ---- parse_record: every defect of a record named in full ---------------------------

_D = ["a" * 64, "b" * 64, "c" * 64, "d" * 64]


def _good():
    """Two layers of a 4 x 4 matrix: columns 0:2 in blocks of one row each (with mirrors),
    columns 2:4 in one block (the last layer: no mirror), b1 not written yet."""
    return record(4, {"b0": (0, 2, [(0, 1)], _D[0], _D[1]), "b1": (0, 2, [(1, 2)], None, None),
                      "b2": (2, 4, [(2, 4)], _D[2], None)}, matrix="ggn", fingerprint="f" * 64)


def _edit(change):
    def make():
        r = _good()
        change(r)
        return r
    return make


def _block(key, **fields):
    return _edit(lambda r: r["blocks"][key].update(fields))


_ALL_KEYS = "format, version, matrix, n, fingerprint, complete, blocks"
_RECORD_DEFECTS = {
    "JSON syntax": (lambda: "{not json", "is not valid JSON (Expecting property name enclosed in double quotes at "
                                         "line 1 column 2); it is not trusted"),
    "bytes not UTF-8": (lambda: b"\xff{}", "is not valid JSON ('utf-8' codec can't decode byte 0xff in position 0: "
                                           "invalid start byte); it is not trusted"),
    "a list": (lambda: [_good()], f"is not a refprune block record (a JSON object with the keys {_ALL_KEYS}), got list"),
    "JSON text of a number": (lambda: "3", f"is not a refprune block record (a JSON object with the keys {_ALL_KEYS}), "
                                           "got int"),
    "version 1": (lambda: {"fingerprint": "0", "done": {}}, "is of version 1, which did not record the mirrored "
                                                             "blocks; it is not trusted: compute the matrix again"),
    "two keys missing": (_edit(lambda r: [r.pop("n"), r.pop("format")]), "is not a refprune block record: it lacks "
                                                                          "the keys format, n"),
    "unknown keys": (_edit(lambda r: r.update({"zeta": 1, 7: 2})), "is not a refprune block record: it has unknown "
                                                                    "keys 7, zeta"),
    "missing and unknown": (_edit(lambda r: [r.pop("blocks"), r.update(extra=0)]), "is not a refprune block record: "
                            "it lacks the keys blocks; it has unknown keys extra"),
    "another format": (_edit(lambda r: r.update(format="x")), "is format 'x' version 2; this refprune reads "
                                                              "'refprune block record' version 2"),
    "another version": (_edit(lambda r: r.update(version="3")), "is format 'refprune block record' version '3'; this "
                                                                "refprune reads 'refprune block record' version 2"),
    "n text": (_edit(lambda r: r.update(n="4")), "is damaged: n must be a positive int, got '4'"),
    "n bool": (_edit(lambda r: r.update(n=True)), "is damaged: n must be a positive int, got True"),
    "n zero": (_edit(lambda r: r.update(n=0)), "is damaged: n must be a positive int, got 0"),
    "matrix not a name": (_edit(lambda r: r.update(matrix=3)), "is damaged: matrix must be a name, got 3"),
    "fingerprint short": (_edit(lambda r: r.update(fingerprint="f" * 63)), "is damaged: fingerprint must be 64 "
                                                                           "hexadecimal digits"),
    "fingerprint upper case": (_edit(lambda r: r.update(fingerprint="F" * 64)), "is damaged: fingerprint must be 64 "
                                                                                "hexadecimal digits"),
    "fingerprint a number": (_edit(lambda r: r.update(fingerprint=5)), "is damaged: fingerprint must be 64 "
                                                                       "hexadecimal digits"),
    "complete 1": (_edit(lambda r: r.update(complete=1)), "is damaged: complete must be true or false, got 1"),
    "blocks empty": (_edit(lambda r: r.update(blocks={})), "is damaged: blocks must be a non-empty object"),
    "blocks a list": (_edit(lambda r: r.update(blocks=[1])), "is damaged: blocks must be a non-empty object"),
}
_BLOCK_KEYS_TEXT = "must have exactly the keys rows, column_start, layer_end, digest, mirror_digest"
_COLUMNS = "column_start and layer_end must satisfy 0 <= column_start < layer_end <= 4"
_BLOCK_DEFECTS = {
    "a block not an object": (_edit(lambda r: r["blocks"].update(b1=[0, 2])), f"block 'b1' {_BLOCK_KEYS_TEXT}"),
    "a block with an extra key": (_block("b1", size=1), f"block 'b1' {_BLOCK_KEYS_TEXT}"),
    "a block without a key": (_edit(lambda r: r["blocks"]["b2"].pop("digest")), f"block 'b2' {_BLOCK_KEYS_TEXT}"),
    "start = end": (_block("b2", column_start=4), f"block 'b2': {_COLUMNS}"),
    "start negative": (_block("b0", column_start=-1), f"block 'b0': {_COLUMNS}"),
    "end past n": (_block("b2", layer_end=5), f"block 'b2': {_COLUMNS}"),
    "end a bool": (_block("b0", layer_end=True), f"block 'b0': {_COLUMNS}"),
    "start text": (_block("b0", column_start="0"), f"block 'b0': {_COLUMNS}"),
    "rows empty": (_block("b1", rows=[]), "block 'b1': rows must be [start, stop] pairs within [0, 2)"),
    "rows a pair, not a list of pairs": (_block("b1", rows=[1, 2]), "block 'b1': rows must be [start, stop] pairs "
                                                                    "within [0, 2)"),
    "rows of three": (_block("b1", rows=[[1, 2, 3]]), "block 'b1': rows must be [start, stop] pairs within [0, 2)"),
    "rows of one": (_block("b1", rows=[[1]]), "block 'b1': rows must be [start, stop] pairs within [0, 2)"),
    "rows before the layer": (_block("b2", rows=[[1, 4]]), "block 'b2': rows must be [start, stop] pairs within "
                                                           "[2, 4)"),
    "rows past the layer": (_block("b1", rows=[[1, 3]]), "block 'b1': rows must be [start, stop] pairs within [0, 2)"),
    "rows empty range": (_block("b1", rows=[[1, 1]]), "block 'b1': rows must be [start, stop] pairs within [0, 2)"),
    "rows as text": (_block("b1", rows="1:2"), "block 'b1': rows must be [start, stop] pairs within [0, 2)"),
    "rows with a bool": (_block("b0", rows=[[False, 1]]), "block 'b0': rows must be [start, stop] pairs within "
                                                          "[0, 2)"),
    "second rows pair bad": (_block("b0", rows=[[0, 1], [1, 9]]), "block 'b0': rows must be [start, stop] pairs "
                                                                  "within [0, 2)"),
    "digest short": (_block("b0", digest="a" * 63), "block 'b0': digest must be null or 64 hexadecimal digits"),
    "mirror digest a number": (_block("b0", mirror_digest=1), "block 'b0': mirror_digest must be null or 64 "
                                                              "hexadecimal digits"),
    "mirror digest missing": (_block("b0", mirror_digest=None), "block 'b0': a mirror digest belongs to every block "
                                                                "but the last layer's"),
    "mirror digest on the last layer": (_block("b2", mirror_digest=_D[3]), "block 'b2': a mirror digest belongs to "
                                                                           "every block but the last layer's"),
    "layers with a gap": (_edit(lambda r: r["blocks"].update(b2=dict(r["blocks"]["b2"], column_start=3, rows=[[3, 4]]))),
                          "the layers do not follow each other: one starts at column 3, expected 2"),
    "a layer's rows overlap": (_block("b1", rows=[[0, 2]]), "the blocks of the layer at columns 0:2 do not cover its "
                                                            "rows once (at row 1)"),
    "a layer's rows stop short": (_edit(lambda r: r["blocks"].pop("b1")), "the blocks of the layer at columns 0:2 "
                                                                          "stop at row 1"),
    "the last layer is missing": (_edit(lambda r: r["blocks"].pop("b2")), "the blocks stop at row 2 of 4"),
    "the first layer starts late": (_edit(lambda r: [r["blocks"].pop("b0"), r["blocks"].pop("b1")]),
                                    "the layers do not follow each other: one starts at column 2, expected 0"),
}


@pytest.mark.parametrize("case", list(_RECORD_DEFECTS) + list(_BLOCK_DEFECTS))
def test_parse_record_names_every_defect_in_full(case):
    make, text = {**_RECORD_DEFECTS, **_BLOCK_DEFECTS}[case]
    where = "is damaged: " if case in _BLOCK_DEFECTS else ""
    _raises_exactly(store.IncompleteResultError, f"test: the record R {where}{text}",
                    lambda: store.parse_record(make(), "R", "test"))


def test_parse_record_of_another_size_and_a_good_record():
    text = json.dumps(_good())
    _raises_exactly(store.IncompleteResultError, "test: the record R is damaged: it is for a 4 x 4 matrix, the store "
                    "holds 5 x 5", lambda: store.parse_record(text, "R", "test", n=5))
    want = dict(matrix="ggn", n=4, fingerprint="f" * 64, complete=False,
                layout={"b0": (0, 2, [(0, 1)]), "b1": (0, 2, [(1, 2)]), "b2": (2, 4, [(2, 4)])},
                digests={"b0": (_D[0], _D[1]), "b1": None, "b2": (_D[2], None)})
    for raw in (text, text.encode(), _good()):  # a record file's text or bytes, or a Zarr array's attributes
        assert store.parse_record(raw, "R", "test", n=4) == want
        assert store.parse_record(raw, "R", "test") == want


# ---- the rest of the store's contract, each part against a hand-made case -------------


def test_a_read_only_store_is_refused_naming_its_type():
    z = FakeZarr("unused", 3, (2, 2))
    assert store.check_store(z, 3, "ggn") is z  # no read_only attribute: writable
    z.read_only = False
    assert store.check_store(z, 3, "ggn") is z
    z.read_only = True
    _raises_exactly(ValueError, "ggn: out is a read-only FakeZarr (opened with mode 'r'); open it with mode 'r+' or "
                    "'a' to write the matrix into it", lambda: store.check_store(z, 3, "ggn"))


def test_the_fingerprint_hashes_each_part_s_dtype_shape_and_bytes():
    a = np.arange(4.0).reshape(2, 2)
    text = repr(("ggn", 3)).encode()
    want = hashlib.sha256(b"float64(2, 2)" + a.tobytes() + f"uint8({len(text)},)".encode() + text).hexdigest()
    assert store.fingerprint(a, ("ggn", 3)) == want
    # the same bytes as another dtype or shape are another computation
    zeros = np.zeros(2)
    assert len({store.fingerprint(zeros), store.fingerprint(zeros.astype(np.int64)),
                store.fingerprint(zeros.reshape(1, 2))}) == 3


class _Unit:
    """What ``_bands`` reads of a :class:`store._ChunkLocks`: its chunk shape."""
    unit = (2, 3)


def test_bands_take_the_locks_of_the_chunks_the_columns_meet_only():
    # rows 1:6 and columns 4:8 of chunks of 2 x 3: chunk rows 0, 1, 2 and chunk columns 1, 2
    got = [(a, b, held.i, list(held.columns)) for a, b, held in store._bands(1, 6, 4, 8, _Unit())]
    assert got == [(1, 2, 0, [1, 2]), (2, 4, 1, [1, 2]), (4, 6, 2, [1, 2])]
    assert [list(h.columns) for _, _, h in store._bands(0, 2, 3, 6, _Unit())] == [[1]]


def test_write_block_writes_each_row_range_and_its_mirror():
    # a layer at columns 1:5 of a 7 x 7 matrix, three row ranges of unequal length
    out = np.zeros((7, 7))
    block = np.arange(4 * 6, dtype=np.float64).reshape(4, 6) + 1.0  # rows 1, 2, 3 and 4 of columns 1:7
    store.write_block(out, 1, 5, [(1, 2), (2, 4), (4, 5)], block)
    want = np.zeros((7, 7))
    for k, row in enumerate((1, 2, 3, 4)):
        want[row, 1:] = block[k]
        want[5:, row] = block[k, 4:]  # the mirror below the layer
    assert np.array_equal(out, want)
    last = np.zeros((7, 7))
    store.write_block(last, 5, 7, [(5, 7)], np.ones((2, 2)))
    assert last.sum() == 4 and (last[5:, 5:] == 1).all()  # the last layer has no mirror


def _small_hessian():
    model = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 2))
    params = model.init(0)
    X = np.random.default_rng(1).normal(size=(5, 3))
    y = np.array([0, 1, 1, 0, 1])
    return (model, params, X, y, rp.CrossEntropyLoss()), sum(p.size for p in params)


def _warned_by_this_line(call):
    """The RuntimeWarnings of ``call`` as (message, file, line), and its result."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return [(str(w.message), w.filename, w.lineno) for w in caught if w.category is RuntimeWarning], result


def _user_line(call):
    """The line inside ``call`` (a function whose body is one ``return``) that calls refprune."""
    return __file__, call.__code__.co_firstlineno + 1


@pytest.mark.parametrize("damage", ["bytes", "size"])
def test_a_restart_names_an_untrusted_record_file_at_the_caller_s_line(tmp_path, damage, package_frames):
    args, n = _small_hessian()
    H = rp.hessian(*args)
    path = tmp_path / "h.npy"
    out = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float64, shape=(n, n))
    rp.hessian(*args, out=out)
    rec = tmp_path / "h.npy.refprune.json"
    if damage == "bytes":
        rec.write_bytes(b"\xff")
        why = "is not valid JSON ('utf-8' codec can't decode byte 0xff in position 0: invalid start byte); it is not trusted"
    else:
        r = json.loads(rec.read_text())
        r["n"] = n + 1
        rec.write_text(json.dumps(r))
        why = f"is damaged: it is for a {n + 1} x {n + 1} matrix, the store holds {n} x {n}"
    out[:] = 0.0

    def call():
        return rp.hessian(*args, out=out)
    got, result = _warned_by_this_line(call)
    assert got == [(f"hessian: the record {rec} {why}; every block is computed again", *_user_line(call))]
    assert np.array_equal(result, H)


def test_a_restart_names_a_stand_in_array_s_record_by_its_type(tmp_path, package_frames):
    args, n = _small_hessian()
    z = FakeZarr(str(tmp_path), n, (8, 8))
    rp.hessian(*args, out=z)
    fp = z.attrs["refprune"]["fingerprint"]
    z.attrs["refprune"] = {"x": 1}

    def damaged():
        return rp.hessian(*args, out=z)
    got, _ = _warned_by_this_line(damaged)
    assert got == [("hessian: the record the FakeZarr's attrs['refprune'] is not a refprune block record: it lacks "
                    f"the keys {_ALL_KEYS}; it has unknown keys x; every block is computed again", *_user_line(damaged))]
    assert z.attrs["refprune"]["fingerprint"] == fp and z.attrs["refprune"]["complete"] is True

    def other():
        return rp.ggn(*args, out=z)
    got, _ = _warned_by_this_line(other)
    assert got == [("ggn: the record in the FakeZarr's attrs['refprune'] is for another computation (other model, "
                    "parameters, data, loss, Monte Carlo targets, block_rows or shards); every block is computed "
                    "again", *_user_line(other))]


def test_the_driver_refuses_a_store_that_does_not_keep_a_block(tmp_path):
    z = Forgetful(str(tmp_path), 4, (2, 2))
    rec = store.BlockRecord(z, "e" * 64, "ggn", {"b0": (0, 2, [(0, 1)]), "b1": (0, 2, [(1, 2)]),
                                                  "b2": (2, 4, [(2, 4)])})
    block = np.ones((1, 4))
    store.write_block(z, 0, 2, [(1, 2)], block)
    _raises_exactly(ValueError, "ggn: the store did not keep the bytes written to b1 (rows 1:2) (the Forgetful's "
                    "attrs['refprune'])", lambda: rec.mark("b1", block))


def test_the_record_is_complete_only_when_finished(tmp_path):
    out = np.lib.format.open_memmap(str(tmp_path / "h.npy"), mode="w+", dtype=np.float64, shape=(4, 4))
    layout = {"b0": (0, 2, [(0, 2)]), "b1": (2, 4, [(2, 4)])}
    rec = store.BlockRecord(out, "e" * 64, "ggn", layout)

    def saved():
        return json.loads((tmp_path / "h.npy.refprune.json").read_text())
    rec.begin()
    assert saved()["complete"] is False
    out[:] = np.arange(16.0).reshape(4, 4)
    rec.mark_written("b0", store.block_digests(out, 0, 2, [(0, 2)]), verify=True, lock=None)
    assert saved()["complete"] is False and saved()["blocks"]["b0"]["digest"] == sha(out[0:2, 0:])
    rec.mark("b1", np.array(out[2:4, 2:]))
    assert saved()["complete"] is False and saved()["blocks"]["b1"]["digest"] == sha(out[2:4, 2:])
    assert rec.finish() is True and saved()["complete"] is True


def test_a_record_verifies_what_it_keeps_and_forgets_on_request(tmp_path):
    out = np.lib.format.open_memmap(str(tmp_path / "h.npy"), mode="w+", dtype=np.float64, shape=(4, 4))
    out[:] = np.arange(16.0).reshape(4, 4)
    layout = {"b0": (0, 2, [(0, 2)]), "b1": (2, 4, [(2, 4)])}
    rec = store.BlockRecord(out, "e" * 64, "ggn", layout)
    label = f"{tmp_path / 'h.npy'}.refprune.json"
    _raises_exactly(ValueError, f"ggn: the block b1 (rows 2:4) that a worker wrote is not in the store as the driver "
                    f"reads it ({label}): do the workers write the same file or directory as this process?",
                    lambda: rec.mark_written("b1", ("0" * 64, None), verify=True, lock=None))
    rec.mark_from_store()
    assert rec.is_done("b0") and rec.is_done("b1")
    out[3, 1] = -1.0  # in b0's mirror (rows 2:4 of columns 0:2)
    assert not rec.is_done("b0") and "b0" not in rec.done and rec.is_done("b1")
    rec.mark_from_store()
    rec.begin()  # keeps the verified blocks
    assert [b["digest"] is not None for b in json.loads(open(label).read())["blocks"].values()] == [True, True]
    rec.begin(keep=False)
    assert rec.done == {} and [b["digest"] for b in json.loads(open(label).read())["blocks"].values()] == [None, None]


def test_a_writer_refuses_a_memmap_its_workers_cannot_reopen_in_full(tmp_path):
    path = tmp_path / "h.npy"
    out = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float64, shape=(4, 4))
    view = ("hessian: out is a view of a numpy.memmap of {}, which workers cannot reopen by its file name; pass the "
            "numpy.memmap of the whole matrix (numpy.lib.format.open_memmap(path, mode='w+', ...) or numpy.load(path, "
            "mmap_mode='r+'))").format(path)
    # rows 1:3 are contiguous but not the file's whole map; columns 0:2 are neither
    for part in (out[1:3], out[:, :2]):
        _raises_exactly(ValueError, view, lambda: store.BlockWriter(part, "hessian"))
    del out
    cow = np.load(str(path), mmap_mode="c")
    _raises_exactly(ValueError, f"ggn: out is a copy-on-write numpy.memmap (mode 'c') of {path}: what it holds never "
                    "reaches the file, which the workers write; open it with mode 'r+'",
                    lambda: store.BlockWriter(cow, "ggn"))
    w = store.BlockWriter(np.load(str(path), mmap_mode="r+"), "ggn")
    assert (w.file, w.n, w.lock) == (str(path), 4, None) and w.offset > 0


def test_the_record_is_written_whole_through_a_temporary_of_its_own(tmp_path, monkeypatch):
    """The record replaces itself atomically: a whole temporary file in the same directory
    (a rename across file systems is not atomic), renamed over it.  Neither a record name
    near the 255-byte limit nor a directory at ``<record>.tmp`` stops it."""
    args, n = _small_hessian()
    H = rp.hessian(*args)
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(store.os, "replace", lambda a, b: (renames.append((a, b)), real_replace(a, b)))
    for name in ("a" * 236 + ".npy", "h.npy"):
        path = tmp_path / name
        if name == "h.npy":
            (tmp_path / (name + ".refprune.json.tmp")).mkdir()
        out = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float64, shape=(n, n))
        rp.hessian(*args, out=out)
        assert np.array_equal(rp.load_matrix(str(path)), H)
    rec = str(tmp_path / "h.npy.refprune.json")
    mine = [(a, b) for a, b in renames if b == rec]
    assert mine and all(os.path.dirname(a) == str(tmp_path) and len(os.path.basename(a)) < 64 for a, _ in mine)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_dir()) == sorted(
        ["h.npy", "h.npy.refprune.json", "a" * 236 + ".npy", "a" * 236 + ".npy.refprune.json"])


def test_a_record_that_cannot_be_renamed_leaves_no_temporary(tmp_path, monkeypatch):
    args, n = _small_hessian()
    out = np.lib.format.open_memmap(str(tmp_path / "h.npy"), mode="w+", dtype=np.float64, shape=(n, n))

    def refuse(a, b):
        raise PermissionError(13, "Permission denied", b)
    monkeypatch.setattr(store.os, "replace", refuse)
    with pytest.raises(PermissionError):
        rp.hessian(*args, out=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.npy"]
