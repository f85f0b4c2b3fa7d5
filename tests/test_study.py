"""hfopt compare: a study's variants × seeds run as their own subprocesses, the tables hold the right means and
stds, a bad variant fails before anything runs, a failing variant is recorded while the rest finish (and the
study exits non-zero), --report rebuilds the tables, a study killed half-way finishes only what was missing when
run again, an edited study is never reported with the old one's runs, and no study writes where it reads."""

import json
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest
import yaml

from hfopt.errors import InputError
from hfopt.study import load_study
from tests.testing_utils import (
    ROOT,
    compare_here,
    one_error_line,
    read_json,
    recipe_env,
    require_plots,
    run_hfopt,
    write_study,
)

pytestmark = pytest.mark.slow


VARIANTS = [
    {"name": "baseline"},
    {"name": "cosine", "args": {"lr_scheduler_type": "cosine"}},
    {"name": "frozen", "args": {"num_frozen_layers": 2, "freeze_embeddings": True}},
]


@pytest.fixture(scope="module")
def six_runs(tiny_bert, easy_task, tmp_path_factory):
    """The 3-variant × 2-seed study, run one run after another: (study file, output folder, result)."""
    folder = tmp_path_factory.mktemp("six_runs")
    study = write_study(folder, tiny_bert, easy_task, VARIANTS)
    result = run_hfopt("compare", study, "--output_dir", folder / "out", "--no_progress", timeout=1200)
    return study, folder / "out", result


@require_plots
def test_three_variants_two_seeds_make_six_runs_and_one_row_per_variant(six_runs, capsys):
    study, out, result = six_runs
    assert result.returncode == 0, result.stderr[-3000:]
    runs = read_json(out / "study.json")["runs"]
    assert len(runs) == 6 and all(r["status"] == "complete" for r in runs)
    assert sorted((r["variant"], r["seed"]) for r in runs) == sorted((v["name"], s) for v in VARIANTS for s in (1, 2))
    summary = read_json(out / "study.json")["variants"]
    for variant in ("baseline", "cosine", "frozen"):
        values = [r["eval_accuracy"] for r in runs if r["variant"] == variant]
        assert summary[variant]["eval_accuracy"]["mean"] == pytest.approx(statistics.fmean(values))
        assert summary[variant]["eval_accuracy"]["std"] == pytest.approx(statistics.stdev(values))
    frozen, baseline = summary["frozen"], summary["baseline"]
    assert frozen["trainable_parameters"]["mean"] < baseline["trainable_parameters"]["mean"]
    assert frozen["eval_accuracy"]["delta"] == pytest.approx(
        frozen["eval_accuracy"]["mean"] - baseline["eval_accuracy"]["mean"]
    )
    for run in runs:  # measured identically for every run
        for key in (
            "wall_seconds",
            "train_runtime",
            "train_samples_per_second",
            "train_tokens_per_second",
            "peak_memory_mb",
            "parameters",
            "model_size_mb",
            "latency_b1_p50_ms",
            "latency_b16_p50_ms",
            "best_eval_accuracy",
            "steps_to_best",
        ):
            assert run[key] is not None and run[key] > 0, key
    markdown = (out / "study.md").read_text()
    assert markdown.count("\n| ") == 4 and "| frozen |" in markdown  # a header and one row per variant
    for plot in ("metric_vs_time.png", "curves.png", "speed_memory.png"):
        assert (out / "plots" / plot).stat().st_size > 1000 and f"plots/{plot}" in markdown
    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert {p.relative_to(out / "tensorboard").parts[0] for p in events} == {"baseline", "cosine", "frozen"}
    assert len((out / "study.csv").read_text().splitlines()) == 7

    # --report rebuilds the same tables from the finished runs, training nothing
    before = (out / "study.md").read_text()
    (out / "study.md").unlink()
    rebuilt = compare_here(capsys, "--report", out)
    assert rebuilt.returncode == 0 and (out / "study.md").read_text() == before


def test_a_bad_variant_key_fails_before_any_run(tiny_bert, easy_task, tmp_path):
    out = tmp_path / "out"
    study = write_study(tmp_path, tiny_bert, easy_task, [{"name": "a"}, {"name": "b", "args": {"lerning_rate": 1}}])
    result = run_hfopt("compare", study, "--output_dir", out)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "variant 'b': unknown argument --lerning_rate (did you mean '--learning_rate'?)" in result.stderr
    assert not out.exists()
    with pytest.raises(InputError, match="variant 'c': unknown key 'arg' .did you mean 'args'"):
        load_study(write_study(tmp_path, tiny_bert, easy_task, [{"name": "c", "arg": {}}]))
    with pytest.raises(InputError, match="variant 'd': 'seed' is set by the study for every run"):
        load_study(write_study(tmp_path, tiny_bert, easy_task, [{"name": "d", "args": {"seed": 3}}]))


