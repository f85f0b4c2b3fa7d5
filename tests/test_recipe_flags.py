"""Every flag a recipe accepts either works or is an error in that recipe.

Each recipe runs in this process (tiny models, a few steps) with every hfopt flag switched on, in each of its
modes (pretrained, from scratch, hyperparameter search); the recipe's argument objects record which of their
fields the run read. A field no mode reads must be in the recipe's UNSUPPORTED list, and giving it must stop the
recipe with one line."""

import contextlib
import dataclasses
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from hfopt.args import TranslationArguments
from tests.testing_utils import (
    ROOT,
    TINY_GPT,
    TINY_MARIAN,
    easy_rows,
    one_error_line,
    require_optuna,
    run_recipe,
    story_lines,
    tiny_bert_args,
    toy_pairs,
    write_csv,
)

pytestmark = pytest.mark.slow

INSPECTORS = ("hfopt/args.py", "dataclasses.py")
METRIC_SCRIPT = """
import datasets
import evaluate


class Agreement(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="", citation="", inputs_description="", features=datasets.Features(
            {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}))
    def _compute(self, predictions, references):
        return {"agreement": sum(p == r for p, r in zip(predictions, references)) / len(references)}
"""
TEXT_METRIC_SCRIPT = METRIC_SCRIPT.replace('"int64"', '"string"')


