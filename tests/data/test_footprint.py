"""footprint.py: the memory a prepare needs, predicted from the flags and the input before
anything is allocated, and checked against what a real build takes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from moai_llm.data.footprint import LIBRARIES, InputSize, measure_input, memory_need
from moai_llm.data.prepare import check_seq_len
from moai_llm.data.sources import resolve_sources
from moai_llm.errors import MoaiInputError, NotEnoughMemoryError
from moai_llm.resources import Memory

TINY = InputSize(bytes=24, records=1, bytes_per_record=24.0)


def test_input_bounds_come_from_sizes_lines_and_parquet_metadata(tmp_path, write_jsonl):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_jsonl(tmp_path / "a.jsonl", [{"text": "hello"}] * 10)
    pq.write_table(pa.table({"text": ["hello world"] * 50}), tmp_path / "b.parquet")
    size = measure_input(resolve_sources([str(tmp_path / "a.jsonl"), str(tmp_path / "b.parquet")], weights=[2, 1]))
    assert size.records == 10 * 2 + 50  # the weight reads a.jsonl twice
    assert size.bytes >= (tmp_path / "a.jsonl").stat().st_size * 2
    hub = measure_input(resolve_sources(None, dataset="someone/corpus"))
    assert hub.bytes is None and hub.records is None


def test_need_grows_with_seq_len_and_stays_bounded_by_the_input():
    assert memory_need(2048, TINY) < memory_need(65536, TINY) < memory_need(2**24, TINY)
    # one row of a tiny input: the libraries plus 3 int32 columns and one copy of them
    assert memory_need(2**24, TINY) == LIBRARIES + 2**24 * 24 + (24 + 1) * 4 + 1 * 800  # 25 tokens, 1 document
    unknown = InputSize(None, None, None)
    assert memory_need(2048, unknown) > memory_need(2048, TINY)  # no bound: the whole buffer is counted
    assert memory_need(2**20, unknown) < 4 << 30  # buffers are capped for long rows


def test_seq_len_checks_refuse_with_the_largest_that_fits():
    with pytest.raises(MoaiInputError, match="--seq-len 4: a row must hold at least 8 tokens"):
        check_seq_len(4, None, TINY)
    with pytest.raises(MoaiInputError, match="longer than 1048576 tokens.*the largest --seq-len that fits is"):
        check_seq_len(2**21, None, TINY)
    check_seq_len(2**21, 2**21, TINY)  # the model says it has that many positions
    with pytest.raises(NotEnoughMemoryError) as err:
        check_seq_len(100_000, None, TINY, available=Memory(LIBRARIES + 24 * 10_000, "cgroup limit"))
    assert err.value.largest == 9216 and "(cgroup limit); the largest --seq-len that fits is 9216" in str(err.value)


MEASURE = """
import json, re, sys, psutil
def peak_rss():  # VmHWM: ru_maxrss would carry the parent's peak over fork and exec
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
from moai_llm.data.prepare import prepare_dataset
import moai_llm.data.encoding, moai_llm.data.store, moai_llm.data.packing
start = psutil.Process().memory_info().rss
prepare_dataset([sys.argv[1]], sys.argv[2], int(sys.argv[3]), sys.argv[4], max_positions=int(sys.argv[3]))
print(json.dumps({"delta": peak_rss() - start}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc")
def test_prediction_matches_a_real_build_within_a_third(tmp_path, tokenizer_dir, write_jsonl):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "hello world"}])
    seq_len = 2**23  # one row of 8M tokens: 200 MB of row buffers, far above the libraries
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(tokenizer_dir), str(seq_len),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)["delta"]
    predicted = memory_need(seq_len, measure_input(resolve_sources([str(path)])))
    assert 0.75 < measured / predicted < 1.33, (measured, predicted)
