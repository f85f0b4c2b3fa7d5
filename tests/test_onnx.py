"""hfopt.compression.onnx: export → ONNX Runtime with the PyTorch logits, pruned models, int8 (dynamic and
static) on the keyword task, greedy generation equal to `generate`, the `hfopt compress --onnx` stages, and the
one line a missing extra gives."""

import json
import sys

import numpy as np
import pytest
import torch

from hfopt.errors import InputError
from tests.testing_utils import (
    STAGE_FIELDS,
    TINY_MARIAN,
    WORDS,
    easy_rows,
    make_bert_tokenizer,
    random_batch,
    read_json,
    require_onnx,
    run_hfopt,
    run_recipe,
    tiny_bert_model,
    tiny_gpt2_model,
    toy_pairs,
    write_csv,
)

pytestmark = require_onnx


def batches(n: int, length: int, seed: int, vocab: int = 60) -> dict:
    """A batch of n rows; from 2 rows on, later rows are padded (at different lengths)."""
    batch = random_batch(n=n, length=length, seed=seed, vocab=vocab)
    for row in range(1, n):
        batch["attention_mask"][row, length - 2 * row :] = 0
    return batch


def marian(tmp_path=None):
    """A tiny random Marian whose greedy outputs differ by input, end at different steps and go through the
    generation config's processors (bad words, no-repeat n-grams, forced EOS)."""
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(0)
    config = MarianConfig(
        vocab_size=100,
        decoder_vocab_size=100,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=99,
        eos_token_id=0,
        decoder_start_token_id=99,
        init_std=1.0,
    )
    model = MarianMTModel(config).eval()
    model.generation_config.no_repeat_ngram_size = 2
    model.generation_config.bad_words_ids = [[99]]
    with torch.no_grad():
        model.final_logits_bias[0, 0] = 6.0  # EOS likely enough that rows end at different steps
    return model


# --- export and parity ----------------------------------------------------------------------------------------


def test_bert_export_matches_pytorch_at_batch_1_and_3_with_padding(tmp_path):
    from hfopt.compression.onnx import export_onnx, load_onnx

    model = tiny_bert_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folder = export_onnx(model, None, tmp_path / "bert")
    record = read_json(folder / "onnx_export.json")
    assert record["task"] == "classification" and record["files"] == ["model.onnx"]
    assert record["parity"]["max_abs_logit_difference"] <= 1e-4 and record["opset"] >= 18
    assert record["fusions"]["attention"] == 2 and record["fusions"]["skip_layer_normalization"] == 4
    onnx_model = load_onnx(folder)
    for batch in (batches(1, 9, seed=3), batches(3, 17, seed=4)):  # lengths unlike the export's sample
        with torch.no_grad():
            expected = model(**batch).logits
        got = onnx_model(**batch).logits
        assert isinstance(got, torch.Tensor) and got.shape == expected.shape
        assert (got - expected).abs().max() <= 1e-4
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert onnx_model.config.num_labels == 2 and onnx_model.eval() is onnx_model


def test_gpt2_export_logits_and_greedy_generation_match_pytorch(tmp_path):
    from transformers.pytorch_utils import Conv1D

    from hfopt.compression.onnx import export_onnx, load_onnx, quantize_onnx

    model = tiny_gpt2_model()
    folder = export_onnx(model, None, tmp_path / "gpt2")
    assert isinstance(model.transformer.h[0].attn.c_attn, Conv1D)  # converted on a copy only
    record = read_json(folder / "onnx_export.json")
    assert record["task"] == "causal_lm" and record["inputs"]["model.onnx"][-1] == "position_ids"
    onnx_model = load_onnx(folder)
    batch = batches(3, 12, seed=5)
    with torch.no_grad():
        expected = model(**batch).logits
    real = batch["attention_mask"].bool()
    assert (onnx_model(**batch).logits - expected)[real].abs().max() <= 1e-4
    left = {  # prompts left-padded, as generate wants them
        "input_ids": torch.tensor([[0, 0, 7, 8, 9], [11, 12, 13, 14, 15], [0, 0, 0, 21, 22]]),
        "attention_mask": torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]),
    }
    for kwargs in (
        {"max_new_tokens": 6},
        {"max_new_tokens": 4, "min_new_tokens": 4, "repetition_penalty": 1.3},
        {},  # transformers' default: 20 new tokens, within the 32 positions
    ):
        with torch.no_grad():
            expected = model.generate(**left, do_sample=False, num_beams=1, pad_token_id=0, **kwargs)
        got = onnx_model.generate(**left, do_sample=False, num_beams=1, pad_token_id=0, **kwargs)
        assert torch.equal(got, expected)
    with pytest.raises(ValueError, match="greedily"):
        onnx_model.generate(**left, num_beams=2)
    onnx_model.generation_config.num_beams = 4  # as in many hub models' generation configs: no silent greedy
    with pytest.raises(ValueError, match="not with do_sample=False, num_beams=4"):
        onnx_model.generate(**left, max_new_tokens=2)
    assert onnx_model.generate(**left, max_new_tokens=2, num_beams=1).shape == (3, 7)
    static = quantize_onnx(folder, tmp_path / "static", "static", [batches(4, 12, seed=s) for s in range(3)])
    # GPT-2's tanh GELU is not fused: its down-projections are found through the elementwise ops around the Tanh
    assert read_json(static / "onnx_export.json")["quantization"]["float_matmuls_after_gelu"] == 2
    assert load_onnx(static)(**batch).logits.shape == (3, 12, 60)


