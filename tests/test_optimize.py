"""`hfopt optimize`: the chosen model meets the budget and is the fastest trial that does; a student is distilled
once and reused; a search killed mid-trial resumes without redoing finished trials; an impossible budget exits 1
with one line and keeps the closest model; bad input is one line before any work."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

from hfopt.commands.optimize import main as optimize_main
from hfopt.errors import InputError
from hfopt.optimize import OptimizeConfig, optimize, parse_duration
from hfopt.pipeline import CompressionConfig
from tests.testing_utils import make_tiny_bert, one_error_line, run_hfopt, tiny_gpt2_model

TRAINING = ("student", "recover", "qat")
SPACE = {
    "student_layers": [None, 1],
    "prune_vocabulary": [False],
    "prune_heads": [0.0, 0.5],
    "prune_ffn": [0.0, 0.5],
    "recover": ["none", "finetune"],
    "quantize": ["none", "dynamic_int8"],
    "backend": ["pytorch"],
}
PIPELINE = {"student_epochs": 1, "student_learning_rate": 1e-3, "recover_learning_rate": 1e-3, "batch_size": 32,
            "latency_repeats": 3, "save_steps": 4}  # fmt: skip


def search_config(easy_task, **changes) -> OptimizeConfig:
    values = dict(train_file=str(easy_task["train"]), eval_file=str(easy_task["validation"]), max_drop=0.02,
                  max_trials=8, space=SPACE, pipeline=PIPELINE)  # fmt: skip
    return OptimizeConfig(**{**values, **changes})


def trained(rows) -> list[str]:
    """Every training stage the rows ran or resumed (an entry per training run)."""
    return [s for r in rows for s, how in r.get("stages", {}).items() if s in TRAINING and how in ("ran", "resumed")]


class KillOnTraining(TrainerCallback):
    """Ctrl-C in the `which`-th training run, once it has saved a checkpoint."""

    def __init__(self, which: int):
        self.which, self.runs = which, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.runs += 1

    def on_save(self, args, state, control, **kwargs):
        if self.runs == self.which:
            raise KeyboardInterrupt(f"stopped at step {state.global_step}")


@pytest.mark.slow
def test_the_chosen_model_meets_the_budget_and_is_the_fastest_trial_that_does(tiny_teacher, easy_task, tmp_path):
    out = tmp_path / "out"
    result = optimize(str(tiny_teacher), search_config(easy_task), out, progress=False)
    assert result.met and len(result.trials) == 8
    within = [r for r in result.trials if r["status"] == "complete" and r["loss"] <= 0.02]
    assert all(r["loss_se"] >= 0 and r["constraint"] == r["loss"] - 0.02 for r in within)
    assert result.chosen["loss"] <= 0.02
    assert result.chosen["speedup_b16"] == max(r["speedup_b16"] for r in within)
    # a student is distilled once, then reused by every trial that has it
    students = [r["stages"]["student"] for r in result.trials if "student" in r.get("stages", {})]
    assert students.count("ran") == 1 and len(students) >= 2
    # each model is built once: a repeated draw reuses its figures
    assert len(trained(result.trials)) == len(list((out / "stages").glob("*-*")))
    # the final report: the original and the chosen model, on the eval file (100 rows), not the selection data
    report = json.loads((out / "model" / "compression_report.json").read_text())
    assert list(report["stages"]) == ["original", f"trial {result.chosen['trial']}"] and report["eval_examples"] == 100
    remade = yaml.safe_load((out / "model" / "pipeline.yaml").read_text())
    assert remade["eval_file"] == str(easy_task["validation"])
    assert CompressionConfig(**remade).stage_names()  # hfopt compress --config pipeline.yaml remakes it
    trains = set(TRAINING) & set(CompressionConfig(**remade).stage_names())
    assert remade.get("stage_cache") == (str((out / "stages").resolve()) if trains else None)  # copied from there
    lines = (out / "trials.csv").read_text().splitlines()
    assert len(lines) == 9 and lines[0].startswith("trial,status,settings,metric,loss,loss_se")
    md = (out / "optimize.md").read_text()
    assert f"Chosen: trial {result.chosen['trial']}" in md and "Pareto front" in md
    assert (out / "optimize.png").stat().st_size > 0
    assert not (out / "closest_model").exists() and not (out / ".trial").exists()


class CountTraining(TrainerCallback):
    def __init__(self):
        self.runs = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.runs += 1


@pytest.mark.slow
def test_compress_remakes_a_trial_from_the_searchs_stages_without_training_again(tiny_teacher, easy_task, tmp_path):
    """A trial's pipeline with stage_cache: the search's stages folder: its student is copied (the same weights),
    not trained; without it, the student trains."""
    import filecmp

    from hfopt.pipeline import compress

    out = tmp_path / "out"
    space = {**SPACE, "student_layers": [1], "prune_heads": [0.5], "prune_ffn": [0.0], "recover": ["none"]}
    result = optimize(str(tiny_teacher), search_config(easy_task, space=space, max_trials=2, max_drop=1.0), out,
                      progress=False)  # fmt: skip
    row = next(r for r in result.trials if r["stages"].get("student") == "ran")
    values = {k: v for k, v in row["pipeline"].items() if v is not None} | {"eval_file": str(easy_task["validation"])}
    counter = CountTraining()
    remade = compress(str(tiny_teacher), CompressionConfig(**values, stage_cache=str(out / "stages")),
                      tmp_path / "remade", callbacks=[counter])  # fmt: skip
    assert counter.runs == 0 and remade.stage_log[:3] == ["ran", "copied", "ran"]  # original, student, prune_heads
    (cached,) = (out / "stages").glob("student-*")
    copied = tmp_path / "remade" / "stages" / "01_student"
    assert filecmp.cmp(cached / "model.safetensors", copied / "model.safetensors", shallow=False)
    assert json.loads((copied / "stage.json").read_text())["label"] == "student_1"
    compress(str(tiny_teacher), CompressionConfig(**values), tmp_path / "trained", callbacks=[counter])
    assert counter.runs == 1
    with pytest.raises(InputError, match="pipeline: stage_cache is what the search sets"):
        search_config(easy_task, pipeline={**PIPELINE, "stage_cache": str(out / "stages")})
    with pytest.raises(InputError, match="stage_cache: .*nowhere is not a folder"):
        CompressionConfig(**values, stage_cache=str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_a_trial_that_trained_a_stage_is_followed_by_its_models_other_deployments(tiny_teacher, easy_task, tmp_path):
    """Training takes minutes, a deployment seconds: once a trial trained a stage, the same model in each other
    deployment is tried next, before the sampler draws new training (here, without that, trial 1 would draw
    another student or pruning)."""
    space = {**SPACE, "student_layers": [1], "prune_heads": [0.0, 0.5], "prune_ffn": [0.0, 0.25, 0.5],
             "recover": ["none"], "quantize": ["none", "dynamic_int8", "dynamic_int8_embeddings"]}  # fmt: skip
    config = search_config(easy_task, space=space, max_trials=3, max_drop=0.5)
    result = optimize(str(tiny_teacher), config, tmp_path / "out", progress=False)
    first, *others = result.trials
    assert first["status"] == "complete" and first["stages"]["student"] == "ran"
    other = {k: v for k, v in first["params"].items() if k != "deployment"}
    assert [{k: v for k, v in r["params"].items() if k != "deployment"} for r in others] == [other, other]
    assert {r["params"]["deployment"] for r in result.trials} == {f"pytorch:{q}" for q in space["quantize"]}
    assert all(r["stages"]["student"] == "kept" and "same_as" not in r for r in others)  # the student reused
    assert len({r["size_bytes"] for r in result.trials}) == 3  # three models: float, int8, int8 with embeddings


@pytest.mark.slow
def test_a_search_stopped_before_queueing_a_models_deployments_queues_them_when_resumed(
    tiny_teacher, easy_task, tmp_path, monkeypatch
):
    """The search stops after trial 0 is in the journal but before its model's other deployments are queued: the
    resumed search queues them first (without that, trial 1 would draw another student or pruning)."""
    from hfopt.optimize import search

    space = {**SPACE, "student_layers": [1], "prune_heads": [0.0, 0.5], "prune_ffn": [0.0, 0.25, 0.5],
             "recover": ["none"], "quantize": ["none", "dynamic_int8", "dynamic_int8_embeddings"]}  # fmt: skip
    config = search_config(easy_task, space=space, max_trials=3, max_drop=0.5)
    queue = search._enqueue_deployments

    def stop(*args, **kwargs):
        raise KeyboardInterrupt("stopped before queueing")

    monkeypatch.setattr(search, "_enqueue_deployments", stop)
    with pytest.raises(KeyboardInterrupt):
        optimize(str(tiny_teacher), config, tmp_path / "out", progress=False)
    monkeypatch.setattr(search, "_enqueue_deployments", queue)
    result = optimize(str(tiny_teacher), config, tmp_path / "out", progress=False)
    first, *others = result.trials
    assert first["trial"] == 0 and first["stages"]["student"] == "ran" and len(others) == 2
    model = {k: v for k, v in first["params"].items() if k != "deployment"}
    assert all({k: v for k, v in r["params"].items() if k != "deployment"} == model for r in others)
    assert {r["params"]["deployment"] for r in result.trials} == {f"pytorch:{q}" for q in space["quantize"]}


def test_a_drops_standard_error_is_paired_row_by_row():
    from hfopt.metrics import paired_drop

    drop, error = paired_drop([1, 1, 1, 0], [1, 0, 1, 1])  # one row lost, one won: row differences 0, 1, 0, -1
    assert drop == 0.0 and error == pytest.approx((2 / 3) ** 0.5 / 2)
    assert paired_drop([1, 0, 1], [1, 0, 1]) == (0.0, 0.0)  # the same rows right: no noise at all
    with pytest.raises(ValueError, match="two rows or more"):
        paired_drop([1], [0])


def test_a_perplexity_changes_standard_error_is_paired_row_by_row():
    """Rows (summed token loss, tokens): the change is exp(D) - 1 for D the difference of the mean token losses,
    its error exp(D) times the ratio-of-sums error of D, by hand."""
    import math

    from hfopt.metrics import paired_perplexity_change

    reference, model = [(2.0, 1), (4.0, 2), (3.0, 1)], [(3.0, 1), (4.0, 2), (3.0, 1)]  # row 0 lost 1 nat
    change, error = paired_perplexity_change(reference, model)
    # D = 1 / 4 tokens; residuals d - D·n = (0.75, -0.5, -0.25); error of D = sqrt(3/2 · 0.875) / 4
    assert change == pytest.approx(math.exp(0.25) - 1)
    assert error == pytest.approx(math.exp(0.25) * math.sqrt(1.5 * 0.875) / 4)
    assert paired_perplexity_change(reference, reference) == (0.0, 0.0)
    # rows of equal length: D's error is the plain standard error of the mean row difference, over the tokens
    differences = np.array([0.5, -0.25, 1.0, 0.0, 0.75])
    change, error = paired_perplexity_change([(10.0, 4)] * 5, [(10.0 + d, 4) for d in differences])
    mean, spread = differences.mean() / 4, differences.std(ddof=1) / math.sqrt(5) / 4
    assert change == pytest.approx(math.exp(mean) - 1) and error == pytest.approx(math.exp(mean) * spread)
    with pytest.raises(ValueError, match="different tokens"):
        paired_perplexity_change(reference, [(3.0, 2), (4.0, 2), (3.0, 1)])


def test_the_standard_error_of_a_bleu_loss_is_a_paired_bootstrap():
    """BLEU from per-sentence statistics is sacrebleu's corpus BLEU; the bootstrap resamples both models' sentences
    alike, so two close systems have a smaller error of their difference than of either score."""
    import sacrebleu

    from hfopt.metrics import bleu_of_rows, paired_bleu_change

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    references = [" ".join(rng.choice(words, size=8)) for _ in range(60)]
    kept = rng.integers(2, 9, size=60)  # sentences easy and hard alike for both models: their scores move together
    original = [" ".join(r.split()[:k] + list(rng.choice(words, size=8 - k)))
                for r, k in zip(references, kept, strict=True)]  # fmt: skip
    trial = [o if i % 6 else " ".join(o.split()[:-2] + ["x", "y"]) for i, o in enumerate(original)]  # 1 in 6 worse
    stats = {n: np.array(sacrebleu.BLEU()._extract_corpus_statistics(h, [references]), dtype=float)
             for n, h in (("original", original), ("trial", trial))}  # fmt: skip
    assert bleu_of_rows(stats["trial"]) == pytest.approx(sacrebleu.corpus_bleu(trial, [references]).score)
    loss, error = paired_bleu_change(stats["original"], stats["trial"])
    assert loss == pytest.approx(
        sacrebleu.corpus_bleu(original, [references]).score - sacrebleu.corpus_bleu(trial, [references]).score
    )
    assert 0 < error < loss  # a real loss, a few errors wide
    # unpaired: each score bootstrapped on its own draws; the difference's error would be both errors together
    spread = {n: np.std([bleu_of_rows(s[i]) for i in rng.integers(0, 60, size=(500, 60))], ddof=1)
              for n, s in stats.items()}  # fmt: skip
    assert error < 0.5 * np.hypot(spread["original"], spread["trial"])
    assert paired_bleu_change(stats["trial"], stats["trial"]) == (0.0, 0.0)  # against itself: no spread at all
    with pytest.raises(ValueError, match="two rows or more"):
        paired_bleu_change(stats["original"][:1], stats["trial"][:1])
    # a trial's loss and its error in the budget's units: BLEU points, or a fraction of the original's BLEU
    import types

    from hfopt.optimize import trials

    setup = trials.Setup(**{f.name: None for f in dataclasses.fields(trials.Setup)})
    setup.__dict__.update(selection=types.SimpleNamespace(bleu_rows=lambda model: stats["trial"]),
                          original_rows=stats["original"], headline="bleu", higher_is_better=True)  # fmt: skip
    setup.original_selection = trials.metric_of_rows("bleu", stats["original"])
    for relative, scale in ((False, 1.0), (True, setup.original_selection)):
        setup.relative = relative
        value, scored_error = trials._scored(setup, model=None)
        assert value == pytest.approx(bleu_of_rows(stats["trial"]))
        assert setup.loss(setup.original_selection, value) == pytest.approx(loss / scale)
        assert scored_error == pytest.approx(error / scale)


def test_a_trials_perplexity_loss_has_its_standard_error_in_the_units_of_the_budget():
    """Relative budget: the error of the change, a fraction of the original's perplexity; absolute budget
    (perplexity points): that fraction times the original's perplexity."""
    import math
    import types

    from hfopt.metrics import paired_perplexity_change
    from hfopt.optimize import trials

    original, trial = np.array([(8.0, 4), (6.0, 3), (9.0, 4)]), np.array([(9.0, 4), (6.5, 3), (9.0, 4)])
    setup = trials.Setup(**{f.name: None for f in dataclasses.fields(trials.Setup)})
    setup.__dict__.update(selection=types.SimpleNamespace(row_losses=lambda model: trial), original_rows=original,
                          headline="perplexity", higher_is_better=False)  # fmt: skip
    setup.original_selection = trials.metric_of_rows("perplexity", original)
    assert setup.original_selection == pytest.approx(math.exp(23 / 11))
    change, error = paired_perplexity_change(original, trial)
    setup.relative = True
    value, relative_error = trials._scored(setup, model=None)
    assert value == pytest.approx(math.exp(24.5 / 11)) and relative_error == pytest.approx(error)
    assert setup.loss(setup.original_selection, value) == pytest.approx(change)
    setup.relative = False
    value, absolute_error = trials._scored(setup, model=None)
    assert absolute_error == pytest.approx(error * math.exp(23 / 11))
    assert setup.loss(setup.original_selection, value) == pytest.approx(change * math.exp(23 / 11))


