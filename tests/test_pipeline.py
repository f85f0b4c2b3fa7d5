"""The compression pipeline as one call (`hfopt.pipeline.compress`): stages resume by fingerprint, a killed training
stage resumes to the same weights, changed settings recompute only from where they change, bad configs are one
line before any work, and a failing stage leaves what finished intact."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from hfopt.errors import InputError
from hfopt.pipeline import CompressionConfig, compress
from tests.testing_utils import ROOT, make_tiny_bert, one_error_line, recipe_env

pytestmark = pytest.mark.slow


class StopAt(TrainerCallback):
    """Raise `error` when training reaches `step` (after the checkpoint of that step is written)."""

    def __init__(self, step: int, error: type[BaseException] = KeyboardInterrupt):
        self.step, self.error = step, error

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise self.error(f"stopped at step {state.global_step}")


def recovery_config(easy_task, **changes) -> CompressionConfig:
    values = dict(
        eval_file=str(easy_task["validation"]),
        train_file=str(easy_task["train"]),
        prune_heads=0.5,
        recover="finetune",
        recover_epochs=1,
        recover_learning_rate=1e-3,
        batch_size=32,
        save_steps=4,
        quantize="fp16",
        latency_repeats=2,
    )
    return CompressionConfig(**{**values, **changes})


def weights(folder):
    return load_file(str(next(folder.glob("*.safetensors"))))


def test_a_killed_training_stage_resumes_to_the_weights_of_an_uninterrupted_run(tiny_teacher, easy_task, tmp_path):
    whole = compress(tiny_teacher, recovery_config(easy_task), tmp_path / "whole")
    assert whole.stage_log == ["ran", "ran", "ran", "ran"]
    with pytest.raises(KeyboardInterrupt):
        compress(tiny_teacher, recovery_config(easy_task), tmp_path / "killed", callbacks=[StopAt(8)])
    stages = tmp_path / "killed" / "stages"
    assert sorted(p.name for p in stages.iterdir()) == ["00_original", "01_prune_heads"]  # nothing half-written
    assert [p.name for p in (tmp_path / "killed" / ".training" / "recover").glob("checkpoint-*")] == ["checkpoint-8"]
    resumed = compress(tiny_teacher, recovery_config(easy_task), tmp_path / "killed")
    assert resumed.stage_log == ["kept", "kept", "resumed", "ran"]
    assert resumed.report["stages"]["recover_finetune"]["training"]["resumed_from"] == "checkpoint-8"
    a, b = weights(tmp_path / "whole" / "stages" / "02_recover"), weights(stages / "02_recover")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    recovered = whole.report["stages"]["recover_finetune"]["accuracy"]
    assert recovered >= whole.report["stages"]["prune_heads_0.5"]["accuracy"] and recovered >= 0.9
    assert not (tmp_path / "killed" / ".training").exists()


def test_a_changed_quantization_reuses_every_earlier_stage_and_an_unchanged_rerun_does_nothing(
    tiny_teacher, easy_task, tmp_path
):
    out = tmp_path / "out"
    first = compress(tiny_teacher, recovery_config(easy_task), out)
    recovered = (out / "stages" / "02_recover" / "stage.json").read_bytes()
    again = compress(tiny_teacher, recovery_config(easy_task), out)
    assert again.stage_log == ["kept"] * 4 and again.report == first.report
    changed = compress(tiny_teacher, recovery_config(easy_task, quantize="dynamic_int8"), out)
    assert changed.stage_log == ["kept", "kept", "kept", "ran"]  # no training ran again
    assert list(changed.report["stages"]) == [
        "original",
        "prune_heads_0.5",
        "recover_finetune",
        "quantize_dynamic_int8",
    ]
    assert (
        changed.report["stages"]["recover_finetune"]["accuracy"]
        == first.report["stages"]["recover_finetune"]["accuracy"]
    )
    stage = (out / "stages" / "02_recover" / "stage.json").read_bytes()
    assert stage.split(b'"evaluation"')[0] == recovered.split(b'"evaluation"')[0]  # the stage itself untouched
    assert (out / "compression_report.png").stat().st_size > 10_000
    # a stage dropped from the pipeline goes, the rest is reused
    fewer = compress(tiny_teacher, recovery_config(easy_task, quantize=None), out)
    assert fewer.stage_log == ["kept", "kept", "kept"]
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["00_original", "01_prune_heads", "02_recover"]


def test_a_model_folder_replaced_under_the_same_path_is_a_new_input(tiny_teacher, easy_task, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_teacher, model)
    config = CompressionConfig(eval_file=str(easy_task["validation"]), prune_heads=0.5, latency_repeats=2)
    assert compress(model, config, tmp_path / "out").stage_log == ["ran", "ran"]
    shutil.rmtree(model)
    make_tiny_bert(model, seed=7)  # another model, the same path
    assert compress(model, config, tmp_path / "out").stage_log == ["ran", "ran"]


def test_a_failing_stage_leaves_the_finished_ones_intact(tiny_teacher, easy_task, tmp_path):
    out = tmp_path / "out"
    compress(tiny_teacher, recovery_config(easy_task, quantize=None), out)
    before = {p: p.read_bytes() for p in (out / "stages").rglob("*") if p.is_file()}
    report = (out / "compression_report.json").read_bytes()
    with pytest.raises(RuntimeError, match="stopped"):
        compress(tiny_teacher, recovery_config(easy_task, recover_epochs=2), out, callbacks=[StopAt(4, RuntimeError)])
    after = {p: p.read_bytes() for p in (out / "stages").rglob("*") if p.is_file()}
    assert after == before  # the finished stages as they were; the failed one never half-written
    assert (out / "compression_report.json").read_bytes() == report
    assert not [p for p in out.rglob("*") if ".new." in p.name or ".old." in p.name]


def test_a_student_made_from_the_teachers_blocks_and_distilled(tiny_teacher, easy_task, tmp_path):
    config = CompressionConfig(
        eval_file=str(easy_task["validation"]),
        train_file=str(easy_task["train"]),
        student_layers=[1],
        student_epochs=2,
        student_learning_rate=1e-3,
        quantize="dynamic_int8",
        latency_repeats=2,
    )
    result = compress(tiny_teacher, config, tmp_path / "out")
    stages = result.report["stages"]
    assert list(stages) == ["original", "student_1", "quantize_dynamic_int8"]
    assert result.model.config.num_hidden_layers == 1
    assert stages["student_1"]["parameters"] < stages["original"]["parameters"]
    assert stages["student_1"]["accuracy"] >= 0.9 and stages["student_1"]["training"]["objective"] == "distill"
    assert "Training stages:" in (tmp_path / "out" / "compression_report.md").read_text()
    from hfopt.run.model_card import check_model_card

    card = check_model_card(tmp_path / "out" / "README.md")  # the card lists every stage; model-index: the saved one
    assert all(f"| `{name}` |" in card.text for name in stages) and "hfopt" in card.data.tags
    accuracy = card.data.eval_results[0].metric_value
    assert accuracy == pytest.approx(stages["quantize_dynamic_int8"]["accuracy"])


def test_a_student_distilled_with_hidden_states_matches_the_teachers_blocks_closer(tiny_teacher, easy_task, tmp_path):
    """hidden_loss_weight reaches the student stage's DistillationTrainer: the student's block matches the
    teacher's last block (the evenly spaced one) closer than with the logits alone, and only a stage that sets it
    has it in its fingerprint (the stages of earlier runs are reused)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hfopt.pipeline.stages import stage_settings

    def student(weight):
        config = CompressionConfig(
            eval_file=str(easy_task["validation"]),
            train_file=str(easy_task["train"]),
            student_layers=[1],
            student_epochs=2,
            student_learning_rate=1e-3,
            hidden_loss_weight=weight,
            latency_repeats=2,
        )
        assert ("hidden_loss_weight" in stage_settings("student", config)) == (weight > 0)
        return compress(tiny_teacher, config, tmp_path / f"hidden_{weight}").model

    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_teacher).eval()
    rows = easy_task["validation"].read_text().splitlines()[1:65]
    batch = tokenizer([r.rsplit(",", 1)[0] for r in rows], padding=True, return_tensors="pt")
    mask = batch["attention_mask"].unsqueeze(-1).bool()

    def distance(model):
        with torch.no_grad():
            mine = model(**batch, output_hidden_states=True).hidden_states[-1]
            theirs = teacher(**batch, output_hidden_states=True).hidden_states[-1]
        return torch.nn.functional.mse_loss(mine.masked_select(mask), theirs.masked_select(mask)).item()

    logits_only, with_hidden = distance(student(0.0)), distance(student(1.0))
    assert with_hidden < 0.5 * logits_only, (with_hidden, logits_only)
    for recover, kept in (("distill", True), ("finetune", False)):  # fine-tuning has no teacher to match
        config = recovery_config(easy_task, recover=recover, hidden_loss_weight=1.0, student_layers=[1])
        assert ("hidden_loss_weight" in stage_settings("recover", config)) == kept


