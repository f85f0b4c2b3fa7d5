"""Every launch setting proven by a real run: CPU threads on each launch path, DeepSpeed ZeRO-2/3 (and offload)
and FSDP2 with two processes over gloo, CPU bf16, two simulated nodes and the Slurm script; fp16, bf16 on GPU
and tensor parallelism run where a GPU is, and skip here saying why."""

import json
import os
import socket
import stat
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from transformers import BertConfig, BertForMaskedLM

from hfopt.hardware import physical_cores
from tests.testing_utils import (
    ROOT,
    accuracy_of_saved_model,
    easy_rows,
    kill_after_checkpoint,
    make_tiny_bert,
    read_json,
    recipe_env,
    require_cuda,
    require_deepspeed,
    run_hfopt,
    run_recipe,
    train_losses,
    write_csv,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A tiny BERT saved without its classification head (as bert-base-uncased is): every launch setting must
    start the new head the same way on every process."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("base")
    tokenizer = AutoTokenizer.from_pretrained(make_tiny_bert(folder / "with_head"))
    torch.manual_seed(0)
    BertForMaskedLM(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).save_pretrained(folder / "base")
    tokenizer.save_pretrained(folder / "base")
    return folder / "base"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return {
        "train": write_csv(folder / "train.csv", easy_rows(400, 1)),
        "validation": write_csv(folder / "dev.csv", easy_rows(100, 2)),
    }


def args(model, data, out, *extra):
    """Global batch 16, no dropout: every launch setting must end at the same model."""
    return [
        "--model_name_or_path",
        model,
        "--train_file",
        data["train"],
        "--validation_file",
        data["validation"],
        "--output_dir",
        out,
        "--learning_rate",
        "2e-3",
        "--num_train_epochs",
        "4",
        "--disable_tqdm",
        "true",
        "--dropout",
        "0",
        "--logging_steps",
        "5",
        "--save_strategy",
        "no",
        *extra,
    ]


def reloaded_accuracy(folder, data):
    return accuracy_of_saved_model(folder, data["validation"])


@pytest.fixture(scope="module")
def reference(base_model, data, tmp_path_factory):
    """One process, batch 16: what the two-process settings must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "out"
    run_recipe("finetune_bert", args(base_model, data, out, "--per_device_train_batch_size", "16"))
    return read_json(out / "all_results.json")


# --- threads ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["accelerate launch", "hfopt launch", "python", "2-process DDP", "user's threads"])
def test_every_launch_path_uses_the_machines_cores(base_model, data, tmp_path, path):
    """`accelerate launch` without a config sets OMP_NUM_THREADS=1; the recipes give each process its share of the
    physical cores instead, unless the user chose a number."""
    out = tmp_path / "out"
    run_args = args(base_model, data, out, "--max_steps", "3", "--do_eval", "false")
    launcher = {
        "accelerate launch": [],
        "hfopt launch": [],
        "python": None,
        "user's threads": [],
        "2-process DDP": ["--config_file", "accelerate_configs/multi_gpu.yaml", "--num_processes", "2"],
    }[path]
    result = run_recipe(
        "finetune_bert",
        run_args,
        launcher=launcher,
        threads="1" if path == "user's threads" else None,
        launch_with="hfopt" if path == "hfopt launch" else "accelerate",
    )
    expected = {"user's threads": 1, "2-process DDP": max(1, physical_cores() // 2)}.get(path, physical_cores())
    assert read_json(out / "run_info.json")["torch_threads"] == expected
    assert ("OMP_NUM_THREADS set by you" in result.stderr) == (path == "user's threads")


# --- sharded and data-parallel settings ---------------------------------------------------------------------


@require_deepspeed
@pytest.mark.parametrize("config", ["deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload"])
def test_deepspeed_with_two_processes_matches_one_process(base_model, data, reference, tmp_path, config):
    """DeepSpeed on CPU runs over gloo in fp32 (--mixed_precision no). With no dropout and the same global batch,
    the final eval loss matches one process to 1e-4 (float sums in another order); ZeRO-3 gathers the weights
    into one model.safetensors that from_pretrained loads. Offload compiles DeepSpeed's CPU Adam on first use."""
    out = tmp_path / "out"
    run_recipe(
        "finetune_bert",
        args(base_model, data, out, "--per_device_train_batch_size", "8"),
        timeout=900,
        launcher=[
            "--config_file",
            f"accelerate_configs/{config}.yaml",
            "--num_processes",
            "2",
            "--mixed_precision",
            "no",
        ],
    )
    info, results = read_json(out / "run_info.json"), read_json(out / "all_results.json")
    assert info["distributed_type"] == "DEEPSPEED" and info["num_processes"] == 2 and info["global_batch_size"] == 16
    assert results["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-4)
    assert results["eval_accuracy"] >= 0.9
    assert reloaded_accuracy(out, data) == pytest.approx(results["eval_accuracy"])


@require_deepspeed
def test_deepspeed_asking_for_bf16_on_cpu_is_one_line(base_model, data, tmp_path):
    result = run_recipe(
        "finetune_bert",
        args(base_model, data, tmp_path / "o"),
        check=False,
        launcher=["--config_file", "accelerate_configs/deepspeed_zero2.yaml"],
        launch_with="hfopt",
    )
    assert result.returncode == 2 and "DeepSpeed on a machine without GPU trains in fp32" in result.stderr


def test_fsdp2_with_two_processes_trains_saves_reloads_and_resumes(base_model, data, reference, tmp_path):
    """FSDP2 shards over gloo on CPU; the new classification head, initialised on rank 0, reaches every rank. The
    run saves checkpoints (every 20 of its 100 steps; saving changes nothing it computes), and the same command,
    killed after its first checkpoint and run again, resumes and ends where the uninterrupted run ended."""
    launcher = ["--config_file", "accelerate_configs/fsdp.yaml", "--num_processes", "2", "--mixed_precision", "no"]
    # the later --save_strategy overrides args()'s "no"
    run_args = ["--per_device_train_batch_size", "8", "--save_strategy", "steps", "--save_steps", "20"]
    out, resumed = tmp_path / "out", tmp_path / "resumed"
    run_recipe("finetune_bert", args(base_model, data, out, *run_args), launcher=launcher)
    info, results = read_json(out / "run_info.json"), read_json(out / "all_results.json")
    assert info["distributed_type"] == "FSDP" and info["num_processes"] == 2
    assert results["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-4)
    assert reloaded_accuracy(out, data) == pytest.approx(results["eval_accuracy"])  # a full state dict

    # the same arguments (only output_dir differs): killed after its first checkpoint, then run again
    script = str(ROOT / "recipes" / "finetune_bert.py")
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *launcher,
        script,
        *map(str, args(base_model, data, resumed, *run_args)),
    ]
    kill_after_checkpoint(command, resumed / "checkpoint-20")
    second = run_recipe("finetune_bert", args(base_model, data, resumed, *run_args), launcher=launcher)
    assert "Resuming from" in second.stderr
    assert train_losses(resumed)[-4:] == pytest.approx(train_losses(out)[-4:], abs=1e-6)


def test_accelerate_still_leaves_fsdp_off_on_cpu():
    """hfopt switches FSDP on for CPU runs (hfopt.hardware._allow_fsdp_on_cpu) because accelerate does not; when
    this test fails, accelerate does it itself and the switch can go."""
    code = """
import os
os.environ.update(WORLD_SIZE="1", ACCELERATE_USE_CPU="true", ACCELERATE_USE_FSDP="true")
from accelerate import Accelerator
from accelerate.utils import FullyShardedDataParallelPlugin
print(Accelerator(fsdp_plugin=FullyShardedDataParallelPlugin(fsdp_version=2), cpu=True).distributed_type)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=recipe_env())
    assert result.stdout.strip().endswith(("NO", "MULTI_CPU")), result.stdout + result.stderr[-2000:]


def test_cpu_bf16_trains_under_autocast_and_saves_fp32_weights(base_model, data, tmp_path):
    out = tmp_path / "out"
    run_recipe(
        "finetune_bert",
        args(base_model, data, out, "--per_device_train_batch_size", "16"),
        launcher=["--config_file", "accelerate_configs/cpu_bf16.yaml"],
    )
    info, results = read_json(out / "run_info.json"), read_json(out / "all_results.json")
    assert info["mixed_precision"] == "bf16" and results["eval_accuracy"] >= 0.9
    losses = train_losses(out)
    assert losses[-1] < 0.6 * losses[0]
    with safe_open(str(out / "model.safetensors"), framework="pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float32}


@require_cuda("fp16 autocast with loss scaling runs on CUDA only")
@pytest.mark.parametrize("config", ["fp16", "bf16", "single_gpu"])
def test_gpu_precision_configs_train(base_model, data, tmp_path, config):
    out = tmp_path / "out"
    run_recipe(
        "finetune_bert",
        args(base_model, data, out, "--per_device_train_batch_size", "16"),
        launcher=["--config_file", f"accelerate_configs/{config}.yaml"],
    )
    assert read_json(out / "all_results.json")["eval_accuracy"] >= 0.9


@require_cuda("accelerate runs tensor parallelism with GPU processes only (its ParallelismConfig refuses MULTI_CPU)")
def test_tensor_parallel_trains_a_model_with_a_tp_plan(tmp_path):
    pytest.skip("tensor parallelism needs two GPUs and a model with a tensor-parallel plan (Llama-style)")


def test_fp16_without_cuda_skips_with_its_reason():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: test_gpu_precision_configs_train runs fp16 instead")
    result = run_hfopt(
        "launch", "--config_file", "accelerate_configs/fp16.yaml", "recipes/finetune_bert.py", "--max_steps", "1"
    )
    assert result.returncode == 2 and "fp16 mixed precision needs a CUDA GPU" in result.stderr


# --- several machines ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_simulated_nodes_train_as_one_two_process_run(base_model, data, reference, tmp_path):
    out, port = tmp_path / "out", free_port()
    recipe_args = args(base_model, data, out, "--per_device_train_batch_size", "8")

    def node(rank):
        launcher = [
            "--config_file",
            "accelerate_configs/multi_node.yaml",
            "--num_machines",
            "2",
            "--num_processes",
            "2",
            "--machine_rank",
            str(rank),
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            str(port),
            "--mixed_precision",
            "no",
        ]
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            *launcher,
            str(ROOT / "recipes" / "finetune_bert.py"),
            *map(str, recipe_args),
        ]
        return subprocess.Popen(
            command, env=recipe_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    nodes = [node(0), node(1)]
    outputs = [n.communicate(timeout=600) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    info = read_json(out / "run_info.json")
    assert info["num_processes"] == 2 and info["distributed_type"] == "MULTI_CPU"
    assert read_json(out / "all_results.json")["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-4)


def test_the_slurm_script_launches_what_the_readme_command_launches(tmp_path):
    """recipes/launch.slurm with fake scontrol/srun/hfopt: every node's launch line parses (with accelerate's
    own parser) to the same arguments as the command written by hand, the recipe's arguments intact."""
    from accelerate.commands.launch import launch_command_parser

    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    fakes = {
        "scontrol": "#!/bin/bash\necho node1; echo node2\n",
        "srun": '#!/bin/bash\nshift\nfor id in 0 1; do SLURM_NODEID=$id "$@"; done\n',
        "hfopt": f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n",
    }
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    recipe_args = ["--text_column_names", "review text", "--lr_scheduler_kwargs", '{"min_lr": 1e-5}']
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_NNODES": "2",
        "GPUS_PER_NODE": "4",
    }
    subprocess.run(
        ["bash", str(ROOT / "recipes" / "launch.slurm"), "recipes/finetune_bert.py", *recipe_args],
        check=True,
        env=env,
        cwd=ROOT,
    )
    lines = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(lines) == 2 and all(line[0] == "launch" for line in lines)
    parser = launch_command_parser()
    for rank, line in enumerate(lines):
        by_hand = [
            "--config_file",
            "accelerate_configs/multi_node.yaml",
            "--num_machines",
            "2",
            "--num_processes",
            "8",
            "--machine_rank",
            str(rank),
            "--main_process_ip",
            "node1",
            "--main_process_port",
            "29500",
            "--rdzv_backend",
            "c10d",
            "recipes/finetune_bert.py",
            *recipe_args,
        ]
        assert vars(parser.parse_args(line[1:])) == vars(parser.parse_args(by_hand))
