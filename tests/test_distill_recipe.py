"""recipes/distill_bert.py end to end: tiny teacher and student, 2-process DDP, and MiniLM on SST-2."""

import pytest

from tests.testing_utils import read_json, run_recipe

pytestmark = pytest.mark.slow


def distill_args(teacher, easy_task, out, *extra):
    return [
        "--teacher_model_name_or_path",
        teacher,
        "--train_file",
        easy_task["train"],
        "--validation_file",
        easy_task["validation"],
        "--output_dir",
        out,
        *([] if "--model_name_or_path" in extra else ["--student_num_layers", "1"]),  # a student of its own
        "--learning_rate",
        "2e-3",
        "--num_train_epochs",
        "3",
        "--per_device_train_batch_size",
        "16",
        "--disable_tqdm",
        "true",
        "--save_strategy",
        "no",
        "--logging_steps",
        "5",
        *extra,
    ]


def test_distilled_student_keeps_the_teachers_accuracy(tiny_teacher, easy_task, tmp_path):
    out = tmp_path / "student"
    result = run_recipe("distill_bert", distill_args(tiny_teacher, easy_task, out))
    report = read_json(out / "distillation_report.json")
    teacher, student = report["models"]["teacher"], report["models"]["student"]
    assert student["parameters"] < teacher["parameters"]
    assert report["summary"]["retention"] >= 0.95
    assert report["summary"]["retention"] == pytest.approx(student["accuracy"] / teacher["accuracy"])
    assert "retention" in result.stdout
    history = read_json(out / "trainer_state.json")["log_history"]
    assert any("loss_kd" in row and "loss_ce" in row for row in history)
    # the student's token count, not the teacher evaluation's 0
    tokens = read_json(out / "trainer_state.json")["num_input_tokens_seen"]
    assert read_json(out / "all_results.json")["num_input_tokens_seen"] == tokens > 0
    assert "teacher_eval_accuracy" in read_json(out / "all_results.json")


def test_distillation_under_two_process_ddp(tiny_teacher, easy_task, tmp_path):
    out = tmp_path / "student"
    result = run_recipe(
        "distill_bert",
        distill_args(tiny_teacher, easy_task, out, "--per_device_train_batch_size", "8"),
        launcher=["--config_file", "accelerate_configs/multi_gpu.yaml", "--num_processes", "2"],
    )
    info = read_json(out / "run_info.json")
    assert info["distributed_type"] == "MULTI_CPU" and info["global_batch_size"] == 16
    assert read_json(out / "distillation_report.json")["summary"]["retention"] >= 0.95
    assert result.stdout.count("speed-up") == 1  # the comparison is printed once, by the main process


def test_teacher_label_mismatch_is_a_clear_error(tiny_teacher, tmp_path):
    from tests.testing_utils import easy_rows, write_csv

    train = write_csv(tmp_path / "t.csv", [(s, "pos" if y else "neg") for s, y in easy_rows(20, 1)])
    result = run_recipe(
        "distill_bert",
        ["--teacher_model_name_or_path", tiny_teacher, "--train_file", train, "--output_dir", tmp_path / "o"],
        check=False,
    )
    assert result.returncode == 2 and "are not classes of the teacher" in result.stderr


@pytest.mark.real_model
def test_minilm_student_on_sst2(minilm_sst2, tmp_path):
    """A 3-layer student made from the fine-tuned MiniLM's blocks 0, 2, 4, distilled one epoch on 3,000 of the
    teacher's 6,000 SST-2 phrases (shuffled): ≥ 90% of the teacher's dev accuracy."""
    out = tmp_path / "student"
    run_recipe(
        "distill_bert",
        [
            "--teacher_model_name_or_path",
            minilm_sst2["model"],
            "--train_file",
            minilm_sst2["train"],
            "--validation_file",
            minilm_sst2["validation"],
            "--output_dir",
            out,
            "--student_num_layers",
            "3",
            "--max_train_samples",
            "3000",
            "--num_train_epochs",
            "1",
            "--learning_rate",
            "1e-4",
            "--per_device_train_batch_size",
            "32",
            "--max_seq_length",
            "64",
            "--alpha",
            "0.5",
            "--temperature",
            "2",
            "--save_strategy",
            "no",
            "--eval_strategy",
            "no",
            "--disable_tqdm",
            "true",
        ],
        threads=None,
    )
    report = read_json(out / "distillation_report.json")
    print("MiniLM distillation:", report["summary"], {k: v["accuracy"] for k, v in report["models"].items()})
    assert report["summary"]["retention"] >= 0.90


def test_student_with_another_vocabulary_is_a_clear_error(tiny_teacher, easy_task, tmp_path):
    from tests.testing_utils import make_tiny_bert

    other = make_tiny_bert(tmp_path / "other_vocab", ["completely", "different", "words"])
    result = run_recipe(
        "distill_bert",
        distill_args(tiny_teacher, easy_task, tmp_path / "o", "--model_name_or_path", other),
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "teacher and student vocabularies differ" in result.stderr
