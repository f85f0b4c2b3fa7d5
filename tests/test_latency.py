"""Latency figures carry their spread, and a report says when they are unreliable (timings from a scripted
clock: tests never time)."""

import pytest
import torch
from torch import nn

from hfopt.compression.report import build_report, latency_note, write_report
from hfopt.latency import latency_rows, measure_latency, unstable_latency
from tests.testing_utils import WORDS, make_bert_tokenizer


class ScriptedClock:
    """A clock whose every timed call lasts the next of the given milliseconds, per model (in call order)."""

    def __init__(self, durations_ms: dict[str, list[float]], order: list[str]):
        self.durations = {name: list(values) for name, values in durations_ms.items()}
        self.order, self.calls, self.now = order, 0, 0.0

    def __call__(self) -> float:
        timing, end = divmod(self.calls, 2)
        self.calls += 1
        if end:
            name = self.order[timing % len(self.order)]
            self.now += self.durations[name].pop(0) / 1000
        return self.now


def scripted(warmup: int, **timed_ms: list[float]) -> ScriptedClock:
    """Warm-up rounds of 1 ms, then the given timings, models interleaved in the given order."""
    return ScriptedClock({k: [1.0] * warmup + v for k, v in timed_ms.items()}, list(timed_ms))


def no_run(model, inputs):
    return None


def test_p50_p90_and_drift_come_from_the_clock():
    steady = [10.0] * 10
    drifting = [10.0] * 5 + [40.0] * 5
    clock = scripted(2, a=steady, b=drifting)
    figures = measure_latency({"a": None, "b": None}, [{}], repeats=10, warmup=2, run=no_run, clock=clock)
    assert figures["a"]["p50_ms"] == pytest.approx(10.0)
    assert figures["a"]["p90_ms"] == pytest.approx(10.0)
    assert figures["a"]["drift"] == pytest.approx(1.0)
    assert figures["b"]["drift"] == pytest.approx(4.0)


class InterferingRuntimes:
    """Models whose call lasts 10 ms when the model called before it was itself, 20 ms when it was another one
    (whose runtime's threads still hold the cores): `run` notes who ran, the clock reads it."""

    def __init__(self):
        self.last, self.slowed, self.calls, self.now = None, False, 0, 0.0

    def run(self, model, inputs):
        self.slowed, self.last = self.last != model, model

    def clock(self) -> float:
        self.calls += 1
        if self.calls % 2 == 0:
            self.now += (20.0 if self.slowed else 10.0) / 1000
        return self.now


@pytest.mark.parametrize("settle_calls, expected_ms", [(1, 10.0), (0, 20.0)])
def test_interleaved_models_are_timed_after_a_call_of_their_own(settle_calls, expected_ms):
    runtimes = InterferingRuntimes()
    models = {"pytorch": "pytorch", "onnxruntime": "onnxruntime"}
    figures = measure_latency(
        models, [{}], repeats=6, warmup=1, run=runtimes.run, clock=runtimes.clock, settle_calls=settle_calls
    )
    assert {name: f["p50_ms"] for name, f in figures.items()} == pytest.approx(
        {"pytorch": expected_ms, "onnxruntime": expected_ms}
    )


def test_a_model_timed_alone_runs_only_its_timed_and_warm_up_calls():
    calls = []
    measure_latency({"only": None}, [{}], repeats=5, warmup=2, run=lambda model, inputs: calls.append(model))
    assert len(calls) == 7  # no settle call: its own previous call already was one


def test_unstable_latency_names_spread_and_drift():
    steady = {"latency_b1_p50_ms": 10.0, "latency_b1_p90_ms": 12.0, "latency_b1_drift": 1.05}
    assert unstable_latency(steady) == []
    spread = {**steady, "latency_b1_p90_ms": 40.0}
    assert unstable_latency(spread) == ["b1 p90/p50 = 4.0"]
    drift = {**steady, "latency_b1_drift": 2.5}
    assert unstable_latency(drift) == ["b1 drifted 2.5× between rounds"]


class FakeTask:
    """A classification task whose latency comes from latency_rows with a scripted clock."""

    name = "classification"
    headline = ("accuracy", True)

    def __init__(self, tokenizer, clock_of_size):
        self.tokenizer, self.clock_of_size, self.texts = tokenizer, clock_of_size, ["sunny day"] * 4

    def evaluate(self, model):
        return {"accuracy": 0.9, "f1": 0.9}

    def latency(self, stages, repeats=20):
        rows = {name: {} for name in stages}
        for size, clock in self.clock_of_size.items():
            figures = latency_rows(stages, self.tokenizer, self.texts, (size,), repeats, run=no_run, clock=clock)
            for name, row in figures.items():
                rows[name].update(row)
        return rows


def report_with(tmp_path, original_ms: list[float], int8_ms: list[float]):
    tokenizer = make_bert_tokenizer(WORDS, tmp_path / "tok")
    clocks = {size: scripted(3, original=original_ms, int8=int8_ms) for size in (1, 16)}
    stages = {"original": nn.Linear(4, 4), "int8": nn.Linear(4, 4)}
    with torch.no_grad():
        stages["int8"].weight.zero_()
    report = build_report(stages, {"original": 400, "int8": 100}, FakeTask(tokenizer, clocks), repeats=10)
    write_report(report, tmp_path)
    return report, (tmp_path / "compression_report.md").read_text()


def test_a_steady_report_prints_speedups_without_comment(tmp_path):
    report, markdown = report_with(tmp_path, [40.0] * 10, [10.0] * 10)
    assert report["latency_reliable"] is True
    assert report["stages"]["int8"]["speedup_b1"] == pytest.approx(4.0)
    assert latency_note(report) is None
    assert "unreliable" not in markdown
    assert "| 4.00 | 4.00 |" in markdown  # speed-up b1, b16


def test_an_original_timed_on_a_busy_machine_taints_every_speedup(tmp_path):
    # The original's rounds on a busy machine: 464 ms while something else ran, then 20 ms; int8 steady at 5 ms.
    busy = [464.0] * 5 + [20.0] * 5
    report, markdown = report_with(tmp_path, busy, [5.0] * 10)
    original = report["stages"]["original"]
    assert report["latency_reliable"] is False
    assert any("drifted" in reason for reason in original["latency_unstable"])
    assert any("p90/p50" in reason for reason in original["latency_unstable"])
    assert report["stages"]["int8"]["latency_unstable"] == []
    assert "Latency figures are unreliable" in markdown and "every speed-up" in markdown
    int8_row = next(line for line in markdown.splitlines() if line.startswith("| int8 |"))
    assert int8_row.rstrip(" |").endswith("?")  # the big speed-up is marked, not printed without comment
    assert original["latency_b1_p90_ms"] > original["latency_b1_p50_ms"]  # the spread is in the figures


def test_an_unstable_stage_marks_only_its_own_speedup(tmp_path):
    report, markdown = report_with(tmp_path, [40.0] * 10, [10.0] * 9 + [90.0])
    assert report["stages"]["original"]["latency_unstable"] == []
    assert report["stages"]["int8"]["latency_unstable"] == ["b1 p90/p50 = 1.8", "b16 p90/p50 = 1.8"]
    assert "the speed-ups of these stages" in markdown
    original_row = next(line for line in markdown.splitlines() if line.startswith("| original |"))
    assert "?" not in original_row
