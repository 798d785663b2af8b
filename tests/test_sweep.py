"""The sweep's budget logic, table and plot on recorded results: tests/data/sweep_results.json is
the `sweep.json` a real `benchmarks/tflite_sweep.py` run wrote on the sample data (see
docs/tflite_sweep.md). The pipeline runs behind each point are tested in test_pipeline_local."""

import json
import os

import pytest

from litedet import sweep

RECORDED = os.path.join(os.path.dirname(__file__), "data", "sweep_results.json")


@pytest.fixture(scope="module")
def results():
    with open(RECORDED) as handle:
        return json.load(handle)


def test_without_budgets_the_most_accurate_row_wins(results):
    best, rows = sweep.recommend(results)
    assert len(rows) == sum(len(r["formats"]) for r in results)
    assert all(r["fits"] for r in rows)
    assert best["map50"] == max(r["map50"] for r in rows)


def test_a_latency_budget_keeps_only_rows_within_it(results):
    rows = sweep.candidates(results)
    latencies = sorted(r["latency_ms"] for r in rows)
    budget = latencies[len(latencies) // 2]  # about half the rows fit
    best, marked = sweep.recommend(results, max_latency_ms=budget)
    fitting = [r for r in marked if r["fits"]]
    assert fitting and len(fitting) < len(marked)
    assert all(r["latency_ms"] <= budget for r in fitting)
    assert all("ms >" in r["why"] for r in marked if not r["fits"])
    assert best["map50"] == max(r["map50"] for r in fitting)
    assert best["latency_ms"] <= budget


def test_both_budgets_apply_and_nothing_may_fit(results):
    rows = sweep.candidates(results)
    smallest = min(r["size_mb"] for r in rows)
    best, marked = sweep.recommend(results, max_size_mb=smallest)
    assert best["size_mb"] == smallest
    assert all(r["fits"] == (r["size_mb"] <= smallest) for r in marked)
    fastest = min(r["latency_ms"] for r in rows)
    best, marked = sweep.recommend(results, max_latency_ms=fastest / 2, max_size_mb=smallest)
    assert best is None and not any(r["fits"] for r in marked)


def test_ties_in_accuracy_go_to_the_faster_row():
    point = {
        "alpha": 0.5,
        "image_size": 256,
        "formats": {
            "float16": {"map50": 0.7, "map": 0.4, "size_mb": 1.5, "latency_ms": 9.0},
            "int8": {"map50": 0.7, "map": 0.4, "size_mb": 1.0, "latency_ms": 6.0},
        },
    }
    best, _ = sweep.recommend([point])
    assert best["format"] == "int8"


def test_the_table_and_the_plot_are_written(results, tmp_path):
    budget = sorted(r["latency_ms"] for r in sweep.candidates(results))[1]
    table = sweep.write_table(results, str(tmp_path / "sweep.md"), max_latency_ms=budget)
    best, _ = sweep.recommend(results, max_latency_ms=budget)
    assert "**best**" in table and sweep.describe(best) in table
    assert table.count("\n| ") == len(sweep.candidates(results))  # one line per row
    sweep.plot(results, str(tmp_path / "sweep.png"), max_latency_ms=budget)
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_finished_point_is_not_run_again(results, tmp_path):
    recorded = results[0]
    name = sweep.point_name(recorded["alpha"], recorded["image_size"])
    points = tmp_path / sweep.POINTS_DIR
    points.mkdir()
    (points / f"{name}.json").write_text(json.dumps(recorded))
    # No configuration, no dataset: a finished point is read back, never rerun.
    assert (
        sweep.run_point(None, recorded["alpha"], recorded["image_size"], str(tmp_path), None)
        == recorded
    )