def test_a_trials_accuracy_loss_has_its_paired_standard_error_and_a_choice_near_the_edge_says_so(tiny_bert, easy_task):
    """The loss of a model that answers 1 on every selection row, against an original right on every row: the
    share q of label-0 rows, with the standard error sqrt(q(1 - q) / (n - 1)). Chosen under a budget within one
    standard error of q, optimize.md says the budget may not hold on other data; under a wide budget it does not."""
    from hfopt.compression.tasks import load_task
    from hfopt.optimize import outputs, trials

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)  # its rows are read; it is not run
    selection = load_task("classification", model, AutoTokenizer.from_pretrained(tiny_bert),
                          str(easy_task["validation"]))  # fmt: skip
    n = len(selection.texts)
    q = sum(selection.labels[j] == 0 for j in selection.order) / n
    assert 0.2 < q < 0.8

    def says_one(**batch):
        return (torch.tensor([[0.0, 1.0]]).expand(len(batch["input_ids"]), 2),)  # (logits,): a model's tuple

    setup = trials.Setup(**{f.name: None for f in dataclasses.fields(trials.Setup)})
    setup.__dict__.update(selection=selection, original_rows=np.ones(n, dtype=bool), original_selection=1.0,
                          relative=False, higher_is_better=True, headline="accuracy")  # fmt: skip
    value, error = trials._scored(setup, says_one)
    assert value == pytest.approx(1 - q) and error == pytest.approx((q * (1 - q) / (n - 1)) ** 0.5)
    row = {"loss": setup.loss(1.0, value), "loss_se": error}
    setup.budget = q + error / 2
    assert "within one standard error of the budget" in outputs._margin_line(row, setup)
    setup.budget = q + 2 * error
    assert outputs._margin_line(row, setup) is None