def test_a_variant_its_recipe_refuses_fails_the_dry_run_with_the_recipes_line(tmp_path):
    """The dry run puts each variant through the recipe's own validate(): the translation recipe refuses
    --share_layers, so the study does too, before any run, with the recipe's words."""
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "recipe": "finetune_translation",
                "args": {"source_lang": "en", "target_lang": "xx", "model_type": "marian"},
                "seeds": [1],
                "variants": [{"name": "plain"}, {"name": "shared", "args": {"share_layers": 1}}],
            }
        )
    )
    with pytest.raises(InputError) as err:
        load_study(study)
    assert str(err.value).startswith(
        "variant 'shared': finetune_translation does not take --share_layers: weight sharing merges the blocks"
    )


def test_a_failing_variant_is_recorded_and_the_rest_finish(tiny_bert, easy_task, tmp_path):
    """The first run fails: it is recorded with its error line, the run after it still runs and finishes, and the
    study exits 1 naming the failed run."""
    out = tmp_path / "out"
    variants = [{"name": "broken", "args": {"num_frozen_layers": 9}}, {"name": "fine"}]
    study = write_study(tmp_path, tiny_bert, easy_task, variants, seeds=[1], measure_latency=False)
    result = run_hfopt("compare", study, "--output_dir", out, "--no_progress", timeout=900)
    assert result.returncode == 1, result.stderr[-3000:]  # a study whose runs failed does not exit 0
    assert result.stderr.splitlines()[-1] == (
        f"error: 1 of 2 runs failed: broken/seed-1 (their logs: {out}/logs); the report covers the 1 that finished"
    )
    runs = {r["variant"]: r for r in read_json(out / "study.json")["runs"]}
    assert runs["fine"]["status"] == "complete"
    assert runs["broken"]["status"] == "failed"
    assert runs["broken"]["error"] == "error: num_frozen_layers is 9 but the model has 2 blocks"
    markdown = (out / "study.md").read_text()
    assert "`broken` seed 1: error: num_frozen_layers is 9" in markdown
    assert "The baseline `broken` has no finished run: no Δ can be computed." in markdown