def load_recipe(name):
    spec = importlib.util.spec_from_file_location(f"walk_{name}", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tracked(obj, reads: set):
    """A copy of a dataclass instance of the same (sub)class that records the fields read outside the generic
    inspectors (parsing, config comparison, the run record), which read every field by design."""
    from hfopt.args import ArgumentGroup

    if isinstance(obj, ArgumentGroup):  # its parts tracked; a read through the group counts for its caller
        return type(obj)(*(tracked(part, reads) for part in obj.parts))
    names = {f.name for f in dataclasses.fields(obj)}

    def __getattribute__(self, name):
        caller = sys._getframe(1)
        if caller.f_code.co_name == "__getattr__" and caller.f_code.co_filename.endswith("hfopt/args.py"):
            caller = caller.f_back
        if name in names and not caller.f_code.co_filename.endswith(INSPECTORS):
            reads.add(name)
        return object.__getattribute__(self, name)

    cls = type(f"Tracked{type(obj).__name__}", (type(obj),), {"__getattribute__": __getattribute__})
    copy = object.__new__(cls)
    copy.__dict__.update(obj.__dict__)
    return copy


@contextlib.contextmanager
def process_threads_kept():
    """A recipe run in this process sets torch's threads and OMP_NUM_THREADS (for its subprocesses): both are
    restored after it, so that the tests after it see the process as it was."""
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp


def run_tracking(recipe, argv) -> set[str]:
    """Run recipe.main(argv) in this process; the names of the hfopt argument fields it read."""
    from transformers import TrainingArguments

    module = load_recipe(recipe)
    reads: set[str] = set()
    parse = module.parse_args

    def parse_and_track(*args, **kwargs):
        *objects, config = parse(*args, **kwargs)
        return (*[o if isinstance(o, TrainingArguments) else tracked(o, reads) for o in objects], config)

    module.parse_args = parse_and_track
    with process_threads_kept():
        try:
            module.main([str(a) for a in argv])
        except SystemExit as exit_:
            raise AssertionError(f"{recipe} stopped with exit code {exit_.code}") from None
    return reads


def hfopt_fields(recipe) -> set[str]:
    from transformers import TrainingArguments

    from hfopt.args import argument_dataclasses

    module = load_recipe(recipe)
    return {
        f.name
        for cls in argument_dataclasses(module.ARGUMENTS)
        if not issubclass(cls, TrainingArguments)
        for f in dataclasses.fields(cls)
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_bert):
    folder = tmp_path_factory.mktemp("walk")
    (folder / "agreement.py").write_text(METRIC_SCRIPT)
    (folder / "text_agreement.py").write_text(TEXT_METRIC_SCRIPT)
    write_csv(folder / "train.csv", easy_rows(120, 1))
    write_csv(folder / "dev.csv", easy_rows(40, 2))
    write_csv(folder / "test.csv", easy_rows(20, 3))
    (folder / "hub").mkdir()
    write_csv(folder / "hub" / "train.csv", easy_rows(120, 4))  # folders of files, as --dataset_name takes
    (folder / "lm_hub").mkdir()
    (folder / "lm_hub" / "train.txt").write_text("\n".join(story_lines(200, 4)) + "\n")
    (folder / "mt_hub").mkdir()
    (folder / "mt_hub" / "train.jsonl").write_text("\n".join(json.dumps({"translation": p}) for p in toy_pairs(200, 4)))
    for name, n, seed in (("train", 200, 1), ("dev", 40, 2), ("test", 20, 3)):
        (folder / f"{name}.txt").write_text("\n".join(story_lines(n, seed)) + "\n")
        rows = [json.dumps({"translation": p}) for p in toy_pairs(n, seed)]
        (folder / f"{name}.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def common(files, out, steps=4):
    return [
        "--output_dir",
        out,
        "--max_steps",
        steps,
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--logging_steps",
        1,
        "--eval_strategy",
        "steps",
        "--eval_steps",
        2,
        "--per_device_eval_batch_size",
        8,
    ]


STRATEGIES = [
    "--early_stopping_patience",
    3,
    "--early_stopping_min_delta",
    0.001,
    "--early_stopping_relative",
    "true",
    "--early_stopping_target",
    2.0,
    "--max_train_time",
    1000,
    "--freeze_embeddings",
    "true",
    "--num_frozen_layers",
    1,
    "--freeze_patterns",
    "pooler",
    "--unfreeze_every_n_steps",
    1,
    "--layerwise_lr_decay",
    0.9,
    "--l1_lambda",
    1e-6,
    "--lr_schedule",
    "exponential",
    "--lr_decay_gamma",
    0.99,
    "--watchdog",
    "skip",
    "--watchdog_spike_factor",
    100,
    "--log_throughput",
    "true",
    "--peak_flops",
    1e12,
    "--augment_deletion_prob",
    0.05,
    "--augment_swap_prob",
    0.05,
    "--batching",
    "tokens",
    "--max_tokens_per_batch",
    256,
    "--batch_size_warmup_steps",
    2,
    "--gradual_pruning_sparsity",
    0.2,
    "--gradual_pruning_start_step",
    1,
    "--gradual_pruning_end_step",
    3,
    "--gradual_pruning_frequency",
    1,
    "--metric_for_best_model",
    "loss",
    "--greater_is_better",
    "false",
]
SEARCH = [
    "--hp_search_trials",
    1,
    "--hp_search_objective",
    "loss",
    "--hp_search_direction",
    "minimize",
    "--hp_search_space",
    '{"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3}}',
    "--lr_schedule",
    "step",
    "--lr_decay_step_size",
    2,
]
RUN = ["--eval_before_training", "true", "--measure_latency", "true", "--start_fresh", "true"]


def modes(recipe, files, tiny_bert, tmp):
    """Each mode's arguments: together they switch every hfopt flag of the recipe on."""
    metric = ["--metric", files / "agreement.py"]
    search = [*SEARCH, "--hp_search_storage", tmp / "search.log", "--hp_search_study_name", f"{recipe}-flags"]
    if recipe == "finetune_bert":
        data = [
            "--train_file",
            files / "train.csv",
            "--validation_file",
            files / "dev.csv",
            "--test_file",
            files / "test.csv",
            "--do_predict",
            "true",
            "--text_column_names",
            "sentence",
            "--label_column_name",
            "label",
            "--max_seq_length",
            32,
            "--max_train_samples",
            100,
            "--max_eval_samples",
            30,
            "--max_predict_samples",
            10,
            "--preprocessing_num_workers",
            1,
        ]
        model = [
            "--model_name_or_path",
            tiny_bert,
            "--config_name",
            tiny_bert,
            "--tokenizer_name",
            tiny_bert,
            "--cache_dir",
            tmp / "cache",
            "--num_labels",
            2,
            "--ignore_mismatched_sizes",
            "true",
            "--config_overrides",
            "hidden_dropout_prob=0.1",
            "--dropout",
            0.1,
        ]
        peft = [
            "--use_peft",
            "true",
            "--lora_r",
            4,
            "--lora_alpha",
            8,
            "--lora_dropout",
            0.1,
            "--lora_target_modules",
            "query",
            "value",
            "--merge_adapters",
            "true",
        ]
        scratch = [
            "--model_type",
            "bert",
            "--config_overrides",
            "num_hidden_layers=2,hidden_size=32,num_attention_heads=2,intermediate_size=64",
            "--tokenizer_vocab_size",
            100,
            "--dataset_name",
            files / "hub",
            "--validation_split_percentage",
            20,
            "--qat",
            "int8",
            "--share_layers",
            1,
            "--share_layers_init",
            "central",
        ]
        return {
            "pretrained": [*model, *data, *peft, *STRATEGIES, *RUN, *metric],
            "scratch": scratch,
            "search": [*model[:2], *data[:4], *search],
        }
    if recipe == "distill_bert":
        data = [
            "--train_file",
            files / "train.csv",
            "--validation_file",
            files / "dev.csv",
            "--text_column_names",
            "sentence",
            "--label_column_name",
            "label",
            "--max_seq_length",
            32,
            "--max_train_samples",
            100,
            "--max_eval_samples",
            30,
            "--preprocessing_num_workers",
            1,
            "--validation_split_percentage",
            20,
        ]
        student = [
            "--teacher_model_name_or_path",
            tiny_bert,
            "--student_num_layers",
            1,
            "--student_layers",
            1,
            "--tokenizer_name",
            tiny_bert,
            "--cache_dir",
            tmp / "cache",
            "--dropout",
            0.1,
        ]
        kd = ["--alpha", 0.3, "--temperature", 3, "--hidden_loss_weight", 0.1, "--layer_map", 2]
        return {
            "student": [*student, *data, *kd, *STRATEGIES, *RUN, *metric],
            "own student": [
                "--teacher_model_name_or_path",
                tiny_bert,
                "--model_name_or_path",
                tiny_bert,
                "--train_file",
                files / "train.csv",
                "--qat",
                "int8",
                "--share_layers",
                1,
                "--share_layers_init",
                "central",
            ],
            "search": [*student[:4], *data[:4], *search],
            "no validation file": [*student[:4], "--dataset_name", files / "hub", "--validation_split_percentage", 20],
        }
    if recipe == "finetune_gpt":
        data = [
            "--train_file",
            files / "train.txt",
            "--validation_file",
            files / "dev.txt",
            "--test_file",
            files / "test.txt",
            "--do_predict",
            "true",
            "--text_column_names",
            "text",
            "--max_train_samples",
            150,
            "--max_eval_samples",
            30,
            "--max_predict_samples",
            10,
            "--preprocessing_num_workers",
            1,
            "--max_seq_length",
            64,
        ]
        lm = ["--block_size", 32, "--packing", "false", "--prompt", "The cat", "--max_new_tokens", 5]
        peft = [
            "--use_peft",
            "true",
            "--lora_r",
            4,
            "--lora_alpha",
            8,
            "--lora_dropout",
            0.1,
            "--lora_target_modules",
            "c_attn",
            "--merge_adapters",
            "true",
        ]
        scratch = [*TINY_GPT[:6], "--dropout", 0.1]
        gpt_strategies = [s for s in STRATEGIES if s not in ("--augment_deletion_prob", "--augment_swap_prob", 0.05)]
        return {
            "scratch": [*scratch, *data[:-2], *lm, *peft, *gpt_strategies, *RUN, *metric],
            "pretrained": [
                "--model_name_or_path",
                tmp / "gpt_base",
                "--config_name",
                tmp / "gpt_base",
                "--tokenizer_name",
                tmp / "gpt_base",
                "--cache_dir",
                tmp / "cache",
                "--config_overrides",
                "resid_pdrop=0.0",
                "--dataset_name",
                files / "lm_hub",
                "--validation_split_percentage",
                20,
                "--block_size",
                32,
                "--qat",
                "int8",
                "--share_layers",
                1,
                "--share_layers_init",
                "central",
            ],
            "search": [*scratch, "--train_file", files / "train.txt", "--validation_file", files / "dev.txt", *search],
            "chat": [
                *scratch,
                "--train_file",
                ROOT / "recipes" / "data" / "instruction" / "train.jsonl",
                "--validation_file",
                ROOT / "recipes" / "data" / "instruction" / "validation.jsonl",
                "--max_train_samples",
                100,
                "--max_eval_samples",
                20,
                "--data_format",
                "messages",
                "--chat_template",
                "simple",
                "--packing",
                "padding_free",
                "--completion_only_loss",
                "true",
                "--block_size",
                64,
            ],
        }
    data = [
        "--train_file",
        files / "train.jsonl",
        "--validation_file",
        files / "dev.jsonl",
        "--test_file",
        files / "test.jsonl",
        "--do_predict",
        "true",
        "--max_train_samples",
        150,
        "--max_eval_samples",
        20,
        "--max_predict_samples",
        10,
        "--preprocessing_num_workers",
        1,
    ]
    mt = [
        "--source_lang",
        "en",
        "--target_lang",
        "xx",
        "--source_prefix",
        "translate: ",
        "--max_source_length",
        24,
        "--max_target_length",
        24,
        "--num_beams",
        2,
    ]
    scratch = [*TINY_MARIAN[:6], "--dropout", 0.1]
    return {
        "scratch": [*scratch, *data, *mt, *STRATEGIES, *RUN, "--metric", files / "text_agreement.py"],
        "pretrained": [
            "--model_name_or_path",
            tmp / "mt_base",
            "--config_name",
            tmp / "mt_base",
            "--tokenizer_name",
            tmp / "mt_base",
            "--cache_dir",
            tmp / "cache",
            "--config_overrides",
            "dropout=0.0",
            "--dataset_name",
            files / "mt_hub",
            "--validation_split_percentage",
            20,
            "--qat",
            "int8",
            *mt,
        ],
        "search": [
            *scratch,
            *mt,
            "--train_file",
            files / "train.jsonl",
            "--validation_file",
            files / "dev.jsonl",
            *search,
        ],
    }


@require_optuna
@pytest.mark.parametrize("recipe", ["finetune_bert", "distill_bert", "finetune_gpt", "finetune_translation"])
def test_every_flag_works_or_is_an_error(recipe, files, tiny_bert, tmp_path):
    pytest.importorskip("evaluate")
    base = {"finetune_gpt": "gpt_base", "finetune_translation": "mt_base"}.get(recipe)
    if base:  # a small pretrained model for the mode that starts from one
        first = modes(recipe, files, tiny_bert, tmp_path)["search"][:8]
        lang = ["--source_lang", "en", "--target_lang", "xx", *TINY_MARIAN[6:10]] if base == "mt_base" else []
        run_recipe(
            recipe,
            [
                *first,
                "--train_file",
                files / ("train.txt" if base == "gpt_base" else "train.jsonl"),
                *lang,
                "--output_dir",
                tmp_path / base,
                "--max_steps",
                2,
                "--save_strategy",
                "no",
                "--disable_tqdm",
                "true",
            ],
        )
    reads: set[str] = set()
    for name, argv in modes(recipe, files, tiny_bert, tmp_path).items():
        reads |= run_tracking(recipe, [*argv, *common(files, tmp_path / name.replace(" ", "_"))])
    unsupported = set(getattr(load_recipe(recipe), "UNSUPPORTED", {}))
    assert hfopt_fields(recipe) - reads - unsupported == set(), "flags accepted but never read"


@pytest.mark.parametrize(
    "recipe, flag, value",
    [
        ("finetune_gpt", "num_labels", 3),
        ("finetune_gpt", "label_column_name", "label"),
        ("finetune_translation", "text_column_names", "a"),
        ("finetune_translation", "num_labels", 3),
        ("distill_bert", "model_type", "bert"),
        ("distill_bert", "do_predict", "true"),
        ("distill_bert", "tokenizer_vocab_size", 50),
    ],
)
def test_unsupported_flags_stop_with_one_line(recipe, flag, value, files, tiny_bert, tmp_path):
    data = {
        "finetune_gpt": ["--train_file", files / "train.txt"],
        "finetune_translation": ["--train_file", files / "train.jsonl", "--source_lang", "en", "--target_lang", "xx"],
        "distill_bert": ["--teacher_model_name_or_path", tiny_bert, "--train_file", files / "train.csv"],
    }[recipe]
    result = run_recipe(recipe, [*data, "--output_dir", tmp_path / "o", f"--{flag}", value], check=False)
    assert result.returncode == 2
    assert f"{recipe} does not take --{flag}:" in one_error_line(result)


def test_translation_arguments_are_only_in_the_translation_recipe():
    for recipe in ("finetune_bert", "finetune_gpt", "distill_bert"):
        assert TranslationArguments not in load_recipe(recipe).ARGUMENTS


def test_source_file_of_every_recipe_exists():
    assert {p.stem for p in (ROOT / "recipes").glob("*.py")} >= {
        "finetune_bert",
        "finetune_gpt",
        "finetune_translation",
        "distill_bert",
        "compress",
        "compare",
    }
    assert Path(ROOT / "recipes" / "launch.slurm").is_file()


def test_a_run_hashes_each_file_it_reads_once_and_records_them(tiny_bert, easy_task, tmp_path, monkeypatch):
    """The run plan carries the data files' fingerprints to the record callback and finish_run: each file (and
    model folder) is hashed once per run, and run_info.json records them."""
    import collections
    import json

    from hfopt.run import output_dir

    hashed = collections.Counter()
    fingerprint = output_dir.path_fingerprint

    def counting(path):
        hashed[str(path)] += 1
        return fingerprint(path)

    monkeypatch.setattr(output_dir, "path_fingerprint", counting)
    with process_threads_kept():
        load_recipe("finetune_bert").main([str(a) for a in tiny_bert_args(tiny_bert, easy_task, tmp_path / "o")])
    recorded = json.loads((tmp_path / "o" / "run_info.json").read_text())["data_files"]
    assert {r["path"] for r in recorded.values()} == set(hashed) and str(easy_task["train"]) in hashed
    assert set(hashed.values()) == {1}