def test_a_models_other_deployments_are_queued_once_and_none_that_trains(monkeypatch):
    """Only after a trial that trained a stage and lost at most twice the budget; QAT (a training run) is left to
    the sampler; a deployment already run or waiting is not queued again."""
    import optuna
    from optuna.trial import TrialState

    from hfopt.optimize import search, trials

    monkeypatch.setattr(trials, "trial_config", lambda setup, params: (None, None, json.dumps(params, sort_keys=True)))
    setup = type("Setup", (), {"budget": 0.01})()
    row = {"params": {"prune_heads": 0.5, "deployment": "pytorch:dynamic_int8"}, "stages": {"recover": "ran"},
           "status": "complete", "constraint": 0.005}  # fmt: skip
    deployments = ["pytorch:dynamic_int8", "pytorch:qat", "pytorch:dynamic_int8_embeddings", "onnx_int8"]
    ran = {"prune_heads": 0.5, "deployment": "pytorch:dynamic_int8_embeddings"}
    by_key = {json.dumps(p, sort_keys=True): {} for p in (row["params"], ran)}
    study = optuna.create_study()
    for _ in range(2):  # a second trial that trained the same model (resumed, say) queues nothing more
        search._enqueue_deployments(study, setup, row, deployments, by_key)
    waiting = [t.system_attrs["fixed_params"] for t in study.get_trials(states=(TrialState.WAITING,))]
    assert waiting == [{"prune_heads": 0.5, "deployment": "onnx_int8"}]
    failed = optuna.create_study()  # a deployment that failed before (it may crash the process) is not queued
    trial = failed.ask()
    for name, value in {"prune_heads": 0.5, "deployment": "onnx_int8"}.items():
        trial.suggest_categorical(name, [value])
    trial.set_user_attr("row", {"params": trial.params, "status": "failed", "error": "RuntimeError: ..."})
    failed.tell(trial, state=TrialState.FAIL)
    search._enqueue_deployments(failed, setup, row, deployments, by_key)
    assert not failed.get_trials(states=(TrialState.WAITING,))
    unstarted = optuna.create_study()  # one that did not start (no time left for its training) fails nothing
    trial = unstarted.ask()
    for name, value in {"prune_heads": 0.5, "deployment": "onnx_int8"}.items():
        trial.suggest_categorical(name, [value])
    unstarted.tell(trial, state=TrialState.FAIL)
    search._enqueue_deployments(unstarted, setup, row, deployments, by_key)
    assert len(unstarted.get_trials(states=(TrialState.WAITING,))) == 1
    for changes in ({"stages": {"recover": "kept"}}, {"constraint": 0.011}, {"status": "screened out"}):
        other = optuna.create_study()
        search._enqueue_deployments(other, setup, {**row, **changes}, deployments, {})
        assert not other.trials, changes


