"""The study's file checks and its report, without training: unique names, the metric's direction, the notes a
reader needs (one seed, missing curves), labels that never overlap and a visible Pareto front."""

import itertools
import json

import pytest
import yaml

from hfopt.errors import InputError
from hfopt.study import load_study
from hfopt.study.report import write_report
from tests.testing_utils import ROOT, require_plots

BUNDLED = ROOT / "recipes" / "studies" / "sentiment_strategies.yaml"


def study_file(folder, variants=({"name": "a"}, {"name": "b"}), seeds=(1, 2), **extra):
    path = folder / "study.yaml"
    path.write_text(
        yaml.safe_dump({"recipe": "finetune_bert", "seeds": list(seeds), "variants": list(variants), **extra})
    )
    return path


@pytest.mark.parametrize(
    "variants, seeds, words",
    [
        (
            [{"name": "a"}, {"name": "a"}],
            [1],
            "variant names must be unique (ignoring case: each names a folder); repeated: a",
        ),
        ([{"name": "fast"}, {"name": "Fast"}], [1], "repeated: Fast, fast"),
        ([{"name": "a"}, {"name": ".."}], [1], "variant '..': a name of dots would name a folder outside"),
        ([{"name": "a"}], [42, 43, 42], "seeds must be unique (each names a run's folder); repeated: 42"),
    ],
)
def test_every_name_in_a_study_is_unique(tmp_path, variants, seeds, words):
    with pytest.raises(InputError) as caught:
        load_study(study_file(tmp_path, variants, seeds), check_flags=False)
    assert words in str(caught.value)


def fake_rows(study, values, seeds=None, runtime=10.0):
    """One complete row per (variant, seed), the metric's value given per variant (a list: one per seed)."""
    rows = []
    for variant in study.variants:
        for seed, value in zip(seeds or study.seeds, values[variant.name], strict=False):
            rows.append(
                {"variant": variant.name, "seed": seed, "status": "complete", "error": None, study.metric: value}
                | {"train_runtime": runtime + seed}
            )
    return rows


@pytest.mark.parametrize(
    "extra, metric, higher",
    [
        ({}, "eval_accuracy", True),
        ({"metric": "eval_loss"}, "eval_loss", False),  # the recipe's default direction was True
        ({"metric": "eval_perplexity"}, "eval_perplexity", False),
        ({"metric": "eval_f1"}, "eval_f1", True),
        ({"metric": "eval_custom", "greater_is_better": False}, "eval_custom", False),
        ({"metric": "eval_mse"}, "eval_mse", False),
        ({"metric": "eval_rmse"}, "eval_rmse", False),
        ({"metric": "eval_pearson"}, "eval_pearson", True),
    ],
)
def test_the_metric_direction_comes_from_the_metric_and_is_in_the_report(tmp_path, extra, metric, higher):
    study = load_study(study_file(tmp_path, **extra), check_flags=False)
    assert (study.metric, study.greater_is_better) == (metric, higher)
    rows = fake_rows(study, {"a": [2.0, 2.2], "b": [1.0, 1.2]})
    write_report(study, rows, tmp_path)
    assert json.loads((tmp_path / "study.json").read_text())["greater_is_better"] is higher
    assert f"{'Higher' if higher else 'Lower'} {metric} is better." in (tmp_path / "study.md").read_text()


def test_a_lower_is_better_metric_cannot_be_declared_higher(tmp_path):
    with pytest.raises(InputError, match="greater_is_better: true contradicts eval_loss, which is better when lower"):
        load_study(study_file(tmp_path, metric="eval_loss", greater_is_better=True), check_flags=False)


def test_a_metric_whose_name_says_no_direction_needs_one(tmp_path):
    """An unknown name was taken as higher-is-better: a study on eval_mse ranked its worst variant first."""
    with pytest.raises(InputError, match="metric 'eval_custom' does not say .* add greater_is_better"):
        load_study(study_file(tmp_path, metric="eval_custom"), check_flags=False)


def test_one_seed_says_its_deltas_have_no_noise_estimate(tmp_path):
    study = load_study(study_file(tmp_path, seeds=[1]), check_flags=False)
    write_report(study, fake_rows(study, {"a": [0.8], "b": [0.9]}), tmp_path)
    markdown = (tmp_path / "study.md").read_text()
    assert "One seed per variant: each Δ is the difference of two single runs, with no noise estimate" in markdown
    assert markdown.index("no noise estimate") < markdown.index("| variant |")  # above the printed table
    assert "| b | 0.9000 | +0.1000 |" in markdown
    # two seeds, but one variant has one finished run: its Δ is marked
    study = load_study(study_file(tmp_path, seeds=[1, 2]), check_flags=False)
    write_report(study, fake_rows(study, {"a": [0.8, 0.82], "b": [0.9]}), tmp_path)
    markdown = (tmp_path / "study.md").read_text()
    assert "| b | 0.9000 | +0.0900 (n=1) |" in markdown and "One seed per variant" not in markdown


def write_state(folder, history, global_step, logging_steps=5):
    folder.mkdir(parents=True, exist_ok=True)
    state = {"log_history": history, "global_step": global_step, "logging_steps": logging_steps}
    (folder / "trainer_state.json").write_text(json.dumps(state))


