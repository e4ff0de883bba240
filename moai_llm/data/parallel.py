"""A prepared dataset built as datatrove tasks, merged into one folder (prepare.py calls `build`).

    plan    here: each task's share of the input (shares.py), each source's text column, the
            pad id                                                        -> WORK/plan.json
    tasks   here, on Slurm or on Ray (executors.py), steps in pipeline.py -> WORK/tasks/NNNNN/
    merge   here: the tasks' shards linked in task order, their tails packed together, one
            manifest.json; the folder is renamed into place (complete or absent)

WORK is `.NAME.tasks-KEY` beside the output folder. KEY covers the sources, settings,
tokenizer and the number of tasks, so a prepare killed mid-way and started again with the same
command finds its finished tasks (datatrove's completion markers) and runs only the others;
any other `.NAME.tasks-*` folder is a leftover and is removed (the caller holds the lock).

Rows depend on the number of tasks (each task packs its own share): the same input, settings
and task count give byte-identical rows, and any task count gives the same documents with
the same tokens. The task count is recorded in the manifest; a cached dataset built with
another count is still a hit unless `tasks` is asked for explicitly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from moai_llm.data import documents, shares
from moai_llm.data import sources as src_mod
from moai_llm.data.executors import Executor, run_tasks
from moai_llm.data.pipeline import PackRows, ReadShare, Tokenize, load_plan, read_tail, task_name
from moai_llm.errors import MoaiInputError


def work_folder(out: Path, key: str, tasks: int, buffer_tokens: int | None) -> Path:
    digest = hashlib.blake2b(json.dumps([key, tasks, buffer_tokens]).encode(), digest_size=8).hexdigest()
    return out.parent / f".{out.name}.tasks-{digest}"


def build(out: Path, srcs: list[src_mod.Source], tokenizer_dir, settings: dict, tok_hash: str, *, key: str,
          executor: Executor, tasks: int | None, num_proc: int | None, buffer_tokens: int | None,
          trust_remote_code: bool, force: bool, size=None) -> dict[str, Any]:
    """Build `out` from `srcs` in tasks (resuming finished ones), merge, and return the manifest.
    `size` (footprint.InputSize): to say how much a full disk would have needed."""
    from moai_llm.atomic import temp_dir_beside
    from moai_llm.errors import DiskFullError
    from moai_llm.resources import is_disk_full

    started = time.time()
    tasks = tasks or shares.auto_tasks(srcs, executor.workers or 1)
    work = work_folder(out, key, tasks, buffer_tokens)
    for stale in out.parent.glob(f".{out.name}.tasks-*"):
        if stale != work or force:
            shutil.rmtree(stale, ignore_errors=True)
    start_work(work, make_plan(srcs, tokenizer_dir, settings, tasks, buffer_tokens, trust_remote_code))
    fingerprints = Fingerprints(srcs)
    rust_threads = num_proc > 1 if num_proc else executor.cores_per_task() > 2
    steps = [ReadShare(work), Tokenize(work), PackRows(work, rust_threads)]
    tmp = None
    try:
        run_tasks(work, tasks, executor, steps, shares.input_cost(srcs))
        tmp = temp_dir_beside(out)
        manifest = merge(work, load_plan(work), tmp)
        manifest.update(settings=settings, tokenizer_hash=tok_hash, output_dir=str(out),
                        tokenizer_dir=str(Path(tokenizer_dir).resolve()), build_seconds=round(time.time() - started, 3))
        for entry, fingerprint in zip(manifest["sources"], fingerprints.result(), strict=True):
            entry["fingerprint"] = fingerprint
        publish(tmp, out, manifest)
    except BaseException as exc:
        if isinstance(exc, DiskFullError) or is_disk_full(exc):
            raise _disk_full(out, work, tmp, size, shares.input_cost(srcs)) from None
        if isinstance(exc, MoaiInputError):  # bad input: fixing it changes the plan, no finished task is of use
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return manifest


class Fingerprints:
    """The sources' fingerprints for the cache: size, mtime and head/tail hash taken before any
    task reads, the whole-file hash in a thread while the tasks run (a full pass over the input
    that would otherwise come before them). A file whose size or mtime changed meanwhile keeps no
    whole-file hash, so the next cache check rebuilds."""

    def __init__(self, srcs: list[src_mod.Source]):
        import threading

        self.srcs, self.before, self.full = srcs, [src_mod.fingerprint(s) for s in srcs], None
        self.thread = threading.Thread(target=self._hash, name="moai-fingerprint", daemon=True)
        self.thread.start()

    def _hash(self) -> None:
        self.full = [src_mod.fingerprint(s, full=True) for s in self.srcs]

    def result(self) -> list[dict]:
        self.thread.join()
        if self.full is None:  # the thread failed (a file vanished): the next cache check rebuilds
            return self.before
        stat = lambda f: [(e["path"], e["size"], e["mtime_ns"]) for e in f.get("files", [])]  # noqa: E731
        return [full if stat(full) == stat(before) else before for full, before in zip(self.full, self.before, strict=True)]


def publish(tmp: Path, out: Path, manifest: dict) -> None:
    from moai_llm.atomic import replace_dir
    from moai_llm.data.store import write_manifest

    write_manifest(tmp, manifest)
    replace_dir(tmp, out)


def _disk_full(out: Path, work: Path, tmp: Path | None, size, cost: int) -> Exception:
    """The full-disk error, once this build's files are removed: the bytes written scaled to the
    whole input (or the size estimate from the input, whichever is larger)."""
    from moai_llm.data.executors import totals
    from moai_llm.data.footprint import disk_estimate
    from moai_llm.resources import disk_full_error, folder_bytes

    written = folder_bytes(work / "tasks") + (folder_bytes(tmp) if tmp else 0)
    read = totals(work)[0]
    scaled = int(written * cost / read) if read else 0
    shutil.rmtree(work, ignore_errors=True)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    needed = max(scaled, (disk_estimate(size) or 0) if size else 0, written)
    return disk_full_error(out, needed or None, written)


def make_plan(srcs, tokenizer_dir, settings: dict, tasks: int, buffer_tokens, trust_remote_code: bool) -> dict:
    """What every task reads (plan.json): a function of the input, settings and task count only."""
    from moai_llm.data.encoding import load_row_tokenizer

    tokenizer = load_row_tokenizer(tokenizer_dir, settings["seq_len"], trust_remote_code)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return {
        "tasks": tasks, "settings": settings, "tokenizer_dir": str(Path(tokenizer_dir).resolve()),
        "trust_remote_code": trust_remote_code, "buffer_tokens": buffer_tokens, "pad_id": pad_id,
        "sources": [{"spec": s.spec, "files": [str(f.resolve()) for f in s.files], "weight": s.weight,
                     "dataset": s.dataset, "config": s.config, "split": s.split} for s in srcs],
        "columns": text_columns(srcs, settings),
        "shares": [[p.to_dict() for p in share] for share in shares.plan_shares(srcs, tasks)],
    }


def text_columns(srcs, settings: dict) -> list[str | None]:
    """Each file source's text column, chosen once from its first record (so that every task
    reads the same column); None for SFT and hub sources (read by one task, which chooses)."""
    if settings["mode"] != "pretrain":
        return [None] * len(srcs)
    columns: list[str | None] = []
    for source in srcs:
        first = None if source.is_hub else next(iter(src_mod.iter_records(source, src_mod.BadRows(True))), None)
        columns.append(src_mod.text_column(first[0], first[1], settings["text_column"]) if first else None)
    return columns


def start_work(work: Path, plan: dict) -> None:
    """Keep `work` when it holds the same plan (a resume), else start it afresh."""
    from moai_llm.atomic import write_text_atomic

    text = json.dumps(plan, indent=1, ensure_ascii=False)
    path = work / "plan.json"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    shutil.rmtree(work, ignore_errors=True)
    (work / "tasks").mkdir(parents=True)
    write_text_atomic(path, text)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # the task folders stay whole until the merged folder is in place
    except OSError:
        shutil.copyfile(src, dst)


def merge(work: Path, plan: dict, tmp: Path) -> dict[str, Any]:
    """Link every task's shards into `tmp` in task order, pack the tails, and sum the counts."""
    counts = [json.loads((work / "tasks" / task_name(k) / "stats.json").read_text(encoding="utf-8"))
              for k in range(plan["tasks"])]
    names: list[str] = []
    for k, c in enumerate(counts):
        for shard in c["shards"]:
            names.append(f"data-{len(names):05d}.arrow")
            _link(work / "tasks" / task_name(k) / shard, tmp / names[-1])
    rows = sum(c["rows"] for c in counts) + _pack_tails(work, plan, tmp, names)
    return manifest_of(plan, counts, rows, names)


