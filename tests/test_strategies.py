"""The strategy flags switch the plug-ins on from the recipes (YAML keys and flags alike)."""

import pytest
from transformers import AutoConfig

from tests.testing_utils import (
    TINY_GPT,
    log_history,
    read_json,
    require_optuna,
    run_recipe,
    story_lines,
    tiny_bert_args,
)

pytestmark = pytest.mark.slow


def test_bert_recipe_with_strategy_flags(tiny_bert, easy_task, tmp_path):
    out = tmp_path / "out"
    run_recipe(
        "finetune_bert",
        tiny_bert_args(
            tiny_bert,
            easy_task,
            out,
            "--num_train_epochs",
            "5",
            "--num_frozen_layers",
            "1",
            "--unfreeze_every_n_epochs",
            "1",
            "--l1_lambda",
            "1e-6",
            "--lr_schedule",
            "step",
            "--lr_decay_step_size",
            "60",
            "--lr_decay_gamma",
            "0.5",
            "--warmup_steps",
            "0",
            "--log_throughput",
            "true",
            "--augment_swap_prob",
            "0.1",
            "--watchdog",
            "skip",
            "--early_stopping_patience",
            "4",
            "--metric_for_best_model",
            "accuracy",
            "--dropout",
            "0.05",
            "--layerwise_lr_decay",
            "0.9",
            "--logging_steps",
            "1",
        ),
    )
    history = log_history(out)
    rates = {row["step"]: row["learning_rate"] for row in history if "learning_rate" in row}
    # the head's group is first and undecayed: 2e-3 halved every 60 steps
    assert rates[1] == pytest.approx(2e-3) and rates[61] == pytest.approx(1e-3) and rates[121] == pytest.approx(5e-4)
    assert any("throughput_samples_per_second" in row for row in history)
    assert AutoConfig.from_pretrained(out).hidden_dropout_prob == 0.05
    assert read_json(out / "all_results.json")["eval_accuracy"] >= 0.9


def test_gpt_recipe_stops_at_a_loss_target(tmp_path):
    (tmp_path / "train.txt").write_text("\n".join(story_lines(600, 1)) + "\n")
    out = tmp_path / "out"
    run_recipe(
        "finetune_gpt",
        [
            "--train_file",
            tmp_path / "train.txt",
            "--output_dir",
            out,
            "--num_train_epochs",
            "20",
            *TINY_GPT,
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "10",
            "--metric_for_best_model",
            "loss",
            "--greater_is_better",
            "false",
            "--early_stopping_target",
            "1.5",
            "--watchdog",
            "stop",
        ],
    )
    state = read_json(out / "trainer_state.json")
    evals = [row["eval_loss"] for row in state["log_history"] if "eval_loss" in row]
    assert evals[-1] <= 1.5 and all(loss > 1.5 for loss in evals[:-1])
    assert state["global_step"] < state["max_steps"]


@require_optuna
def test_hyperparameter_search_mode_writes_the_best_trial_and_a_config_that_reruns_it(tiny_bert, easy_task, tmp_path):
    import yaml

    out = tmp_path / "out"
    space = (
        '{"learning_rate": {"type": "float", "low": 1e-3, "high": 3e-3, "log": true}, "num_train_epochs": '
        '{"type": "int", "low": 1, "high": 2}}'
    )
    run_recipe(
        "finetune_bert",
        tiny_bert_args(
            tiny_bert,
            easy_task,
            out,
            "--hp_search_trials",
            "2",
            "--hp_search_space",
            space,
            "--hp_search_objective",
            "loss",
            "--save_strategy",
            "no",
        ),
    )
    best = read_json(out / "best_trial.json")
    assert set(best["hyperparameters"]) == {"learning_rate", "num_train_epochs"}
    assert best["objective"] == "eval_loss" and best["direction"] == "minimize" and best["trials"] == 2
    config = yaml.safe_load((out / "best_config.yaml").read_text())
    assert config["learning_rate"] == best["hyperparameters"]["learning_rate"] and config["hp_search_trials"] == 0
    # it reruns the best trial: the search's own keys are off (each alone would be refused without the search)
    assert all(config[k] is None for k in ("hp_search_space", "hp_search_objective", "hp_search_direction"))
    results = read_json(out / "all_results.json")
    assert results["hp_search_best_objective"] == best["value"]


def test_bad_strategy_values_fail_before_training(tiny_bert, easy_task, tmp_path):
    result = run_recipe(
        "finetune_bert", tiny_bert_args(tiny_bert, easy_task, tmp_path / "o", "--lr_schedule", "cosinus"), check=False
    )
    assert result.returncode == 2
    assert "argument --lr_schedule/--lr-schedule: invalid choice: 'cosinus' (choose from 'exponential', 'step')" in (
        result.stderr
    )
    result = run_recipe(
        "finetune_bert",
        tiny_bert_args(tiny_bert, easy_task, tmp_path / "o", "--early_stopping_patience", "2"),
        check=False,
    )
    assert result.returncode == 2 and "needs --metric_for_best_model" in result.stderr
