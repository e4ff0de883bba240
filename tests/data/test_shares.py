"""shares.py: every record of the input is read by exactly one task, with its own location."""

from __future__ import annotations

import random

import pytest

from moai_llm.data.shares import plan_shares, read_piece
from moai_llm.data.sources import BadRows, iter_records, resolve_sources


@pytest.fixture
def sources(tmp_path, write_jsonl):
    rng = random.Random(0)
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x" * rng.randint(0, 300)} for _ in range(400)])
    (tmp_path / "b.csv").write_text("text\n" + "".join(f"row {i}\n" for i in range(50)))
    (tmp_path / "c.txt").write_text("".join("y" * rng.randint(1, 80) + "\n" for _ in range(300)))
    return resolve_sources([str(tmp_path / n) for n in ("a.jsonl", "b.csv", "c.txt")], weights=[1, 2, 0.5])


@pytest.mark.parametrize("tasks", [1, 2, 3, 7, 64, 5000])
def test_every_record_is_read_once_in_order_with_its_line(sources, tasks):
    plan = plan_shares(sources, tasks)
    assert len(plan) == tasks
    for index, source in enumerate(sources):
        pieces = [p for share in plan for p in share if p.source == index]
        read = [where for p in pieces for _, where in read_piece(source, p, BadRows(False))]
        assert read == [where for _, where in iter_records(source, BadRows(False))]
        assert sum(p.first for p in pieces) == 1 and pieces[0].first


def test_shares_cost_about_the_same(sources):
    plan = plan_shares(sources, 4)
    costs = [sum(p.cost for p in share) for share in plan]
    csv = next(p.cost for share in plan for p in share if p.source == 1)  # read whole, by one task
    assert max(costs) - min(costs) <= csv + 2 * 320  # plus a line either side of a cut