@require_plots
def test_curves_are_drawn_from_what_was_logged_and_a_missing_one_is_explained(tmp_path):
    """Fewer steps than logging_steps: no loss was logged, yet the eval curve is drawn and the report says why
    the loss curve is absent; with no log at all, the report says why there is no curves plot."""
    study = load_study(study_file(tmp_path, seeds=[1]), check_flags=False)
    for name in ("a", "b"):
        evals = [{"step": 2, "eval_accuracy": 0.6, "epoch": 1.0}, {"step": 3, "eval_accuracy": 0.7, "epoch": 2.0}]
        write_state(tmp_path / "runs" / name / "seed-1", [*evals, {"step": 3, "train_loss": 0.6}], global_step=3)
    write_report(study, fake_rows(study, {"a": [0.7], "b": [0.7]}), tmp_path)
    markdown = (tmp_path / "study.md").read_text()
    assert (tmp_path / "plots" / "curves.png").stat().st_size > 1000 and "plots/curves.png" in markdown
    assert "No training-loss curve for `a` (3 steps, logging_steps 5), `b` (3 steps, logging_steps 5)" in markdown

    for name in ("a", "b"):
        write_state(tmp_path / "runs" / name / "seed-1", [], global_step=0)
    (tmp_path / "plots" / "curves.png").unlink()
    write_report(study, fake_rows(study, {"a": [0.7], "b": [0.7]}), tmp_path)
    markdown = (tmp_path / "study.md").read_text()
    assert not (tmp_path / "plots" / "curves.png").exists() and "plots/curves.png" not in markdown
    assert "No curves plot: no run logged a training loss or eval_accuracy" in markdown


def bundled_summary(study, accuracies=None):
    """The 16 variants of the bundled study where they land on 2 CPU cores: most within a second of the
    baseline and a point of its accuracy."""
    times = [40, 40.5, 40.2, 40.1, 38, 39, 40, 45, 40.3, 41, 30, 40.4, 28, 60, 35, 55]
    accuracies = accuracies or [0.9, 0.905, 0.9, 0.895, 0.85, 0.9, 0.9, 0.9, 0.91, 0.9, 0.88, 0.9, 0.87, 0.92, 0.9, 0.9]
    return {
        v.name: {"train_runtime": {"mean": t, "std": 1.0, "n": 2}, "eval_accuracy": {"mean": a, "std": 0.01, "n": 2}}
        for v, t, a in zip(study.variants, times, accuracies, strict=True)
    }


@require_plots
@pytest.mark.parametrize("same_accuracy", [False, True], ids=["spread", "all_equal"])
def test_labels_of_the_bundled_study_never_overlap_and_the_pareto_front_is_drawn(same_accuracy):
    from hfopt.study.report import _pareto, metric_time_figure

    study = load_study(BUNDLED, check_flags=False)
    summary = bundled_summary(study, [0.9] * 16 if same_accuracy else None)
    fig = metric_time_figure(study, summary)
    ax, renderer = fig.axes[0], fig.canvas.get_renderer()
    names = [v.name for v in study.variants]
    labels = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts if t.get_text() in names}
    assert sorted(labels) == sorted(names)
    for (a, box_a), (b, box_b) in itertools.combinations(labels.items(), 2):
        assert not box_a.overlaps(box_b), f"labels {a} and {b} overlap"
    assert all(fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 for box in labels.values())

    points = [(s["train_runtime"]["mean"], s["eval_accuracy"]["mean"], n) for n, s in summary.items()]
    front = _pareto(points, higher=True)
    (line,) = [line for line in ax.get_lines() if line.get_label().startswith("Pareto front")]
    assert list(line.get_xdata()) == [t for t, _, _ in front] and line.get_marker() not in (None, "None", "")
    assert line.get_visible() and line.get_markersize() > 0
    if same_accuracy:  # the fastest variant is the whole front: one ringed point, still visible
        assert [n for _, _, n in front] == ["lora"]


def test_a_study_grows_by_seeds_and_variants_but_a_variant_brought_back_changed_is_a_difference(tmp_path):
    from hfopt.study.runner import merged_spec, spec_differences

    def spec(seeds, **variants):
        return {"recipe": "r", "seeds": seeds, "variants": {k: {"config": v} for k, v in variants.items()}}

    first = spec([1], a={"learning_rate": 0.1}, b={"learning_rate": 0.2})
    assert spec_differences(first, spec([1, 2], a={"learning_rate": 0.1}, b={"learning_rate": 0.2}, c={})) == []
    record = tmp_path / "study_spec.json"
    record.write_text(json.dumps(first))
    without_b = spec([1], a={"learning_rate": 0.1})
    assert spec_differences(first, without_b) == []
    kept = merged_spec(record, without_b)  # b's runs stay in the folder, and so does its record
    assert set(kept["variants"]) == {"a", "b"}
    differences = spec_differences(kept, spec([1], a={"learning_rate": 0.1}, b={"learning_rate": 0.3}))
    assert differences and "variant 'b'" in differences[0]