@pytest.mark.parametrize(
    "space, trains, distils",
    [
        ({"student_layers": [None, 2]}, {"student"}, {"student"}),
        ({"prune_heads": [0.0, 0.5], "recover": ["none", "distill"]}, {"recover"}, {"recover"}),
        ({"prune_heads": [0.5], "recover": ["none", "finetune"]}, {"recover"}, set()),  # recovery without a teacher
        ({"prune_heads": [0.0], "prune_ffn": [0.0], "recover": ["distill"]}, set(), set()),  # nothing pruned
        ({"prune_ffn": [0.5], "recover": ["none"]}, set(), set()),
        ({"quantize": ["qat"], "backend": ["pytorch"]}, {"qat"}, {"qat"}),
        ({"quantize": ["qat"], "backend": ["onnx_int8"]}, set(), set()),  # ONNX Runtime quantizes itself: no QAT
    ],
)
def test_a_space_trains_with_a_student_recovery_after_pruning_or_qat(space, trains, distils):
    from hfopt.optimize.search import _space_training

    nothing = {"student_layers": [None], "prune_vocabulary": [False], "prune_heads": [0.0], "prune_ffn": [0.0],
               "recover": ["none"], "quantize": ["none"], "backend": ["pytorch"]}  # fmt: skip
    assert _space_training({**nothing, **space}) == trains
    assert _space_training({**nothing, **space}, distilling=True) == distils


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_without_redoing_finished_trials(tiny_teacher, easy_task, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        optimize(str(tiny_teacher), search_config(easy_task), out, callbacks=[KillOnTraining(2)], progress=False)
    before = json.loads((out / "trials.json").read_text())
    assert before and all(r["status"] == "complete" for r in before)
    result = optimize(str(tiny_teacher), search_config(easy_task), out, progress=False)
    complete = [r for r in result.trials if r["status"] == "complete"]
    assert len(complete) == 8
    after = {r["trial"]: r for r in result.trials}
    for row in before:  # finished trials are kept as they were: not run again
        assert after[row["trial"]]["metric"] == row["metric"] and after[row["trial"]]["stages"] == row["stages"]
    # every training stage trained once over both runs; the one killed midway resumed from its checkpoint
    runs = trained(before) + trained([r for r in result.trials if r["trial"] not in {b["trial"] for b in before}])
    assert len(runs) == len(list((out / "stages").glob("*-*")))
    assert sum(how == "resumed" for r in result.trials for how in r.get("stages", {}).values()) == 1
    # another search (another budget) in the folder that holds this one's result: refused, the result kept
    with pytest.raises(InputError, match="holds the model of a search with other settings"):
        optimize(str(tiny_teacher), search_config(easy_task, max_drop=0.05), out, progress=False)
    assert (out / "model" / "compression_report.json").is_file()


@pytest.mark.slow
def test_a_search_stopped_before_keeping_a_trials_model_makes_it_again(tiny_teacher, easy_task, tmp_path, monkeypatch):
    """A trial is told to the journal, then its model is kept: stopped in between, the rerun keeps that trial's
    model (made again from its kept stages), not an older one, and runs no trial twice."""
    from hfopt.optimize import search

    keep, stopped = search._keep_candidate, {}

    def stop_before_keeping(setup, row, output, state, config):
        if search._slot(row, state, config) == "best":  # the first model within the budget
            stopped.update(row)
            raise KeyboardInterrupt("stopped after the trial was told, before its model was kept")
        keep(setup, row, output, state, config)

    monkeypatch.setattr(search, "_keep_candidate", stop_before_keeping)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        optimize(str(tiny_teacher), search_config(easy_task), out, progress=False)
    monkeypatch.setattr(search, "_keep_candidate", keep)
    ended = stopped["trial"] + 1  # trials 0..k ended, k told but not kept
    result = optimize(str(tiny_teacher), search_config(easy_task, max_trials=ended), out, progress=False)
    assert len(result.trials) == ended and result.met and result.chosen["trial"] == stopped["trial"]
    report = json.loads((out / "model" / "compression_report.json").read_text())
    assert report["optimize"]["trial"] == stopped["trial"]
    assert report["stages"][f"trial {stopped['trial']}"]["size_bytes"] == stopped["size_bytes"]  # its model


def test_a_local_tokenizer_counts_by_content_wherever_it_is_named_from(tiny_bert, tmp_path, monkeypatch):
    """A search's stages and a pipeline.yaml that names the tokenizer by absolute path share one fingerprint."""
    import shutil

    from hfopt.pipeline.fingerprint import pipeline_source

    tokenizer = shutil.copytree(tiny_bert, tmp_path / "tokenizer")
    monkeypatch.chdir(tmp_path)
    named = pipeline_source(str(tiny_bert), "tokenizer")
    assert named == pipeline_source(str(tiny_bert), str(tokenizer.resolve()))
    assert named != pipeline_source(str(tiny_bert), None)
    (tokenizer / "tokenizer_config.json").write_text((tokenizer / "tokenizer_config.json").read_text() + "\n")
    assert pipeline_source(str(tiny_bert), "tokenizer") != named  # another tokenizer under the same name


def stage_record(folder, stage: str, seconds: float, epochs: float = 1, resumed_from=None) -> None:
    """A training stage's record on disk (what `StageCache` keeps beside its model), with a pace of its own."""
    folder.mkdir(parents=True)
    training = {"epochs": epochs, "resumed_from": resumed_from}
    record = {"fingerprint": folder.name.split("-")[-1], "stage": stage, "training": training, "seconds": seconds}
    (folder / "stage.json").write_text(json.dumps(record))


def test_the_pace_of_training_is_the_slowest_epoch_of_the_stages_trained_from_the_start(tmp_path):
    """The slowest, so that a search that refuses trials by it ends within its time budget."""
    from hfopt.pipeline.cache import StageCache

    stage_record(tmp_path / "student-a", "student", seconds=100, epochs=2)
    stage_record(tmp_path / "student-b", "student", seconds=90, epochs=3)
    stage_record(tmp_path / "student-f", "student", seconds=80, epochs=2)
    stage_record(tmp_path / "student-c", "student", seconds=5, epochs=2, resumed_from="checkpoint-40")  # a part
    stage_record(tmp_path / "recover-d", "recover", seconds=30)
    (tmp_path / "recover-e").mkdir()
    (tmp_path / "recover-e" / "stage.json").write_text("{")  # written by another version, or broken
    assert StageCache(tmp_path, "m", "s").seconds_per_epoch() == {"student": 50.0, "recover": 30.0}


def test_a_stage_to_train_counts_what_its_checkpoint_has_not_done(easy_task, tmp_path):
    from hfopt.pipeline.cache import StageCache
    from hfopt.pipeline.stages import TRAINING_DIR

    cache = StageCache(tmp_path, "teacher", "source")
    config = CompressionConfig(student_layers=[1], prune_heads=0.5, recover="finetune", importance_file=str(
        easy_task["train"]), train_file=str(easy_task["train"]), eval_file=str(easy_task["validation"]))  # fmt: skip
    plan = cache.plan(config)
    assert cache.to_train(config) == {"student": 1.0, "recover": 1.0}
    checkpoint = tmp_path / TRAINING_DIR / f"student-{plan['student']}" / "checkpoint-30"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 30, "max_steps": 40}))
    assert cache.to_train(config) == {"student": 0.25, "recover": 1.0}
    stage_record(tmp_path / f"student-{plan['student']}", "student", seconds=10)  # the student on disk
    assert cache.to_train(config) == {"recover": 1.0}