def test_a_study_killed_half_way_finishes_only_what_was_missing(tiny_bert, easy_task, tmp_path):
    """Two runs; the study killed once the first has finished (the second about to start, or just started): the
    rerun runs the second once and leaves the first alone."""
    out = tmp_path / "out"
    study = write_study(tmp_path, tiny_bert, easy_task, VARIANTS[:2], seeds=[1], measure_latency=False)
    command = [sys.executable, "-m", "hfopt.cli", "compare", str(study), "--output_dir", str(out), "--no_progress"]
    proc = subprocess.Popen(
        command,
        env=recipe_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not (out / "records" / "baseline--seed-1.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the study and the run it was on
    proc.wait()
    done_before = {p.name for p in (out / "records").glob("*.json")}
    assert done_before == {"baseline--seed-1.json"}
    result = run_hfopt("compare", study, "--output_dir", out, "--no_progress", timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    attempts = {p.stem: len(json.loads(p.read_text())["attempts"]) for p in (out / "records").glob("*.json")}
    assert attempts == {"baseline--seed-1": 1, "cosine--seed-1": 1}
    assert all(r["status"] == "complete" for r in read_json(out / "study.json")["runs"])


@pytest.mark.parametrize("study", sorted((ROOT / "recipes" / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_bundled_study_resolves_every_run(study, tmp_path):
    """--dry_run parses every variant with its recipe's own parser: a key a recipe does not take fails here."""
    result = run_hfopt("compare", study, "--dry_run", "--output_dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    spec = yaml.safe_load(study.read_text())
    variants, seeds = len(spec["variants"]), len(spec["seeds"])
    assert f"{variants * seeds} runs ({variants} variants × {seeds} seeds)" in result.stdout
    assert not (tmp_path / "out").exists()


def test_latency_of_a_mixed_precision_run_is_the_saved_fp32_models(monkeypatch):
    """A study's latency column times the saved model: a bf16 run's model in fp32, not under the autocast wrapper
    that training put on its forward."""
    from types import SimpleNamespace

    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from transformers import BertConfig, BertForSequenceClassification

    import hfopt.latency as latency

    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    model = BertForSequenceClassification(config).eval()
    AcceleratorState._reset_state(reset_partial_state=True)  # an earlier test's Trainer may have set it up
    try:
        prepared = Accelerator(mixed_precision="bf16", cpu=True).prepare(model)
        timed = {}
        monkeypatch.setattr(latency, "latency_rows", lambda models, *a, **k: timed.update(models) or {"model": {}})
        trainer = SimpleNamespace(
            is_world_process_zero=lambda: True,
            accelerator=SimpleNamespace(unwrap_model=lambda m: m),
            model=prepared,
            is_deepspeed_enabled=False,
            is_fsdp_enabled=False,
            processing_class=None,
        )
        latency.trained_model_latency(trainer, ["a text"])
        inputs = torch.randint(0, 50, (2, 8))
        with torch.no_grad():
            fp32 = BertForSequenceClassification.forward(model, input_ids=inputs).logits
            assert not torch.equal(prepared(input_ids=inputs).logits, fp32)  # training ran under bf16 autocast
            assert torch.equal(timed["model"](input_ids=inputs).logits, fp32)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_a_study_whose_every_run_failed_exits_non_zero(tiny_bert, easy_task, tmp_path):
    out = tmp_path / "out"
    variants = [{"name": "broken", "args": {"num_frozen_layers": 9}}]
    study = write_study(tmp_path, tiny_bert, easy_task, variants, seeds=[1], measure_latency=False)
    result = run_hfopt("compare", study, "--output_dir", out, "--no_progress", timeout=600)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("error: 1 of 1 runs failed: broken/seed-1")
    markdown = (out / "study.md").read_text()
    assert "`broken` seed 1: error: num_frozen_layers is 9" in markdown and "No run finished" in markdown


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_edited_study_is_refused_and_an_unchanged_one_resumes(tiny_bert, easy_task, tmp_path, capsys):
    """A rerun of the same study skips its finished runs; an edited study (a variant's flag, a data file's
    content) stops with one line naming the difference, leaving the folder byte-identical; --start_fresh runs
    the edited study from scratch."""
    import shutil

    data = tmp_path / "data"
    data.mkdir()
    task = {name: shutil.copy(path, data / path.name) for name, path in easy_task.items()}
    out = tmp_path / "out"
    variants = [{"name": "baseline"}]
    extra = {"measure_latency": False}
    study = write_study(tmp_path, tiny_bert, task, variants, seeds=[1], **extra)
    assert run_hfopt("compare", study, "--output_dir", out, "--no_progress", timeout=600).returncode == 0
    again = run_hfopt("compare", study, "--output_dir", out, "--no_progress", timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(read_json(out / "records" / "baseline--seed-1.json")["attempts"]) == 1  # skipped, not rerun
    before = _snapshot(out)

    edited = yaml.safe_load(study.read_text())
    edited["args"]["learning_rate"] = 1e-3
    study.write_text(yaml.safe_dump(edited))
    refused = compare_here(capsys, study, "--output_dir", out, "--no_progress")
    assert refused.returncode == 2 and one_error_line(refused) == (
        f"error: output_dir {out} holds the runs of a study with other settings (variant 'baseline' learning_rate: "
        "0.002 → 0.001); its finished runs would be reported as this study's: pass --start_fresh to run the study "
        "again from scratch there, or choose another --output_dir"
    )
    dry = compare_here(capsys, study, "--output_dir", out, "--dry_run")
    assert dry.returncode == 2 and "holds the runs of a study with other settings" in one_error_line(dry)
    assert _snapshot(out) == before

    study.write_text(yaml.safe_dump(dict(edited, args={**edited["args"], "learning_rate": 2e-3})))  # as it was
    with open(task["train"], "a") as fh:
        fh.write("a sunny day,1\n")
    changed = compare_here(capsys, study, "--output_dir", out, "--no_progress")
    assert changed.returncode == 2 and f"({task['train']}: its content changed)" in one_error_line(changed)
    assert _snapshot(out) == before

    study.write_text(yaml.safe_dump(edited))
    fresh = run_hfopt("compare", study, "--output_dir", out, "--no_progress", "--start_fresh", timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert len(read_json(out / "records" / "baseline--seed-1.json")["attempts"]) == 1
    run_config = yaml.safe_load((out / "runs" / "baseline" / "seed-1" / "config.yaml").read_text())
    assert run_config["learning_rate"] == 1e-3 and yaml.safe_load((out / "study.yaml").read_text()) == edited


def test_a_study_never_writes_where_it_reads(tiny_bert, easy_task, tmp_path, capsys):
    """--output_dir apart from the study's data and model (one line, nothing written), and a folder of study
    runs with no record of their study is not taken as this study's."""
    import shutil

    data = tmp_path / "data"
    data.mkdir()
    task = {name: shutil.copy(path, data / path.name) for name, path in easy_task.items()}
    study = write_study(tmp_path, tiny_bert, task, [{"name": "a"}], seeds=[1])
    before = _snapshot(tmp_path)
    result = compare_here(capsys, study, "--output_dir", data)
    assert result.returncode == 2 and one_error_line(result) == (
        f"error: --output_dir {data} contains variant 'a' train_file {task['train']}, which this command reads; it "
        "would write into or over its own input: choose an --output_dir apart from it"
    )
    inside = compare_here(capsys, study, "--output_dir", tiny_bert / "study")
    assert inside.returncode == 2 and f"lies inside variant 'a' model_name_or_path {tiny_bert}" in inside.stderr
    assert _snapshot(tmp_path) == before and not (tiny_bert / "study").exists()

    old = tmp_path / "old"
    (old / "runs" / "a" / "seed-1").mkdir(parents=True)
    legacy = compare_here(capsys, study, "--output_dir", old)
    assert legacy.returncode == 2
    assert f"output_dir {old} holds study runs but no study_spec.json recording" in one_error_line(legacy)


def test_two_runs_at_once_each_on_one_core_match_the_runs_one_after_another(six_runs, tmp_path):
    """--parallel 2 on this machine: four of the six runs (two variants × the two seeds, same arguments), two at
    a time, each pinned to its own core with one thread; the report says which ran beside which and that their
    timings are not evidence; the metrics equal those of the same runs in the six-run study, run one after
    another."""
    _, alone, _ = six_runs
    study = write_study(tmp_path, *_study_inputs(six_runs), VARIANTS[::2])
    together = tmp_path / "together"
    result = run_hfopt("compare", study, "--output_dir", together, "--no_progress", "--parallel", "2", timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]

    runs = {(r["variant"], r["seed"]): r for r in read_json(together / "study.json")["runs"]}
    assert set(runs) == {(v["name"], seed) for v in VARIANTS[::2] for seed in (1, 2)}
    assert all(r["status"] == "complete" and r["torch_threads"] == 1 for r in runs.values())
    assert all(r["concurrent_with"] for r in runs.values())  # two at a time, all four
    records = [read_json(p) for p in sorted((together / "records").glob("*.json"))]
    assert {r["attempts"][-1]["slot"] for r in records} == {0, 1}
    assert "Runs shared the machine: up to 2 ran at once" in (together / "study.md").read_text()
    sequential = {(r["variant"], r["seed"]): r for r in read_json(alone / "study.json")["runs"]}
    assert not any(r["concurrent_with"] for r in sequential.values())
    for key, run in runs.items():
        assert run["eval_accuracy"] == sequential[key]["eval_accuracy"]
        assert run["eval_loss"] == pytest.approx(sequential[key]["eval_loss"], abs=1e-5)


def test_a_study_on_slurm_is_a_job_array_whose_runs_equal_the_local_ones(six_runs, slurm_cluster, tmp_path):
    """executor: slurm on a real single-node Slurm: four of the six runs (two variants × the two seeds, same
    arguments) are the tasks of one job array, two at a time (slurm_array_parallelism: 2); each record names its
    task and host, and the metrics equal those of the same runs in the six-run study run on this machine (same
    seeds, same numbers)."""
    _, alone, _ = six_runs
    slurm = {"slurm_array_parallelism": 2, "cpus_per_run": 1, "time_min": 30}
    study = write_study(tmp_path, *_study_inputs(six_runs), VARIANTS[::2], executor="slurm", slurm=slurm)
    out = tmp_path / "out"
    result = run_hfopt("compare", study, "--output_dir", out, "--no_progress", timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]

    records = [read_json(p) for p in sorted((out / "records").glob("*.json"))]
    attempts = [r["attempts"][-1] for r in records]
    assert len(records) == 4 and all(r["status"] == "complete" and r["job"] is None for r in records)
    assert all(a["slurm_state"] == "COMPLETED" and a["exit_code"] == 0 for a in attempts)
    array_ids = {a["slurm_job_id"].split("_")[0] for a in attempts}
    assert len(array_ids) == 1 and sorted(int(a["slurm_job_id"].split("_")[1]) for a in attempts) == list(range(4))
    script = next((out / "slurm").glob("*_submission.sh")).read_text()
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --cpus-per-task=1" in script
    runs = {(r["variant"], r["seed"]): r for r in read_json(out / "study.json")["runs"]}
    sequential = {(r["variant"], r["seed"]): r for r in read_json(alone / "study.json")["runs"]}
    assert set(runs) == {(v["name"], seed) for v in VARIANTS[::2] for seed in (1, 2)}
    for key, run in runs.items():
        assert run["eval_accuracy"] == sequential[key]["eval_accuracy"]
        assert run["eval_loss"] == pytest.approx(sequential[key]["eval_loss"], abs=1e-6)
        assert run["host"]


def _study_inputs(six_runs):
    """(tiny_bert, easy_task) of the six_runs study, read back from its file."""
    args = yaml.safe_load(six_runs[0].read_text())["args"]
    return args["model_name_or_path"], {"train": args["train_file"], "validation": args["validation_file"]}
