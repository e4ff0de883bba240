"""The datatrove pipeline of one prepare task: moai's reading, tokenizing and packing as steps.

    ReadShare  -> batches of texts (pretrain) or rendered conversations (sft), from the records
                  of this task's share of the sources (shares.py, sources.py, documents.py)
    Tokenize   -> batches of token documents (encoding.py), a reader thread a few batches ahead
                  so that reading and tokenizing overlap with packing (documents.prefetched)
    PackRows   -> packed rows written as Arrow shards (packing.py, store.py) into
                  `WORK/tasks/NNNNN/`, published by a rename when the task is complete

A datatrove executor (chosen in executors.py; `LocalTasks` and `SlurmTasks` below) runs the
steps once per task, wherever it runs them; the steps carry only the work folder's path and
read the plan (`WORK/plan.json`, written by parallel.py) there. The steps of one task share its `Task`: the counts that end up in the
manifest, the bad-row policy, and the progress file that the bar of the launching process
reads (`WORK/progress/NNNNN.json`).

A task's last packed rows that are not full (the tail of its stream) are not written: their
documents go to `tail.arrow`, and the merge packs the tails of all tasks together, so the
packing efficiency does not fall with the number of tasks.
"""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from moai_llm.data import documents, shares
from moai_llm.data import sources as src_mod
from moai_llm.data.packing import Doc, StreamPacker, build_rows, split_long
from moai_llm.errors import MoaiInputError

MODES = ("pretrain", "sft")  # what tasks can build (preference pairs: one process, prepare.py)
PROGRESS_SECONDS = 1.0


def task_name(rank: int) -> str:
    return f"{rank:05d}"


def load_plan(work: str | Path) -> dict[str, Any]:
    return json.loads((Path(work) / "plan.json").read_text(encoding="utf-8"))


def plan_sources(plan: dict[str, Any]) -> list[src_mod.Source]:
    return [src_mod.Source(spec=s["spec"], files=[Path(f) for f in s["files"]], weight=s["weight"],
                           dataset=s["dataset"], config=s["config"], split=s["split"]) for s in plan["sources"]]


class Task:
    """What the steps of one task share (they run in one process, one task at a time)."""

    _open: dict[tuple[str, int], Task] = {}

    @classmethod
    def of(cls, work: str, rank: int) -> Task:
        key = (work, rank)
        if key not in cls._open:
            cls._open[key] = cls(work, rank)
        return cls._open[key]

    def __init__(self, work: str, rank: int):
        self.work, self.rank, self._key = Path(work), rank, (work, rank)
        self.plan = load_plan(work)
        self.settings = self.plan["settings"]
        self.mode, self.seq_len = self.settings["mode"], self.settings["seq_len"]
        self.sources = plan_sources(self.plan)
        self.share = [shares.Piece.from_dict(p) for p in self.plan["shares"][rank]]
        self.stats = documents.Stats(len(self.sources), self.seq_len)
        self.bad = src_mod.BadRows(self.settings["skip_bad_rows"])
        self.bytes = 0  # input bytes read so far (shares.read_piece adds to it)
        self._reported = 0.0
        self._encoder = self._template = None

    @property
    def encoder(self):
        if self._encoder is None:
            from moai_llm.data.encoding import Encoder, load_backend

            self._encoder = Encoder(load_backend(self.plan["tokenizer_dir"], self.plan["trust_remote_code"]))
        return self._encoder

    @property
    def template(self):
        if self._template is None:
            from moai_llm.data.sft import ChatTemplate

            self._template = ChatTemplate.from_dir(self.plan["tokenizer_dir"],
                                                   thinking=self.settings.get("thinking", "off"))
        return self._template

    def report(self, force: bool = False) -> None:
        """Write this task's progress (bytes read, documents, tokens) at most once a second."""
        now = time.monotonic()
        if not force and now - self._reported < PROGRESS_SECONDS:
            return
        self._reported = now
        from moai_llm.atomic import write_text_atomic

        folder = self.work / "progress"
        folder.mkdir(exist_ok=True)
        write_text_atomic(folder / f"{task_name(self.rank)}.json", json.dumps(
            {"bytes": self.bytes, "documents": sum(self.stats.docs), "tokens": sum(self.stats.tokens)}))

    def fail(self, exc: MoaiInputError) -> None:
        """Record a user-fixable error for the launching process, which shows it as one line."""
        from moai_llm.atomic import write_text_atomic

        folder = self.work / "failed"
        folder.mkdir(exist_ok=True)
        write_text_atomic(folder / f"{task_name(self.rank)}.json", json.dumps({"message": str(exc), "hint": exc.hint}))

    def close(self) -> None:
        Task._open.pop(self._key, None)


class ReadShare(PipelineStep):
    """Reading: the records of this task's share, as batches of texts or rendered conversations."""

    name = "read share"
    type = "moai"

    def __init__(self, work: str | Path):
        super().__init__()
        self.work = str(work)

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> Iterator[tuple[int, list]]:
        task = Task.of(self.work, rank)
        for piece in task.share:
            source = task.sources[piece.source]
            records = partial(shares.read_piece, source, piece, task.bad, task)
            if task.mode == "pretrain":
                items = documents.pretrain_texts(source, task.bad, task.settings["text_column"], task.stats,
                                                 records, task.plan["columns"][piece.source])
            else:
                items = documents.sft_items(source, task.bad, task.template, task.settings["mapping"], records,
                                            schema_seen=not piece.first)
            for batch in items:
                self.stat_update("records", value=len(batch))
                yield piece.source, batch