@pytest.mark.slow
def test_a_trial_whose_training_would_outlast_the_time_left_does_not_start(tiny_teacher, easy_task, tmp_path):
    """A budget stops new trials; a trial that would train past it does not start either (its stages' epochs at
    the pace of the stages trained so far): the search draws on (trials that train nothing run) until the draws
    keep not fitting, and the refused trial runs first when it resumes."""
    from optuna.trial import TrialState

    from hfopt.optimize.search import JOURNAL, _open_study

    out = tmp_path / "out"
    space = {**SPACE, "student_layers": [1], "prune_ffn": [0.0], "recover": ["finetune"], "quantize": ["none"]}
    config = search_config(easy_task, space=space, time_budget="30m", max_trials=None)
    stage_record(out / "stages" / "student-fast", "student", seconds=1)  # the pace the search goes by: a student
    stage_record(out / "stages" / "recover-slow", "recover", seconds=3600)  # trains in a second, recovery an hour
    result = optimize(str(tiny_teacher), config, out, progress=False)
    assert result.trials and trained(result.trials) == ["student"]  # no recovery started
    assert all(row["params"]["prune_heads"] == 0.0 for row in result.trials)  # nothing pruned: nothing to recover
    study = _open_study(out, json.loads((out / "optimize_state.json").read_text())["study"], config, True)
    refused = [t for t in study.trials if t.state == TrialState.FAIL and "row" not in t.user_attrs]
    assert refused and all(t.params["prune_heads"] == 0.5 for t in refused)
    assert max(row["trial"] for row in result.trials) > refused[0].number  # it drew on after the first refusal
    waiting = [t.system_attrs["fixed_params"] for t in study.get_trials(states=(TrialState.WAITING,))]
    assert waiting == [refused[0].params]  # asked again once, however often drawn
    assert (out / JOURNAL).is_file()
    (out / "stages" / "recover-slow" / "stage.json").unlink()  # recovery as fast as the student: it fits
    more = dataclasses.replace(config, max_trials=len(result.trials) + 2)
    resumed = optimize(str(tiny_teacher), more, out, progress=False)
    first = resumed.trials[len(result.trials)]
    assert first["params"] == waiting[0] and first["stages"]["recover"] == "ran"
    assert len(resumed.trials) == len(result.trials) + 2


