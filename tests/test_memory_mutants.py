"""``refprune.memory`` against hand-written system answers: ``available_memory`` reads
``MemAvailable`` (kB) from a ``/proc/meminfo`` text given here, falls back to
``sysconf`` pages times page size, and to ``2**63`` when neither can be read; the
refusal's message written out in full."""

import io
import os

import pytest

from refprune import memory

MEMINFO = """MemTotal:       24576000 kB
MemFree:         1000000 kB
MemAvailable:    12345678 kB
Buffers:          200000 kB
"""


def _open_meminfo(text):
    def fake_open(path, *args, **kwargs):
        if path != "/proc/meminfo":
            raise FileNotFoundError(2, "No such file or directory", path)
        return io.StringIO(text)
    return fake_open


def _sysconf(values):
    def fake_sysconf(name):
        if not isinstance(name, str):
            raise TypeError("configuration names must be strings or integers")
        if name not in values:
            raise ValueError("unrecognized configuration name")
        return values[name]
    return fake_sysconf


def _no_file(path, *args, **kwargs):
    raise PermissionError(13, "Permission denied", path)


def test_memavailable_in_kib_from_meminfo(monkeypatch):
    monkeypatch.setattr(memory, "open", _open_meminfo(MEMINFO), raising=False)
    monkeypatch.setattr(os, "sysconf", _sysconf({"SC_AVPHYS_PAGES": 7, "SC_PAGE_SIZE": 4096}))
    assert memory.available_memory() == 12345678 * 1024


def test_without_memavailable_the_available_pages(monkeypatch):
    # a kernel older than 3.14 has no MemAvailable line: the pages sysconf reports
    monkeypatch.setattr(memory, "open", _open_meminfo(MEMINFO.replace("MemAvailable", "Cached")), raising=False)
    monkeypatch.setattr(os, "sysconf", _sysconf({"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}))
    assert memory.available_memory() == 1000 * 4096


def test_without_proc_the_available_pages(monkeypatch):
    monkeypatch.setattr(memory, "open", _no_file, raising=False)
    monkeypatch.setattr(os, "sysconf", _sysconf({"SC_AVPHYS_PAGES": 3, "SC_PAGE_SIZE": 16384}))
    assert memory.available_memory() == 3 * 16384


@pytest.mark.parametrize("sysconf", [_sysconf({}), None])
def test_with_neither_two_to_the_63(monkeypatch, sysconf):
    monkeypatch.setattr(memory, "open", _no_file, raising=False)
    if sysconf is None:  # a platform without os.sysconf (Windows)
        monkeypatch.delattr(os, "sysconf")
    else:
        monkeypatch.setattr(os, "sysconf", sysconf)
    assert memory.available_memory() == 9223372036854775808


def test_the_message_without_hint_and_with_texts_given_late(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 3 * 2**29)  # 1.5 GiB
    calls = []

    def where():
        calls.append("where")
        return "kfac"

    with pytest.raises(memory.ArrayTooLargeError) as err:
        memory.check_fits(5 * 2**30, where, lambda: "the factors")
    assert str(err.value) == "kfac: the factors would need 5.00 GiB but only 1.50 GiB are available"
    assert calls == ["where"]
    # texts given as functions are not called when the array fits
    memory.check_fits(3 * 2**29, where, lambda: "the factors")
    assert calls == ["where"]


def test_describe_and_nbytes():
    assert memory.describe((3, 4, 5)) == "3 x 4 x 5"
    assert memory.nbytes((3, 4, 5)) == 3 * 4 * 5 * 8
    assert memory.nbytes((3, 4), itemsize=4) == 48