def _pack_tails(work: Path, plan: dict, tmp: Path, names: list[str]) -> int:
    """The tasks' under-filled last rows, packed again all together; returns the rows written."""
    from moai_llm.data.packing import StreamPacker, build_rows
    from moai_llm.data.store import ShardWriter

    settings, seq_len = plan["settings"], plan["settings"]["seq_len"]
    folder = tmp / ".tails"
    folder.mkdir()
    writer = ShardWriter(folder, seq_len)
    packer = StreamPacker(seq_len, settings["packing"], plan["buffer_tokens"], num_bins=settings["num_bins"] or 8)

    def emit(packed) -> None:
        for row in build_rows(packed, seq_len, plan["pad_id"]):
            writer.add(row)

    for k in range(plan["tasks"]):
        for doc in read_tail(work / "tasks" / task_name(k) / "tail.arrow"):
            emit(packer.add(doc))
    emit(packer.finish())
    writer.close()
    for shard in writer.shards:
        names.append(f"data-{len(names):05d}.arrow")
        os.replace(folder / shard, tmp / names[-1])
    folder.rmdir()
    return writer.num_rows


def manifest_of(plan: dict, counts: list[dict], rows: int, names: list[str]) -> dict[str, Any]:
    """The manifest (the same fields as a one-process build's), from the tasks' counts."""
    settings, n = plan["settings"], len(plan["sources"])
    seq_len = settings["seq_len"]
    stats = documents.Stats(n, seq_len)
    for c in counts:
        stats.docs = [a + b for a, b in zip(stats.docs, c["docs"], strict=True)]
        stats.tokens = [a + b for a, b in zip(stats.tokens, c["tokens"], strict=True)]
        for k, v in c["histogram"].items():
            stats.histogram[int(k)] = stats.histogram.get(int(k), 0) + v
        for name in ("docs_split", "tokens_cut", "tokens_dropped", "dropped_docs", "empty", "truncated"):
            setattr(stats, name, getattr(stats, name) + c[name])
        stats.first_truncated = stats.first_truncated or c["first_truncated"]
    skipped = sum(c["skipped_rows"] for c in counts)
    real = sum(stats.tokens)
    if real == 0:
        raise MoaiInputError("no usable documents in the input" + (f" ({skipped} bad rows skipped)" if skipped else ""),
                             hint="check --text-column / the SFT schema, and that the files hold text")
    from moai_llm.data.store import FORMAT

    documents.report_truncated(stats)
    return {
        "format": FORMAT, "complete": True, "seq_len": seq_len, "mode": settings["mode"],
        "packing": settings["packing"], "pad_token_id": plan["pad_id"], "num_rows": rows, "num_tokens": real,
        "num_documents": sum(stats.docs), "packing_efficiency": real / (rows * seq_len),
        "docs_split": stats.docs_split, "tokens_cut": stats.tokens_cut, "tokens_dropped": stats.tokens_dropped,
        "dropped_documents": stats.dropped_docs, "conversations_truncated": stats.truncated,
        "first_truncated": stats.first_truncated, "empty_documents": stats.empty, "skipped_rows": skipped,
        "first_skipped_row": next((c["first_skipped_row"] for c in counts if c["first_skipped_row"]), None),
        "doc_length_histogram": {str(k): v for k, v in sorted(stats.histogram.items())},
        "sources": [{"spec": s["spec"], "weight": s["weight"], "documents": stats.docs[i], "tokens": stats.tokens[i],
                     "token_share": stats.tokens[i] / real} for i, s in enumerate(plan["sources"])],
        "shards": names, "tasks": plan["tasks"], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