class Tokenize(PipelineStep):
    """Tokenizing: batches of texts to token documents, in a thread ahead of the packing."""

    name = "tokenize"
    type = "moai"

    def __init__(self, work: str | Path):
        super().__init__()
        self.work = str(work)

    def run(self, data, rank: int = 0, world_size: int = 1) -> Iterator[list[Doc]]:
        task = Task.of(self.work, rank)

        def encoded() -> Iterator[list[Doc]]:
            for index, items in data:
                if task.mode == "pretrain":
                    yield [Doc(ids, None, index) for ids in task.encoder.documents(items)]
                else:
                    yield documents.sft_encode(items, index, task.encoder, task.stats)

        yield from documents.prefetched(encoded())


class PackRows(PipelineStep):
    """Packing: documents into rows of seq_len tokens, written as this task's Arrow shards."""

    name = "pack rows"
    type = "moai"

    def __init__(self, work: str | Path, rust_threads: bool = False):
        super().__init__()
        self.work = str(work)
        self.rust_threads = rust_threads  # the Rust tokenizer's own threads (with cores to spare)

    def run(self, data, rank: int = 0, world_size: int = 1) -> Iterator[Any]:
        from moai_llm.data.encoding import rust_parallelism

        task = Task.of(self.work, rank)
        try:
            with rust_parallelism(self.rust_threads):
                write_task(task, data or ())
        except MoaiInputError as exc:
            from moai_llm.errors import DiskFullError

            if isinstance(exc, DiskFullError):  # the launching process words it for the whole output
                raise OSError(errno.ENOSPC, str(exc)) from None
            task.fail(exc)
            raise
        finally:
            task.close()
        yield from ()


class LocalTasks(LocalPipelineExecutor):
    """The local executor, with datatrove's log lines kept out of the terminal (moai draws one bar)."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        from loguru import logger

        logger.disable("datatrove")
        return super()._run_for_rank(rank, local_rank, node_rank)


class SlurmTasks(SlurmPipelineExecutor):
    """The Slurm executor without datatrove's stats job: moai merges the tasks itself."""

    def launch_merge_stats(self) -> None:
        return None

    def get_sbatch_args(self, max_array: int = 1) -> dict:
        args = super().get_sbatch_args(max_array)
        if not self.partition:  # the cluster's default partition
            args.pop("partition", None)
        return args


def write_task(task: Task, batches) -> None:
    """Pack and write the task's rows into a temporary folder, then rename it to tasks/NNNNN."""
    from moai_llm.atomic import replace_dir, temp_dir_beside
    from moai_llm.data.store import ShardWriter

    settings, seq_len, stats = task.settings, task.seq_len, task.stats
    target = task.work / "tasks" / task_name(task.rank)
    tmp = temp_dir_beside(target)
    writer = ShardWriter(tmp, seq_len)
    packer = StreamPacker(seq_len, settings["packing"], task.plan["buffer_tokens"], num_bins=settings["num_bins"] or 8)
    pad_id = task.plan["pad_id"]

    def emit(rows: list[list[Doc]]) -> None:
        stats.rows_out += len(rows)
        stats.tokens_out += sum(len(doc.ids) for row in rows for doc in row)
        for row in build_rows(rows, seq_len, pad_id):
            writer.add(row)

    try:
        for batch in batches:
            for doc in batch:
                n = len(doc.ids)
                stats.document(doc.source, n)
                if n > seq_len:
                    pieces = split_long(doc, seq_len)
                    stats.docs_split += 1
                    stats.tokens_cut += n - len(pieces[0].ids)
                    for piece in pieces:
                        emit(packer.add(piece))
                else:
                    emit(packer.add(doc))
            task.report()
        full, tail = [], []
        for row in packer.finish():  # under-filled rows wait for the merge, which packs all tails together
            (full if sum(len(d.ids) for d in row) >= packer.min_fill * seq_len else tail).append(row)
        emit(full)
        writer.close()
        write_tail(tmp / "tail.arrow", [doc for row in tail for doc in row])
        (tmp / "stats.json").write_text(json.dumps(task_stats(task, writer)), encoding="utf-8")
        replace_dir(tmp, target)
        task.bytes = sum(p.cost for p in task.share)
        task.report(force=True)
    except BaseException:
        writer.abandon()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise


def task_stats(task: Task, writer) -> dict[str, Any]:
    s, bad = task.stats, task.bad
    return {"docs": s.docs, "tokens": s.tokens, "histogram": {str(k): v for k, v in s.histogram.items()},
            "docs_split": s.docs_split, "tokens_cut": s.tokens_cut, "tokens_dropped": s.tokens_dropped,
            "dropped_docs": s.dropped_docs, "empty": s.empty, "truncated": s.truncated,
            "first_truncated": s.first_truncated, "skipped_rows": bad.count, "first_skipped_row": bad.first,
            "rows": writer.num_rows, "shards": writer.shards}


def write_tail(path: Path, docs: list[Doc]) -> None:
    """Documents as an Arrow file: ids, labels (null: same as ids) and source index."""
    import pyarrow as pa

    table = pa.table({
        "ids": pa.array([d.ids for d in docs], type=pa.list_(pa.int32())),
        "labels": pa.array([d.labels for d in docs], type=pa.list_(pa.int32())),
        "source": pa.array([d.source for d in docs], type=pa.int32()),
    })
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
        out.write_table(table)


def read_tail(path: Path) -> Iterator[Doc]:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    for ids, labels, index in zip(table["ids"].to_pylist(), table["labels"].to_pylist(),
                                  table["source"].to_pylist(), strict=True):
        yield Doc(np.asarray(ids, dtype=np.int32), None if labels is None else np.asarray(labels, dtype=np.int32), index)
