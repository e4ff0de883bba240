"""moai_llm.resources: the memory a process can still take, refusals with the largest value
that fits, and full disks recognised whichever library wrote."""

from __future__ import annotations

import errno
import subprocess
import sys

import psutil
import pytest

from moai_llm.errors import DiskFullError, NotEnoughMemoryError
from moai_llm.resources import (
    Memory,
    available_memory,
    check_disk,
    check_memory,
    human_bytes,
    is_disk_full,
    largest_fitting,
    parse_bytes,
)


def test_moai_memory_limit_is_a_budget_for_the_whole_process(monkeypatch):
    monkeypatch.setenv("MOAI_MEMORY_LIMIT", "4GiB")
    avail = available_memory()
    rss = psutil.Process().memory_info().rss
    assert avail.source == "MOAI_MEMORY_LIMIT"
    assert abs(avail.bytes - (4 * 2**30 - rss)) < 64 << 20


def test_ulimit_v_is_what_is_left_under_the_address_space_limit():
    code = ("import resource, psutil; from moai_llm.resources import available_memory; "
            "vms = psutil.Process().memory_info().vms; "
            "resource.setrlimit(resource.RLIMIT_AS, (vms + (300 << 20), resource.RLIM_INFINITY)); "
            "m = available_memory(); print(m.source, '|', m.bytes >> 20)")
    source, mib = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout.split("|")
    assert source.strip() == "ulimit -v"
    assert 250 <= int(mib) <= 300


def test_without_limits_it_is_the_ram_the_kernel_can_give():
    avail = available_memory()
    assert 0 < avail.bytes <= psutil.virtual_memory().total
    if avail.source == "RAM":
        assert abs(avail.bytes - psutil.virtual_memory().available) < 256 << 20


@pytest.mark.parametrize("budget", [0, 1, 99, 100, 101, 12_345, 10**9])
def test_largest_fitting_is_exact_on_a_stepped_need(budget):
    def need(v):  # grows in steps, like a hash table doubling its buckets
        return 100 + (1 << max(0, (v - 1).bit_length())) * 3 + v

    best = largest_fitting(need, budget, low=1, high=5000)
    brute = max((v for v in range(1, 5001) if need(v) <= budget), default=None)
    assert best == brute


def test_refusal_names_flag_need_available_and_what_fits():
    with pytest.raises(NotEnoughMemoryError) as err:
        check_memory("--vocab-size", 10**9, lambda v: 64 * v, low=260, step=64, available=Memory(2**30, "cgroup limit"))
    e = err.value
    assert str(e) == ("--vocab-size 1000000000: needs about 59.6 GiB of memory, but 1.0 GiB is available "
                      "(cgroup limit); the largest --vocab-size that fits is 16777216")
    assert (e.flag, e.need, e.available, e.largest) == ("--vocab-size", 64 * 10**9, 2**30, 16777216)
    with pytest.raises(NotEnoughMemoryError, match="not even --vocab-size 260 fits"):
        check_memory("--vocab-size", 1000, lambda v: 64 * v, low=260, available=Memory(1000, "RAM"))
    assert check_memory("--seq-len", 2048, lambda n: n, available=Memory(4096, "RAM")) == 2048


def test_sizes_read_and_written():
    assert parse_bytes("8GiB") == 8 * 2**30 and parse_bytes("500MB") == 500 * 10**6 and parse_bytes("123") == 123
    with pytest.raises(ValueError):
        parse_bytes("lots")
    assert human_bytes(512) == "512 B" and human_bytes(1536) == "1.5 KB" and human_bytes(5 << 20) == "5.0 MiB"


def test_full_disk_errors_from_python_arrow_and_rust_are_recognised(tmp_path):
    from faults import small_disk

    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("bad value"))
    with small_disk(tmp_path / "disk") as disk:
        import numpy as np
        import pyarrow as pa
        from tokenizers import Tokenizer, models

        with pytest.raises(Exception) as arrow, pa.OSFile(str(disk / "a.arrow"), "wb") as sink:
            sink.write(np.zeros(3 << 20, dtype=np.uint8).tobytes())
        assert is_disk_full(arrow.value)
        (disk / "a.arrow").unlink()
        (disk / "fill").write_bytes(b"x" * ((2 << 20) - 8192))
        big = Tokenizer(models.BPE(vocab={f"t{i}": i for i in range(50_000)}, merges=[]))
        with pytest.raises(Exception) as rust:
            big.save(str(disk / "tokenizer.json"))
        assert is_disk_full(rust.value), rust.value
        with pytest.raises(DiskFullError, match="needs about 10.0 MiB but only"):
            check_disk(disk / "out", 10 << 20, "the output")