class FailTraining(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        raise RuntimeError("a stage that cannot train")


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_search_goes_on(tiny_teacher, easy_task, tmp_path):
    result = optimize(str(tiny_teacher), search_config(easy_task), tmp_path / "out", callbacks=[FailTraining()],
                      progress=False)  # fmt: skip
    failed = [r for r in result.trials if r["status"] == "failed"]
    assert failed and all("RuntimeError: a stage that cannot train" in r["error"] for r in failed)
    assert all(r["status"] == "complete" for r in result.trials if r not in failed) and len(result.trials) == 8
    # the trials that train failed; the others were measured, and the choice is among them
    assert result.met and not any(s in TRAINING for s in result.chosen["stages"])
    assert not list((tmp_path / "out" / "stages").glob("*-*"))  # nothing half-trained kept as a stage


@pytest.mark.slow
def test_an_impossible_budget_exits_1_with_one_line_and_keeps_the_closest_model(tiny_teacher, easy_task, tmp_path):
    harsh = {"student_layers": [None], "prune_vocabulary": [False], "prune_heads": [0.75], "prune_ffn": [0.9],
             "prune_magnitude": [0.95], "recover": ["none"], "quantize": ["dynamic_int8"],
             "backend": ["pytorch"]}  # fmt: skip
    (tmp_path / "search.yaml").write_text(yaml.safe_dump({"space": harsh, "pipeline": {"latency_repeats": 3}}))
    out = tmp_path / "out"
    result = run_hfopt(
        "optimize", tiny_teacher, "--config", tmp_path / "search.yaml", "--train_file", easy_task["train"],
        "--eval_file", easy_task["validation"], "--max_drop", "0", "--max_trials", "2", "--output_dir", out,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    line = one_error_line(result)
    assert line.startswith("error: no trial met the budget (max_drop 0)") and "the closest, trial 0, lost" in line
    assert (out / "closest_model" / "compression_report.json").is_file() and not (out / "model").exists()
    assert "No trial met the budget; the closest: trial 0" in (out / "optimize.md").read_text()
    rows = json.loads((out / "trials.json").read_text())
    assert rows[1]["same_as"] == 0 and trained(rows) == []  # the same draw twice: measured once


def relabelled(model_dir, folder, id2label: dict):
    """A copy of the model in `model_dir` (weights and tokenizer) whose classes are named `id2label`."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    model.config.id2label = {int(k): v for k, v in id2label.items()}
    model.config.label2id = {v: int(k) for k, v in id2label.items()}
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_teacher_in_pipeline_teaches_the_trials_that_distil_and_no_other(
    tiny_teacher, tiny_bert, easy_task, tmp_path
):
    """`pipeline: teacher` is for the stages that distil, which the trials draw: a trial without one is built
    without it (a pipeline refuses a teacher that nothing learns from), a student learns from it."""
    from safetensors.torch import load_file

    teacher = relabelled(tiny_bert, tmp_path / "teacher", AutoConfig.from_pretrained(tiny_teacher).id2label)
    space = {**SPACE, "prune_heads": [0.0], "prune_ffn": [0.0], "recover": ["none"], "quantize": ["none"]}
    config = search_config(easy_task, space=space, max_trials=6, pipeline={**PIPELINE, "teacher": str(teacher)})
    result = optimize(str(tiny_teacher), config, tmp_path / "out", progress=False)
    rows = [r for r in result.trials if r["status"] != "failed" and "same_as" not in r]
    assert {bool(r["params"]["student_layers"]) for r in rows} == {True, False}, rows
    for row in rows:
        assert row["pipeline"].get("teacher") == (str(teacher) if row["params"]["student_layers"] else None)
    # the student learnt from the untrained teacher: the same search distilling from the model (fine-tuned)
    # makes another student
    optimize(str(tiny_teacher), search_config(easy_task, space=space, max_trials=6), tmp_path / "default",
             progress=False)  # fmt: skip
    ours, default = (load_file(next((tmp_path / o / "stages").glob("student-*")) / "model.safetensors")
                     for o in ("out", "default"))  # fmt: skip
    assert ours.keys() == default.keys()
    assert any(not torch.equal(ours[k], default[k]) for k in ours)


def test_a_teacher_of_another_tokenizer_or_classes_or_in_the_output_is_one_line_before_any_work(
    tiny_bert, easy_task, tmp_path, capsys
):
    other = make_tiny_bert(tmp_path / "other", words=["alpha", "beta", "gamma", "delta"])
    (tmp_path / "search.yaml").write_text(yaml.safe_dump({"pipeline": {"teacher": str(other)}}))
    code, line = run_optimize(capsys, tiny_bert, "--train_file", easy_task["train"], "--eval_file",
                              easy_task["validation"], "--max_drop", "0.01", "--max_trials", "2", "--config",
                              tmp_path / "search.yaml", "--output_dir", tmp_path / "out")  # fmt: skip
    assert code == 2 and f"teacher {other}: its tokenizer differs" in line
    assert not (tmp_path / "out").exists()
    # a teacher of other classes
    (tmp_path / "labels.yaml").write_text(yaml.safe_dump({"pipeline": {"teacher": str(tmp_path / "named")}}))
    relabelled(tiny_bert, tmp_path / "named", {0: "negative", 1: "positive"})
    code, line = run_optimize(capsys, tiny_bert, "--train_file", easy_task["train"], "--eval_file",
                              easy_task["validation"], "--max_drop", "0.01", "--max_trials", "2", "--config",
                              tmp_path / "labels.yaml", "--output_dir", tmp_path / "out")  # fmt: skip
    assert code == 2 and "teacher and student label spaces differ" in line
    assert not (tmp_path / "out").exists()
    # hidden states matched with a teacher of another width
    wide = make_tiny_bert(tmp_path / "wide", hidden_size=48)
    (tmp_path / "wide.yaml").write_text(yaml.safe_dump({"pipeline": {"teacher": str(wide), "hidden_loss_weight": 1}}))
    code, line = run_optimize(capsys, tiny_bert, "--train_file", easy_task["train"], "--eval_file",
                              easy_task["validation"], "--max_drop", "0.01", "--max_trials", "2", "--config",
                              tmp_path / "wide.yaml", "--output_dir", tmp_path / "out")  # fmt: skip
    assert code == 2 and f"hidden_loss_weight matches hidden states of one size: teacher {wide} has 48" in line
    assert not (tmp_path / "out").exists()
    # a search writing into its teacher's folder
    code, line = run_optimize(capsys, tiny_bert, "--train_file", easy_task["train"], "--eval_file",
                              easy_task["validation"], "--max_drop", "0.01", "--max_trials", "2", "--config",
                              tmp_path / "search.yaml", "--output_dir", other / "search")  # fmt: skip
    assert code == 2 and f"lies inside pipeline: teacher {other}" in line
    assert not (other / "search").exists()


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    tiny_gpt2_model().save_pretrained(folder)
    return folder


def run_optimize(capsys, *args) -> tuple[int, str]:
    code = optimize_main([str(a) for a in args])
    return code, capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--max_drop", "-0.1"], "max_drop must be a number ≥ 0"),
        (["--max_drop", "0.01", "--objective", "fastest"], "invalid choice: 'fastest'"),
        (["--max_drop", "0.01", "--max_relative_drop", "0.03"], "give one budget"),
        ([], "give a budget"),
        (["--max_drop", "0.01", "--selection_file", "EVAL"], "the final report must be made on data the search never"),
        (["--max_drop", "0.01", "--selection_file", "TRAIN"], "would decide on rows its students and recovery"),
        (["--max_drop", "0.01", "--time_budget", "soon"], "time_budget 'soon' is not a duration"),
        (
            ["--max_drop", "0.01", "--config", "TYPO"],
            "space: unknown setting 'prune_head' (did you mean 'prune_heads'?)",
        ),
        (["--max_drop", "0.01", "--config", "SEARCHED"], "pipeline: quantize is what the search sets"),
        (
            ["--max_drop", "0.01", "--config", "UNTAUGHT"],
            "pipeline: hidden_loss_weight is for the trials that distil, and the space has none",
        ),
        (
            ["--max_drop", "0.01", "--config", "UNTRAINED"],
            "pipeline: augment_deletion_prob is for the trials that train, and the space has none",
        ),
        (
            ["--max_drop", "0.01", "--config", "NO_STUDENT"],
            "pipeline: augment_stages lists student, which no trial of the space trains",
        ),
    ],
)
def test_bad_input_is_one_line_before_any_work(tiny_bert, easy_task, tmp_path, capsys, extra, words):
    (tmp_path / "typo.yaml").write_text("space:\n  prune_head: [0.5]\n")
    (tmp_path / "searched.yaml").write_text("pipeline:\n  quantize: dynamic_int8\n")
    untaught = {"space": {"student_layers": [None], "recover": ["none", "finetune"], "quantize": ["dynamic_int8"]},
                "pipeline": {"hidden_loss_weight": 1.0}}  # fmt: skip
    (tmp_path / "untaught.yaml").write_text(yaml.safe_dump(untaught))
    untrained = {"space": {"student_layers": [None], "prune_heads": [0.0, 0.5], "recover": ["none"],
                           "quantize": ["dynamic_int8", "none"]},
                 "pipeline": {"augment_deletion_prob": 0.1}}  # fmt: skip
    (tmp_path / "untrained.yaml").write_text(yaml.safe_dump(untrained))
    no_student = {"space": {"student_layers": [None], "prune_heads": [0.5], "recover": ["distill"]},
                  "pipeline": {"augment_mask_prob": 0.1, "augment_stages": ["student"]}}  # fmt: skip
    (tmp_path / "no_student.yaml").write_text(yaml.safe_dump(no_student))
    files = {"EVAL": easy_task["validation"], "TRAIN": easy_task["train"], "TYPO": tmp_path / "typo.yaml",
             "SEARCHED": tmp_path / "searched.yaml", "UNTAUGHT": tmp_path / "untaught.yaml",
             "UNTRAINED": tmp_path / "untrained.yaml", "NO_STUDENT": tmp_path / "no_student.yaml"}  # fmt: skip
    extra = [files.get(a, a) for a in extra]
    out = tmp_path / "out"
    code, line = run_optimize(capsys, tiny_bert, "--train_file", easy_task["train"], "--eval_file",
                              easy_task["validation"], "--max_trials", "3", "--output_dir", out, *extra)  # fmt: skip
    assert code == 2 and words in line
    assert not out.exists()


def test_mask_augmentation_without_a_mask_token_is_one_line_before_any_work(easy_task, tmp_path, capsys):
    """pipeline: augment_mask_prob with a tokenizer that has no mask token: refused by hfopt optimize and by hfopt
    compress before any work (not a failed training stage in every trial that trains)."""
    from hfopt.pipeline import compress

    model = make_tiny_bert(tmp_path / "model")
    settings_file = model / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text())
    settings.pop("mask_token")
    settings_file.write_text(json.dumps({**settings, "tokenizer_class": "PreTrainedTokenizerFast"}))
    (tmp_path / "masked.yaml").write_text("pipeline:\n  augment_mask_prob: 0.1\n")
    words = "augment_mask_prob needs a tokenizer with a mask token; this model's has none"
    code, line = run_optimize(capsys, model, "--train_file", easy_task["train"], "--eval_file", easy_task["validation"],
                              "--max_drop", "0.01", "--max_trials", "2", "--config", tmp_path / "masked.yaml",
                              "--output_dir", tmp_path / "out")  # fmt: skip
    assert code == 2 and words in line and not (tmp_path / "out").exists()
    config = CompressionConfig(eval_file=str(easy_task["validation"]), train_file=str(easy_task["train"]),
                               student_layers=[1], augment_mask_prob=0.1)  # fmt: skip
    with pytest.raises(InputError, match=words):
        compress(str(model), config, tmp_path / "compressed")
    assert not (tmp_path / "compressed").exists()


def test_a_search_space_the_task_cannot_do_is_one_line_before_any_work(tiny_gpt2, tmp_path, capsys):
    for name, text in (("train.txt", "the cat sat\n" * 50), ("dev.txt", "a dog ran\n" * 20)):
        (tmp_path / name).write_text(text)
    (tmp_path / "vocab.yaml").write_text("space:\n  prune_vocabulary: [false, true]\n")
    (tmp_path / "deep.yaml").write_text("space:\n  student_layers: [null, 2]\n")
    common = (tiny_gpt2, "--train_file", tmp_path / "train.txt", "--eval_file", tmp_path / "dev.txt",
              "--max_relative_drop", "0.03", "--max_trials", "2", "--output_dir", tmp_path / "out")  # fmt: skip
    code, line = run_optimize(capsys, *common, "--config", tmp_path / "vocab.yaml")
    assert code == 2 and "prune_vocabulary is for classification models; this one is causal_lm" in line
    code, line = run_optimize(capsys, *common, "--config", tmp_path / "deep.yaml")
    assert code == 2 and "student_layers 2 is not fewer than the model's 2 blocks" in line
    assert not (tmp_path / "out").exists()


def test_a_resumed_search_draws_other_trials_than_its_first_run(easy_task, tmp_path):
    """TPE starts with random draws: a resumed search seeded as its first run would draw that run's first trials
    again, repeats that count as trials and try nothing new."""
    from hfopt.optimize.search import _open_study

    config, choices = search_config(easy_task), {"a": list(range(10)), "b": list(range(10))}

    def draw(study, n: int) -> list[dict]:
        drawn = []
        for _ in range(n):
            trial = study.ask()
            drawn.append({name: trial.suggest_categorical(name, values) for name, values in choices.items()})
            trial.set_user_attr("constraint", -1.0)
            study.tell(trial, 1.0)
        return drawn

    first = draw(_open_study(tmp_path, "search", config, True), 3)
    resumed = draw(_open_study(tmp_path, "search", config, True), 3)
    assert resumed != first and len(_open_study(tmp_path, "search", config, True).trials) == 6


def test_a_trial_running_each_time_its_search_stopped_is_failed_after_three_stops(easy_task, tmp_path):
    """A trial the process dies in (killed for memory) runs again first on the rerun, but not forever: the third
    time the search stopped during it, it is recorded as failed and the search goes on."""
    from hfopt.optimize.search import _ended, _open_study

    config = search_config(easy_task)
    for _ in range(3):  # each time: the trial asked first, then the process dies (the trial left RUNNING)
        study = _open_study(tmp_path, "search", config, True)
        study.ask().suggest_categorical("student_layers", [None, 1])
    study = _open_study(tmp_path, "search", config, True)
    ended = [t.user_attrs["row"] for t in _ended(study)]
    assert len(ended) == 1 and ended[0]["status"] == "failed" and "stopped 3 times" in ended[0]["error"]
    from optuna.trial import TrialState

    assert not study.get_trials(states=(TrialState.WAITING,))  # not asked again: the next trial is a new draw


def test_another_searchs_half_swapped_kept_model_is_not_taken_for_this_ones(tmp_path):
    """A search stopped between the two renames of keeping a model leaves `.best.old`; a search with other settings
    in that folder starts without it (else it would be restored as this search's best trial)."""
    from hfopt.optimize.outputs import CANDIDATES, TRIAL_FILE
    from hfopt.optimize.search import STATE_FILE, _read_state

    (tmp_path / STATE_FILE).write_text(json.dumps({"elapsed": 60.0, "study": "optimize-other"}))
    aside = tmp_path / (CANDIDATES["best"] + ".old")
    aside.mkdir()
    (aside / TRIAL_FILE).write_text(json.dumps({"trial": 3, "status": "complete"}))
    state = _read_state(tmp_path, "optimize-this")
    assert state == {"elapsed": 0.0, "best": None, "closest": None} and not aside.exists()


def test_screening_under_a_relative_budget_allows_the_noise_of_the_rows_relative_too():
    """Under --max_relative_drop the loss is relative to the original's metric: so is the rows' standard error.
    100 screening rows of a task the original gets half right: 10 points fewer is 1.4 standard errors, noise."""
    from types import SimpleNamespace

    from hfopt.optimize.trials import _screen_limit

    setup = SimpleNamespace(headline="accuracy", screen=SimpleNamespace(texts=["a phrase"] * 100), budget=0.01,
                            relative=True, original_screen=0.5)  # fmt: skip
    relative_loss = (0.5 - 0.4) / 0.5
    assert _screen_limit(setup, 0.4) > relative_loss  # not screened out


def test_a_table_sorted_by_label_is_screened_on_a_sample_of_both_labels(tmp_path):
    """Screening scores a trial on part of the selection rows: a seeded sample of the rows the search decides on,
    not the first ones (all of one label in a sorted file); the same sample on a rerun. A text runs on: its start."""
    from hfopt.data.files import load_data_file
    from hfopt.optimize.selection import screening_file

    sorted_rows = tmp_path / "selection.tsv"
    lines = [f"phrase {i}\t{int(i >= 60)}" for i in range(80)]  # 60 negatives, then 20 positives
    sorted_rows.write_text("sentence\tlabel\n" + "\n".join(lines) + "\n", encoding="utf-8")
    folder = tmp_path / "data"
    first = load_data_file(screening_file(str(sorted_rows), 16, 70, 42, "classification", folder), "s", [".jsonl"])
    sentences = first["sentence"]
    assert len(sentences) == 16 and set(first["label"]) == {0, 1}
    assert all(int(s.split()[1]) < 70 for s in sentences)  # only rows the search decides on
    again = load_data_file(screening_file(str(sorted_rows), 16, 70, 42, "classification", folder), "s", [".jsonl"])
    assert again["sentence"] == sentences
    text = tmp_path / "selection.txt"
    text.write_text("To be, or not to be.\n", encoding="utf-8")
    assert screening_file(str(text), 16, 70, 42, "causal_lm", folder) == str(text)


@pytest.mark.parametrize("text, seconds", [("90m", 5400), ("1h30m", 5400), ("45s", 45), ("2h", 7200), ("600", 600)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.slow
def test_a_student_of_named_teacher_blocks_starts_from_those_blocks(easy_task, tmp_path):
    """space: student_layers [[2, 0]]: a 2-block student whose first block starts as the teacher's block 2 and
    its second as block 0 (two evenly spaced blocks of three would be 0 and 2, in that order)."""
    from safetensors.torch import load_file

    teacher = make_tiny_bert(tmp_path / "teacher", num_hidden_layers=3)
    space = {**SPACE, "student_layers": [[2, 0]], "prune_heads": [0.0], "prune_ffn": [0.0], "recover": ["none"],
             "quantize": ["none"]}  # fmt: skip
    out = tmp_path / "out"
    result = optimize(str(teacher), search_config(easy_task, space=space, max_trials=1, max_drop=1.0), out,
                      progress=False)  # fmt: skip
    (row,) = result.trials
    assert row["params"]["student_layers"] == "2,0" and row["pipeline"]["student_layers"] == [2, 0]
    assert "student blocks 2,0" in (out / "optimize.md").read_text()
    (stage,) = (out / "stages").glob("student-*")
    student, original = load_file(stage / "model.safetensors"), load_file(teacher / "model.safetensors")
    key = "bert.encoder.layer.{}.attention.self.query.weight"

    def distance(s: int, t: int) -> float:  # the trained student block s from the teacher's block t
        return float((student[key.format(s)] - original[key.format(t)]).norm())

    assert distance(0, 2) < distance(0, 0) and distance(1, 0) < distance(1, 2)


@pytest.mark.parametrize(
    "choice, words",
    [
        ([5], "lists of two or more distinct teacher blocks (0-based, e.g. [0, 2, 5]) or null, got [5]"),
        ([0, 0], "lists of two or more distinct"),
        ([0, 2.5], "lists of two or more distinct"),
        (True, "got True"),
        ([0, 6], "student_layers [0, 6] names block 6; the model's blocks are 0 to 5"),
        ([0, 1, 2, 3, 4, 5], "student_layers [0, 1, 2, 3, 4, 5] is not fewer than the model's 6 blocks"),
        (6, "student_layers 6 is not fewer than the model's 6 blocks"),
    ],
)
def test_students_the_model_cannot_give_are_refused(choice, words):
    from hfopt.optimize import SearchSpace

    with pytest.raises(InputError) as error:
        SearchSpace(student_layers=[3, choice]).resolved("classification", num_layers=6, onnx=False)
    assert words in str(error.value)
    assert SearchSpace(student_layers=[None, 3, [0, 2, 5], "1,3,5"]).student_layers == [None, 3, "0,2,5", "1,3,5"]


def test_a_list_of_the_blocks_a_count_makes_is_that_count():
    """[0, 2, 4] of a 6-block model is the student `3` makes (student_from_teacher's default): one choice, so the
    same student is not distilled twice under two names."""
    from hfopt.distillation import even_blocks
    from hfopt.optimize import SearchSpace

    space = SearchSpace(student_layers=[3, [0, 2, 4], [0, 2, 5], None, [0, 2, 3, 4]])
    assert space.resolved("classification", num_layers=6, onnx=False)["student_layers"] == [3, "0,2,5", None, 4]
    assert even_blocks(3, 6) == [0, 2, 4] and even_blocks(4, 6) == [0, 2, 3, 4]


def test_augmentation_goes_to_the_trials_that_train():
    from hfopt.optimize.trials import pipeline_values

    shared = {"augment_mask_prob": 0.1, "hidden_loss_weight": 1.0}
    pruned = {"prune_heads": 0.5, "deployment": "pytorch:dynamic_int8"}
    for recover, kept in (("none", set()), ("finetune", {"augment_mask_prob"}),
                          ("distill", {"augment_mask_prob", "hidden_loss_weight"})):  # fmt: skip
        values = pipeline_values({**pruned, "recover": recover}, shared, "train.tsv", "dev.tsv")
        assert kept == {k for k in shared if k in values}
    only_students = {**shared, "augment_stages": ["student", "qat"]}  # of the stages each trial trains
    values = pipeline_values({**pruned, "recover": "distill", "student_layers": 3}, only_students, "t.tsv", "d.tsv")
    assert values["augment_stages"] == ["student"] and values["augment_mask_prob"] == 0.1
    values = pipeline_values({**pruned, "recover": "distill"}, only_students, "t.tsv", "d.tsv")
    assert "augment_stages" not in values and "augment_mask_prob" not in values


def test_the_bundled_sst2_search_is_a_valid_search(monkeypatch):
    from hfopt.commands.optimize import parse
    from tests.testing_utils import ROOT, needs_shared_data

    needs_shared_data("sst2", "dev.tsv")
    monkeypatch.chdir(ROOT)  # its paths are relative to the repository
    model_dir, output_dir, config = parse(["--config", "recipes/searches/sst2.yaml"])
    assert (config.max_drop, config.objective, config.seconds) == (0.01, "latency_b16", 5400)
    assert config.search_space.student_layers == [3] and config.pipeline["max_train_samples"] == 45000
    assert config.pipeline["student_epochs"] == 4 and config.pipeline["augment_mask_prob"] == 0.1
    assert config.pipeline["augment_stages"] == ["student"]


def test_the_bundled_language_model_search_is_a_valid_search(tmp_path):
    """recipes/searches/tinyshakespeare.yaml names the user's text files: given as flags, the rest holds, and its
    space fits a 4-block GPT-2 (bench/optimize_lm.py's model)."""
    from hfopt.commands.optimize import parse
    from tests.testing_utils import ROOT

    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text("To be, or not to be: that is the question.\n", encoding="utf-8")
    valid.write_text("Now is the winter of our discontent.\n", encoding="utf-8")
    _, _, config = parse(["--config", str(ROOT / "recipes/searches/tinyshakespeare.yaml"),
                          "--train_file", str(train), "--eval_file", str(valid)])  # fmt: skip
    assert (config.max_relative_drop, config.objective, config.seconds) == (0.03, "latency_b1", 1800)
    space = config.search_space.resolved("causal_lm", num_layers=4, onnx=True)
    assert space["student_layers"] == [None, 2, 3] and space["prune_vocabulary"] == [False]