def test_augmentation_reaches_the_training_stages_rows_and_their_fingerprints(tiny_teacher, easy_task, tmp_path):
    """augment_mask_prob: the student trains on rows of which about that share of tokens is the mask token; a stage
    without it sees none; only a stage that sets it has it in its fingerprint (earlier runs' stages are reused).
    augment_stages: [qat] leaves the student's rows as they are and masks QAT's."""
    from transformers import AutoTokenizer

    from hfopt.pipeline.stages import stage_settings

    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    special = torch.tensor(tokenizer.all_special_ids)

    class Inputs(TrainerCallback):
        """The token ids every training forward pass embeds, one list per training stage."""

        def __init__(self):
            self.runs, self.hook = [], None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            ids = []
            self.runs.append(ids)
            self.hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: ids.append(i[0].flatten()))

        def on_train_end(self, args, state, control, **kwargs):
            self.hook.remove()  # QAT trains the student's own modules on

    def masked_shares(probability, name, **stages):
        config = CompressionConfig(eval_file=str(easy_task["validation"]), train_file=str(easy_task["train"]),
                                   student_layers=[1], student_epochs=1, augment_mask_prob=probability,
                                   latency_repeats=2, **stages)  # fmt: skip
        for stage in ("student", "qat") if stages else ("student",):
            assert ("augment_mask_prob" in stage_settings(stage, config)) == config.augments(stage)
        seen = Inputs()
        compress(tiny_teacher, config, tmp_path / name, callbacks=[seen])
        shares = []
        for run in seen.runs:
            ids = torch.cat(run)
            masked = (ids == tokenizer.mask_token_id).sum().item()
            shares.append(masked / (len(ids[~torch.isin(ids, special)]) + masked))
        return shares

    assert masked_shares(0.0, "plain") == [0]
    (student,) = masked_shares(0.3, "masked")
    assert 0.2 < student < 0.4
    student, qat = masked_shares(0.3, "qat_masked", qat="distill", qat_epochs=1, augment_stages=["qat"])
    assert student == 0 and 0.2 < qat < 0.4
    fingerprint = {name: json.loads((tmp_path / name / "stages/01_student/stage.json").read_text())["fingerprint"]
                   for name in ("plain", "masked", "qat_masked")}  # fmt: skip
    assert fingerprint["qat_masked"] == fingerprint["plain"] != fingerprint["masked"]  # the plain student, reusable


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(recover="distill", train_file=None), "the recover stage trains: give it a train_file"),
        (dict(stages=["quantize", "prune_heads"], quantize="fp16", prune_heads=0.5),
         "quantize cannot come before prune_heads (pruning, sharing and training need float weights)"),
        (dict(stages=["prune_heads", "recover"], prune_heads=0.5), "stages lists recover, whose settings are not set"),
        (dict(qat="distill", quantize="dynamic_int8"), "qat ends in int8 already"),
        (dict(recover="retrain"), "recover: 'retrain' is not one of none, distill, finetune"),
        (dict(prune_heads="half"), "prune_heads takes a number, got 'half'"),
        (dict(quantize_embeddings=True), "quantize_embeddings goes with quantize: dynamic_int8"),
        (dict(hidden_loss_weight=-1.0), "hidden_loss_weight must be a finite number ≥ 0, got -1.0"),
        (dict(hidden_loss_weight=1.0, prune_heads=0.5, recover="finetune"),
         "hidden_loss_weight goes with a distilling stage"),
        (dict(hidden_loss_weight=0.5, quantize="dynamic_int8"), "hidden_loss_weight goes with a distilling stage"),
        (dict(augment_mask_prob=1.0), "augment_mask_prob must be in [0, 1), got 1.0"),
        (dict(augment_deletion_prob=-0.1), "augment_deletion_prob must be in [0, 1), got -0.1"),
        (dict(augment_swap_prob=0.1, prune_heads=0.5, quantize="dynamic_int8"),
         "augment_swap_prob changes the rows of the training stages, and none is set"),
        (dict(augment_mask_prob=0.1, student_layers=[1], augment_stages=["prune_heads"]),
         "augment_stages: 'prune_heads' is not a training stage; they are student, recover, qat"),
        (dict(student_layers=[1], augment_stages=["student"]), "augment_stages goes with augment_deletion_prob"),
        (dict(augment_mask_prob=0.1, student_layers=[1], augment_stages=[]), "augment_stages takes distinct training"),
        (dict(augment_mask_prob=0.1, student_layers=[1], augment_stages=["student", "student"]),
         "augment_stages takes distinct training"),
        (dict(augment_mask_prob=0.1, student_layers=[1], augment_stages=[["student"]]),
         "augment_stages: ['student'] is not a training stage"),  # a YAML list nested by mistake
        (dict(augment_mask_prob=0.1, student_layers=[1], augment_stages=["student", "recover"]),
         "augment_stages lists recover, which is not set (recover)"),
    ],
)  # fmt: skip
def test_configs_that_cannot_work_are_one_error_before_any_work(easy_task, changes, words):
    values = {"eval_file": str(easy_task["validation"]), "train_file": str(easy_task["train"]), **changes}
    with pytest.raises(InputError, match=re.escape(words)):
        CompressionConfig(**values)