def test_head_and_ffn_pruned_bert_exports(tmp_path):
    """Layers with different head counts (3 and 2, each fused with its own) and shrunk feed-forward blocks,
    through save/load."""
    from hfopt.compression import load_compressed, prune_ffn, remove_heads, save_compressed
    from hfopt.compression.onnx import export_onnx, load_onnx

    model = tiny_bert_model()
    remove_heads(model, {0: [1], 1: [0, 2]})
    prune_ffn(model, 0.5)
    pruned = load_compressed(save_compressed(model, tmp_path / "pruned"))
    assert [layer.attention.self.num_attention_heads for layer in pruned.bert.encoder.layer] == [3, 2]
    folder = export_onnx(pruned, None, tmp_path / "onnx")
    assert read_json(folder / "onnx_export.json")["fusions"]["attention"] == 2
    batch = batches(3, 11, seed=6)
    with torch.no_grad():
        expected = pruned(**batch).logits
    onnx_model = load_onnx(folder)
    assert (onnx_model(**batch).logits - expected).abs().max() <= 1e-4
    full = load_onnx(export_onnx(tiny_bert_model(), None, tmp_path / "full"))
    assert onnx_model.num_parameters < full.num_parameters


def tiny_classifier(family: str):
    """A tiny random 3-class classifier of another encoder family than BERT, in eval mode."""
    import transformers

    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    configs = {
        "distilbert": ("DistilBert", dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64)),
        "roberta": ("Roberta", dict(sizes, pad_token_id=1)),  # positions count from pad_token_id + 1
        "deberta-v2": ("DebertaV2", dict(sizes, pad_token_id=0)),
        "electra": ("Electra", dict(sizes, embedding_size=16)),
    }
    prefix, values = configs[family]
    config = getattr(transformers, f"{prefix}Config")(vocab_size=60, num_labels=3, max_position_embeddings=40,
                                                      **values)  # fmt: skip
    torch.manual_seed(0)
    return getattr(transformers, f"{prefix}ForSequenceClassification")(config).eval()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["distilbert", "roberta", "deberta-v2", "electra"])
def test_pruned_classifiers_of_other_encoder_families_export_and_quantize(family, tmp_path):
    """Users bring DistilBERT, RoBERTa, DeBERTa and ELECTRA as often as BERT: head- and FFN-pruned, each exports
    with the PyTorch logits on a padded batch, and its dynamic int8 graph agrees with them."""
    from hfopt.compression import load_compressed, prune_ffn, remove_heads, save_compressed
    from hfopt.compression.onnx import export_stages, load_onnx

    model = tiny_classifier(family)
    remove_heads(model, {0: [1], 1: [0, 2]})
    prune_ffn(model, 0.5)
    pruned = load_compressed(save_compressed(model, tmp_path / "pruned"))
    assert pruned.num_parameters() < tiny_classifier(family).num_parameters()
    folders = export_stages(pruned, None, ["onnx", "onnx_int8"], tmp_path / "onnx", "classification")
    batch = batches(3, 11, seed=6)
    with torch.no_grad():
        expected = pruned(**batch).logits
    assert (load_onnx(folders["onnx"])(**batch).logits - expected).abs().max() <= 1e-4
    int8 = load_onnx(folders["onnx_int8"])(**batch).logits
    assert (int8 - expected).abs().max() <= 0.1 * max(1.0, expected.abs().max().item())


