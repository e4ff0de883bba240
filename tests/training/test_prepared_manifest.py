"""A prepared dataset's manifest is checked against its files before a run starts: shard paths
stay inside the folder (no `../`, absolute path or link out of it), and `num_rows` / `seq_len`
are what the shards hold. A manifest that says otherwise is refused, exit 2, nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
from fault_runs import moai


def _dataset(workdir, tmp_path, change):
    data = tmp_path / "DS"
    shutil.copytree(workdir / "data", data)
    manifest = json.loads((data / "manifest.json").read_text())
    change(manifest, data)
    (data / "manifest.json").write_text(json.dumps(manifest))
    return data


def _outside(manifest, data):
    (data.parent / "elsewhere.arrow").write_bytes((data / manifest["shards"][0]).read_bytes())
    manifest["shards"] = ["../elsewhere.arrow"]


def _link_out(manifest, data):
    (data.parent / "elsewhere.arrow").write_bytes((data / manifest["shards"][0]).read_bytes())
    (data / "link.arrow").symlink_to(data.parent / "elsewhere.arrow")
    manifest["shards"] = ["link.arrow"]


CHANGES = {
    "dot-dot shard": (_outside, "lies outside"),
    "absolute shard": (lambda m, d: m.update(shards=["/etc/passwd"]), "lies outside"),
    "link out of the folder": (_link_out, "lies outside"),
    "10^15 rows": (lambda m, d: m.update(num_rows=10**15), "says 1000000000000000 rows"),
    "rows as text": (lambda m, d: m.update(num_rows="many"), '"num_rows" is "many"'),
    "wrong seq_len": (lambda m, d: m.update(seq_len=32), "not 32 tokens long"),
}


@pytest.mark.parametrize("case", sorted(CHANGES))
def test_a_manifest_that_disagrees_with_its_files_is_refused(workdir, tmp_path, pretrain_args, case):
    change, words = CHANGES[case]
    data = _dataset(workdir, tmp_path, change)
    out = tmp_path / "run"
    args = pretrain_args(workdir, out, 2)
    args[args.index("--dataset") + 1] = str(data)
    result = moai(args)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.code == 2 and len(errors) == 1 and words in errors[0], result.output
    assert "Traceback" not in result.output and not out.exists()


def test_load_prepared_never_reads_outside_its_folder(workdir, tmp_path):
    from moai_llm.data.store import load_prepared
    from moai_llm.errors import MoaiInputError

    data = _dataset(workdir, tmp_path, _outside)
    with pytest.raises(MoaiInputError, match="lies outside"):
        load_prepared(data)