def hfopt_compress(*args):
    return subprocess.run(
        [sys.executable, "-m", "hfopt.cli", "compress", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=recipe_env(),
    )


def test_the_command_reads_a_pipeline_yaml_flags_override_and_typos_are_one_line(tiny_teacher, easy_task, tmp_path):
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        f"model_dir: {tiny_teacher}\neval_file: {easy_task['validation']}\nprune_heads: 0.5\nquantize: fp16\n"
        "latency_repeats: 2\n"
    )
    result = hfopt_compress("--config", pipeline, "--quantize", "dynamic_int8", "--output_dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "quantize_dynamic_int8" in result.stdout and "quantize_fp16" not in result.stdout
    pipeline.write_text(pipeline.read_text() + "prune_head: 0.3\n")
    typo = hfopt_compress("--config", pipeline, "--output_dir", tmp_path / "typo")
    assert typo.returncode == 2 and "unknown key 'prune_head'" in one_error_line(typo)
    assert "did you mean 'prune_heads'?" in one_error_line(typo) and not (tmp_path / "typo").exists()


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(onnx=["onnx_int8_static"]), "onnx_int8_static is for classification and causal_lm"),
        (
            dict(hidden_loss_weight=1.0, prune_heads=0.5, recover="distill", train_file="DATA"),
            "a seq2seq model distils its logits only",
        ),
    ],
)
def test_what_a_seq2seq_model_cannot_do_is_refused_before_any_work(tmp_path, changes, words):
    from transformers import MarianConfig, MarianMTModel

    from hfopt.pipeline.config import CompressionConfig as Config

    model = MarianMTModel(MarianConfig(vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1,
                                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
                                       decoder_ffn_dim=16, max_position_embeddings=32, pad_token_id=0,
                                       decoder_start_token_id=0))  # fmt: skip
    eval_file = tmp_path / "dev.jsonl"
    eval_file.write_text('{"translation": {"en": "a", "de": "b"}}\n')
    changes = {k: (str(eval_file) if v == "DATA" else v) for k, v in changes.items()}
    config = Config(eval_file=str(eval_file), source_lang="en", target_lang="de", **changes)
    with pytest.raises(InputError, match=words):
        compress(model, config, tmp_path / "out", tokenizer=object())
    assert not (tmp_path / "out").exists()


def test_augmenting_a_language_models_rows_is_refused_before_any_work(easy_task):
    config = CompressionConfig(eval_file=str(easy_task["validation"]), train_file=str(easy_task["train"]),
                               student_layers=[1], augment_deletion_prob=0.1)  # fmt: skip
    config.check_task("classification")
    with pytest.raises(InputError, match="augmentation is for classification and seq2seq models"):
        config.check_task("causal_lm")


def test_the_bundled_sst2_chain_is_a_valid_pipeline():
    from hfopt.pipeline import load_config_file

    path = ROOT / "recipes" / "pipelines" / "sst2_chain.yaml"
    values = load_config_file(str(path), set(CompressionConfig.owners()) | {"model_dir", "output_dir"})
    files = ("model_dir", "output_dir", "eval_file", "train_file", "prune_vocabulary", "importance_file")
    config = CompressionConfig(**{k: v for k, v in values.items() if k not in files}, train_file=__file__)
    assert config.stage_names() == ["student", "prune_heads", "prune_ffn", "recover", "quantize", "onnx"]
    assert values["prune_vocabulary"] == values["train_file"] == values["importance_file"]