def test_magnitude_pruned_zeros_are_counted_and_int8_keeps_the_weights(tmp_path):
    from hfopt.compression import prune_magnitude
    from hfopt.compression.onnx import export_onnx, load_onnx, quantize_onnx

    model = tiny_bert_model()
    prune_magnitude(model, amount=0.5)
    folder = export_onnx(model, None, tmp_path / "fp32", optimize=False)
    fp32 = load_onnx(folder)
    int8 = load_onnx(quantize_onnx(folder, tmp_path / "int8"))
    assert fp32.num_nonzero_parameters < 0.8 * fp32.num_parameters
    assert int8.num_parameters == fp32.num_parameters  # the int8 weights replace the float ones, one for one
    size = {m: (m.path / "model.onnx").stat().st_size for m in (fp32, int8)}
    assert size[int8] < 0.75 * size[fp32]


def test_weights_over_the_protobuf_limit_go_to_external_data(tmp_path, monkeypatch):
    """With the 2 GB limit lowered to 1 kB, a tiny GPT-2 classifier goes the way a large model would: graph plus
    model.onnx.data, through export, both quantizations and loading."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from hfopt.compression import onnx

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=60, n_embd=32, n_layer=2, n_head=4, n_positions=32, num_labels=2, pad_token_id=0)
    model = GPT2ForSequenceClassification(config).eval()
    batch = batches(3, 10, seed=8)
    batch["input_ids"][batch["attention_mask"] == 0] = 0  # GPT-2 classifies at the last non-pad token
    with torch.no_grad():
        expected = model(**batch).logits
    monkeypatch.setattr(onnx.export, "PROTOBUF_LIMIT", 1000)
    fused = onnx.export_onnx(model, None, tmp_path / "fp32")
    plain = onnx.export_onnx(model, None, tmp_path / "plain", optimize=False)
    folders = [
        fused,
        onnx.quantize_onnx(plain, tmp_path / "dynamic", "dynamic"),
        onnx.quantize_onnx(fused, tmp_path / "static", "static", [batch]),
    ]
    for folder in folders:
        assert (folder / "model.onnx.data").stat().st_size > 20_000  # the weights (28k; int8: a byte each)
        got = onnx.load_onnx(folder)(**batch).logits
        assert (got - expected).abs().max() <= (1e-4 if folder == fused else 0.05)
    assert onnx.load_onnx(fused).num_parameters > 20_000


def test_a_failed_parity_check_writes_nothing(tmp_path, monkeypatch):
    from hfopt.compression import onnx

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("kept")
    monkeypatch.setattr(onnx.export, "_parity", lambda folder, graphs: (0.02, 4.0))
    with pytest.raises(
        RuntimeError,
        match=r"does not match PyTorch: max abs logit difference 2.00e-02 > 1e-03 × max\(1, max abs logit 4\)",
    ):
        onnx.export_onnx(tiny_bert_model(), None, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_quantized_torch_models_are_refused_with_one_line(tmp_path):
    from hfopt.compression import quantize
    from hfopt.compression.onnx import export_onnx

    with pytest.raises(InputError, match="a torch.ao int8 model cannot be exported to ONNX: export the float model"):
        export_onnx(quantize(tiny_bert_model(), "dynamic_int8"), None, tmp_path / "q")
    with pytest.raises(InputError, match=r"needs a float32 model, this one has \['torch.float16'\]"):
        export_onnx(quantize(tiny_bert_model(), "fp16"), None, tmp_path / "h")
    assert not (tmp_path / "q").exists() and not (tmp_path / "h").exists()


def test_a_missing_extra_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from hfopt.commands.compress import main
    from hfopt.compression.onnx import export_onnx, load_onnx

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    message = 'the onnx stages need onnxruntime: pip install "hfopt[onnx]"'
    for call in (lambda: export_onnx(tiny_bert_model(), None, tmp_path / "x"), lambda: load_onnx(tmp_path)):
        with pytest.raises(InputError) as err:
            call()
        assert str(err.value) == message
    code = main(
        [str(tmp_path), "--eval_file", str(tmp_path / "dev.csv"), "--output_dir", str(tmp_path / "o"), "--onnx"]
    )
    assert code == 2 and capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "o").exists()


# --- int8 ------------------------------------------------------------------------------------------------------


def test_int8_models_of_a_random_bert_run_and_stay_near_fp32(tmp_path, monkeypatch):
    import onnx as onnx_lib

    from hfopt.compression.onnx import export_onnx, load_onnx, quantize_onnx

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    model = tiny_bert_model()
    plain = export_onnx(model, None, tmp_path / "plain", optimize=False)
    fused = export_onnx(model, None, tmp_path / "fused")
    calibration = [batches(4, 12, seed=s) for s in range(4)]
    dynamic = quantize_onnx(plain, tmp_path / "dynamic", "dynamic")
    static = quantize_onnx(fused, tmp_path / "static", "static", calibration)
    ops = {
        name: {n.op_type for n in onnx_lib.load(str(folder / "model.onnx")).graph.node}
        for name, folder in (("dynamic", dynamic), ("static", static))
    }
    assert "MatMulInteger" in ops["dynamic"] and "QLinearMatMul" in ops["static"]
    record = read_json(static / "onnx_export.json")["quantization"]
    assert record["method"] == "static" and record["float_matmuls_after_gelu"] == 2  # the FFN down-projections
    batch = batches(3, 10, seed=9)
    with torch.no_grad():
        expected = model(**batch).logits
    for folder in (dynamic, static):
        got = load_onnx(folder)(**batch).logits
        assert got.shape == expected.shape and (got - expected).abs().max() < 0.1
    with pytest.raises(ValueError, match="calibration_batches"):
        quantize_onnx(fused, tmp_path / "nothing", "static")
    assert not any((tmp_path / "cwd").iterdir())  # the quantizer's scratch files went elsewhere


@pytest.mark.slow
def test_int8_onnx_models_agree_with_fp32_on_the_easy_task(tiny_teacher, easy_task, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hfopt.compression.onnx import export_onnx, load_onnx, quantize_onnx
    from hfopt.compression.tasks import load_task

    model = AutoModelForSequenceClassification.from_pretrained(tiny_teacher).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    task = load_task("classification", model, tokenizer, str(easy_task["validation"]), str(tiny_teacher))
    calibration = load_task("classification", model, tokenizer, str(easy_task["train"]), "", max_eval_samples=128)
    fp32 = export_onnx(model, tokenizer, tmp_path / "fp32")
    plain = export_onnx(model, tokenizer, tmp_path / "plain", optimize=False)
    models = {
        "fp32": load_onnx(fp32),
        "dynamic": load_onnx(quantize_onnx(plain, tmp_path / "dynamic", "dynamic")),
        "static": load_onnx(quantize_onnx(fp32, tmp_path / "static", "static", calibration.metric_batches)),
    }

    def predictions(m):
        with torch.inference_mode():
            return np.concatenate([m(**b).logits.argmax(-1).numpy() for b in task.metric_batches])

    reference = predictions(model)
    assert (predictions(models["fp32"]) == reference).all()
    for name in ("dynamic", "static"):
        agreement = (predictions(models[name]) == reference).mean()
        assert agreement >= 0.95, f"{name}: {agreement}"
        assert task.evaluate(models[name])["accuracy"] >= 0.9


# --- seq2seq ---------------------------------------------------------------------------------------------------


def test_marian_encoder_decoder_greedy_equals_generate(tmp_path):
    from hfopt.compression.onnx import export_onnx, load_onnx, quantize_onnx

    model = marian()
    folder = export_onnx(model, None, tmp_path / "marian")
    record = read_json(folder / "onnx_export.json")
    parity = record["parity"]  # this random model's logits are large (init_std 1): relative to their scale
    assert record["files"] == ["encoder.onnx", "decoder.onnx"]
    assert parity["max_abs_logit_difference"] <= 1e-5 * parity["max_abs_logit"]
    onnx_model = load_onnx(folder)
    g = torch.Generator().manual_seed(0)
    source = torch.randint(1, 98, (4, 12), generator=g)
    source[:, -1] = 0
    source[2, 8:], source[3, 5:], source[2, 7], source[3, 4] = 99, 99, 0, 0
    inputs = {"input_ids": source, "attention_mask": (source != 99).long()}
    outputs = []
    for kwargs in ({"max_new_tokens": 12}, {"max_new_tokens": 6, "min_new_tokens": 6}):
        with torch.no_grad():
            expected = model.generate(**inputs, do_sample=False, num_beams=1, **kwargs)
        got = onnx_model.generate(**inputs, do_sample=False, num_beams=1, **kwargs)
        assert torch.equal(got, expected), (got, expected)
        outputs.append(expected)
    expected = outputs[0]
    ends = [(row == 0).nonzero()[0].item() for row in expected]
    assert len(set(ends)) > 1 and len({tuple(r.tolist()) for r in expected}) == 4  # a test that can fail
    decoder_ids = expected[:, :5]
    with torch.no_grad():
        teacher_forced = model(**inputs, decoder_input_ids=decoder_ids).logits
    difference = (onnx_model(**inputs, decoder_input_ids=decoder_ids).logits - teacher_forced).abs().max()
    assert difference <= 1e-5 * teacher_forced.abs().max()
    int8 = load_onnx(quantize_onnx(folder, tmp_path / "int8", "dynamic"))
    assert int8.generate(**inputs, max_new_tokens=12).shape[0] == 4
    with pytest.raises(InputError, match="static int8 is for classification and causal LM"):
        quantize_onnx(folder, tmp_path / "static", "static", [inputs])
    with pytest.raises(InputError, match="is already quantized \\(dynamic\\): quantize a float one"):
        quantize_onnx(tmp_path / "int8", tmp_path / "int8_again", "dynamic")


# --- hfopt compress --onnx -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compress_writes_the_onnx_stages_and_their_report_rows(tiny_teacher, easy_task, tmp_path):
    out = tmp_path / "out"
    calibration = write_csv(tmp_path / "calibration.csv", easy_rows(64, seed=7))
    result = run_hfopt(
        "compress",
        tiny_teacher,
        "--eval_file",
        easy_task["validation"],
        "--prune_heads",
        "0.25",
        "--quantize",
        "dynamic_int8",
        "--backend",
        "onnxruntime",  # every ONNX Runtime stage, as a bare --onnx
        "--calibration_file",
        calibration,
        "--calibration_samples",
        "48",
        "--output_dir",
        out,
        "--latency_repeats",
        "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = read_json(out / "compression_report.json")
    stages = report["stages"]
    order = ["original", "prune_heads_0.25", "quantize_dynamic_int8", "onnx", "onnx_int8", "onnx_int8_static"]
    markdown = (out / "compression_report.md").read_text()
    rows = [line.split(" | ")[0][2:] for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    assert list(stages) == order and rows[1:] == order
    for stage in stages.values():
        assert set(stage) == STAGE_FIELDS | {"accuracy", "f1", "delta_accuracy", "delta_f1"}
    pruned = stages["prune_heads_0.25"]
    assert stages["onnx"]["parameters"] == pruned["parameters"] < stages["original"]["parameters"]
    assert stages["onnx"]["accuracy"] == pruned["accuracy"] >= 0.9
    for name in ("onnx_int8", "onnx_int8_static"):
        assert stages[name]["delta_accuracy"] >= -0.05 and stages[name]["size_bytes"] < stages["onnx"]["size_bytes"]
    assert report["onnx"]["exported_from"] == "prune_heads_0.25"
    assert report["onnx"]["calibration"] == f"{calibration}, first 48 rows"
    assert report["onnx"]["stages"]["onnx"]["float_graph_parity"]["max_abs_logit_difference"] <= 1e-4
    assert report["onnx"]["stages"]["onnx_int8_static"]["quantization"]["calibration_batches"] == 3
    assert "spinning threads off" in markdown

    from transformers import AutoTokenizer

    from hfopt.compression.onnx import load_onnx

    for name in ("onnx", "onnx_int8", "onnx_int8_static"):
        folder = out / "onnx" / name
        tokenizer = AutoTokenizer.from_pretrained(folder)
        logits = load_onnx(folder)(
            **tokenizer(["the day was sunny", "a sad cold evening"], return_tensors="pt", padding=True)
        ).logits
        assert logits.argmax(-1).tolist() == [1, 0], name
    assert {p.name for p in out.glob(".*")} <= {".hfopt.lock"} and not list((out / "onnx").glob(".*"))  # no staging


@pytest.mark.slow
def test_compress_onnx_stages_of_a_causal_lm(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "lm"
    tokenizer = make_bert_tokenizer(WORDS, folder)
    torch.manual_seed(0)
    GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64)
    ).save_pretrained(folder)
    (tmp_path / "valid.txt").write_text("\n".join(s for s, _ in easy_rows(40, seed=3)) + "\n")
    out = tmp_path / "out"
    result = run_hfopt(
        "compress",
        folder,
        "--eval_file",
        tmp_path / "valid.txt",
        "--onnx",
        "onnx",
        "onnx_int8",
        "--max_new_tokens",
        "3",
        "--output_dir",
        out,
        "--latency_repeats",
        "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stages = read_json(out / "compression_report.json")["stages"]
    assert set(stages) == {"original", "onnx", "onnx_int8"}
    for stage in stages.values():
        assert set(stage) == STAGE_FIELDS | {"perplexity", "accuracy", "delta_perplexity", "delta_accuracy"}
    assert abs(stages["onnx"]["perplexity"] / stages["original"]["perplexity"] - 1) < 1e-4
    assert abs(stages["onnx_int8"]["perplexity"] / stages["original"]["perplexity"] - 1) < 0.05
    assert (out / "onnx" / "onnx_int8" / "model.onnx").is_file()


@pytest.mark.slow
def test_compress_onnx_stages_of_a_translation_model(tmp_path):
    """A tiny Marian trained on the toy language: the ONNX encoder/decoder's greedy translations are the
    PyTorch ones (same BLEU), and a bare --onnx leaves out static int8."""
    for split, n, seed in (("train", 1500, 1), ("valid", 60, 2)):
        rows = [json.dumps({"translation": p}) for p in toy_pairs(n, seed)]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    languages = ["--source_lang", "en", "--target_lang", "xx"]
    run_recipe(
        "finetune_translation",
        ["--train_file", tmp_path / "train.jsonl", "--validation_file", tmp_path / "valid.jsonl", *languages]
        + ["--output_dir", tmp_path / "mt", "--num_train_epochs", "6", *TINY_MARIAN],
    )
    out = tmp_path / "out"
    result = run_hfopt(
        "compress",
        tmp_path / "mt",
        "--eval_file",
        tmp_path / "valid.jsonl",
        *languages,
        "--onnx",
        "--max_new_tokens",
        "3",
        "--output_dir",
        out,
        "--latency_repeats",
        "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stages = read_json(out / "compression_report.json")["stages"]
    assert set(stages) == {"original", "onnx", "onnx_int8"}
    assert stages["original"]["bleu"] > 50 and stages["onnx"]["bleu"] == stages["original"]["bleu"]
    assert stages["onnx_int8"]["delta_bleu"] > -10
    assert sorted(p.name for p in (out / "onnx" / "onnx").glob("*.onnx")) == ["decoder.onnx", "encoder.onnx"]


def test_calibration_flags_need_the_static_stage(tmp_path, capsys):
    from hfopt.commands.compress import main

    common = [str(tmp_path), "--eval_file", str(tmp_path / "dev.csv"), "--output_dir", str(tmp_path / "o")]
    code = main([*common, "--onnx", "onnx", "--calibration_samples", "16"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "error: --calibration_samples goes with --onnx onnx_int8_static"
    code = main([*common, "--onnx", "--calibration_file", str(tmp_path / "missing.csv")])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"error: calibration_file {tmp_path / 'missing.csv'} does not exist"


def test_a_bare_onnx_flag_means_the_stages_the_task_has():
    from hfopt.pipeline.config import onnx_stage_names as stage_names

    assert stage_names([], "classification") == ["onnx", "onnx_int8", "onnx_int8_static"]
    assert stage_names(["onnx_int8", "onnx"], "causal_lm") == ["onnx", "onnx_int8"]
    assert stage_names([], "seq2seq") == ["onnx", "onnx_int8"]
    with pytest.raises(InputError, match="onnx_int8_static is for classification and causal_lm models"):
        stage_names(["onnx_int8_static"], "seq2seq")
