"""hfopt.compression: magnitude pruning, head/FFN pruning, quantization and the save/load round trip."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2LMHeadModel

from hfopt.compression import (
    load_compressed,
    prune_ffn,
    prune_heads,
    prune_magnitude,
    quantize,
    remove_heads,
    save_compressed,
    sparsity,
)
from hfopt.errors import InputError
from tests.testing_utils import random_batch, tiny_bert_model

tiny_bert = tiny_bert_model
inputs = random_batch


@torch.no_grad()
def logits(model, batch=None):
    return model(**(batch or inputs())).logits


@pytest.mark.parametrize("scope", ["global", "local"])
def test_magnitude_pruning_hits_the_sparsity_and_leaves_no_masks(tmp_path, scope):
    from hfopt.architectures import linear_layers

    model = tiny_bert()
    sizes = {name: module.weight.numel() for name, module in linear_layers(model)}
    result = prune_magnitude(model, amount=0.6, scope=scope)
    if scope == "global":  # exactly round(0.6 × all weights) zeros
        assert result["global"] * sum(sizes.values()) == pytest.approx(round(0.6 * sum(sizes.values())))
    else:  # exactly round(0.6 × n) zeros in each layer
        assert all(result[name] * n == pytest.approx(round(0.6 * n)) for name, n in sizes.items())
    assert not any("mask" in k or "orig" in k for k in model.state_dict())
    assert model.classifier.weight.ne(0).all()  # the task head is excluded
    model.save_pretrained(tmp_path / "plain")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "plain").eval()
    assert torch.equal(logits(model), logits(reloaded))
    assert sparsity(reloaded) == result


def test_magnitude_pruning_by_threshold_and_bad_amounts():
    model = tiny_bert()
    prune_magnitude(model, threshold=0.01)
    w = model.bert.encoder.layer[0].attention.self.query.weight
    assert (w.abs()[w != 0] >= 0.01).all()
    for amount in (-0.1, 1.0, 1.5):
        with pytest.raises(InputError, match=r"must be in \[0, 1\)"):
            prune_magnitude(tiny_bert(), amount=amount)


def test_removing_heads_equals_masking_them_and_round_trips(tmp_path):
    model = tiny_bert()
    masked = tiny_bert()  # same seed: same weights
    removed = {0: [1, 3], 1: [0]}
    size = 32 // 4
    with torch.no_grad():  # masking a head = zeroing its value rows: its context vector is then 0
        for layer, heads in removed.items():
            value = masked.bert.encoder.layer[layer].attention.self.value
            for h in heads:
                value.weight[h * size : (h + 1) * size] = 0
                value.bias[h * size : (h + 1) * size] = 0
    before = model.num_parameters()
    remove_heads(model, removed)
    assert torch.allclose(logits(model), logits(masked), atol=1e-5)
    # each removed head drops 3 × (hidden × size + size) in q/k/v and hidden × size in the output projection
    assert before - model.num_parameters() == 3 * (3 * (32 * size + size) + 32 * size)
    save_compressed(model, tmp_path / "heads")
    assert torch.equal(logits(load_compressed(tmp_path / "heads")), logits(model))


def test_prune_heads_and_ffn_by_importance(tmp_path):
    model = tiny_bert(layers=3)
    batch = {**inputs(8), "labels": torch.tensor([0, 1] * 4)}
    removed = prune_heads(model, amount=0.5, dataloader=[batch])
    assert sum(len(v) for v in removed.values()) == 6
    assert all(len(v) <= 3 for v in removed.values())
    sizes = prune_ffn(model, amount=0.25)
    assert sizes == [48, 48, 48]
    save_compressed(model, tmp_path / "structured")
    assert torch.equal(logits(load_compressed(tmp_path / "structured")), logits(model))


def file_size(folder):
    return sum(p.stat().st_size for p in folder.iterdir())


def test_quantized_round_trip_is_identical_and_smaller(tmp_path):
    model = tiny_bert(hidden=64, heads=4)
    model.save_pretrained(tmp_path / "fp32")
    quantize(model, "dynamic_int8", embeddings=True)
    save_compressed(model, tmp_path / "int8")
    reloaded = load_compressed(tmp_path / "int8")
    assert torch.equal(logits(reloaded), logits(model))
    assert file_size(tmp_path / "int8") < 0.5 * file_size(tmp_path / "fp32")


def test_pruned_then_quantized_round_trip(tmp_path):
    model = tiny_bert()
    remove_heads(model, {0: [0]})
    prune_magnitude(model, amount=0.5)
    quantize(model, "dynamic_int8")
    save_compressed(model, tmp_path / "both")
    assert torch.equal(logits(load_compressed(tmp_path / "both")), logits(model))


def test_gpt2_attention_and_mlp_are_quantized_and_ties_kept(tmp_path):
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=16)).eval()
    ids = torch.randint(0, 50, (2, 8))
    with torch.no_grad():
        reference = gpt(ids).logits
    quantize(gpt, "dynamic_int8", embeddings=True)
    block = gpt.transformer.h[0]
    for module in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
        assert isinstance(module, QLinear)
    assert gpt.lm_head.weight is gpt.transformer.wte.weight  # the tie is kept (both stay float)
    with torch.no_grad():
        quantized = gpt(ids).logits
    assert torch.allclose(quantized, reference, atol=0.1)
    save_compressed(gpt, tmp_path / "gpt")
    with torch.no_grad():
        assert torch.equal(load_compressed(tmp_path / "gpt")(ids).logits, quantized)


def test_int8_weight_only_round_trip_for_pruned_bert_and_gpt2(tmp_path):
    """torchao int8 weight-only: its tensor subclasses survive save_compressed/load_compressed bit for bit;
    GPT-2's attention and MLP are included and its tied head stays tied."""
    pytest.importorskip("torchao")
    model = tiny_bert(hidden=64)
    model.save_pretrained(tmp_path / "fp32")
    remove_heads(model, {0: [1]})
    reference = logits(model)  # pruned, still fp32: what int8 weight-only must stay close to
    quantize(model, "int8_weight_only")
    assert type(model.bert.encoder.layer[0].output.dense.weight).__name__ == "Int8Tensor"
    assert torch.allclose(logits(model), reference, atol=0.05)
    save_compressed(model, tmp_path / "bert")
    assert torch.equal(logits(load_compressed(tmp_path / "bert")), logits(model))
    assert file_size(tmp_path / "bert") < 0.5 * file_size(tmp_path / "fp32")

    gpt = tiny_gpt2()
    quantize(gpt, "int8_weight_only")
    block = gpt.transformer.h[0]
    assert all(
        type(m.weight).__name__ == "Int8Tensor"
        for m in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj)
    )
    assert gpt.lm_head.weight is gpt.transformer.wte.weight
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(4))
    save_compressed(gpt, tmp_path / "gpt")
    reloaded = load_compressed(tmp_path / "gpt")
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, gpt(ids).logits)
    assert reloaded.lm_head.weight is reloaded.transformer.wte.weight


def test_quantizing_a_cuda_model_is_a_clear_error(monkeypatch):
    model = tiny_bert()
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    with pytest.raises(InputError, match="runs on CPU only and this model is on CUDA"):
        quantize(model, "dynamic_int8")


def test_half_precision_casts(tmp_path):
    model = quantize(tiny_bert(), "bf16")
    assert model.bert.encoder.layer[0].output.dense.weight.dtype == torch.bfloat16
    save_compressed(model, tmp_path / "bf16")
    assert torch.equal(logits(load_compressed(tmp_path / "bf16")), logits(model))


def test_gradual_pruning_follows_the_cubic_schedule_and_checkpoints_reload(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from hfopt.compression import GradualPruningCallback

    model = tiny_bert()
    batch = inputs(32, seed=3)
    data = Dataset.from_dict({"input_ids": batch["input_ids"].tolist(), "labels": [0, 1] * 16})
    pruning = GradualPruningCallback(target_sparsity=0.8, start_step=2, end_step=10, frequency=2)
    seen = {}

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen[state.global_step] = pruning.current_sparsity()

    args = TrainingArguments(
        str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=12,
        learning_rate=1e-2,
        report_to="none",
        use_cpu=True,
        save_strategy="steps",
        save_steps=6,
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=data, callbacks=[pruning, Record()]).train()
    for step in range(1, 13):
        expected = 0.0 if step < 2 else 0.8 * (1 - (1 - (min(step // 2 * 2, 10) - 2) / 8) ** 3)
        assert seen[step] == pytest.approx(expected, abs=1e-3), step
    assert seen[12] == pytest.approx(0.8, abs=1e-3)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "checkpoint-12")
    assert sparsity(reloaded)["global"] == pytest.approx(0.8, abs=1e-3)
    assert not any("mask" in k for k in reloaded.state_dict())


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=24, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    return GPT2LMHeadModel(config).eval()


def test_gpt2_removing_heads_and_neurons_equals_masking_them_and_round_trips(tmp_path):
    model, masked = tiny_gpt2(), tiny_gpt2()  # same seed: same weights
    removed, kept_neurons = {0: [0, 2], 1: [3]}, {0: list(range(0, 128, 2)), 1: list(range(100))}
    size, width = 32 // 4, 32
    with torch.no_grad():
        for layer, heads in removed.items():  # a head whose value columns are zero contributes nothing
            c_attn = masked.transformer.h[layer].attn.c_attn
            for h in heads:
                c_attn.weight[:, 2 * width + h * size : 2 * width + (h + 1) * size] = 0
                c_attn.bias[2 * width + h * size : 2 * width + (h + 1) * size] = 0
        for layer, keep in kept_neurons.items():  # a neuron whose output row is zero contributes nothing
            c_proj = masked.transformer.h[layer].mlp.c_proj
            dropped = sorted(set(range(128)) - set(keep))
            c_proj.weight[dropped] = 0
    before = model.num_parameters()
    from hfopt.compression.pruning import shrink_ffn

    remove_heads(model, removed)
    shrink_ffn(model, kept_neurons)
    ids = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, masked(ids).logits, atol=1e-5)
    # a head: 3 × (32 × 8 + 8) in c_attn and 8 × 32 in c_proj; a neuron: 32 + 1 in c_fc and 32 in c_proj
    assert before - model.num_parameters() == 3 * (3 * (32 * size + size) + size * 32) + (64 + 28) * (32 + 1 + 32)
    assert model.config.hfopt_heads_per_layer == [2, 3] and model.config.hfopt_ffn_sizes == [64, 100]
    # generation (with its key/value cache) sees the pruned layers as they are
    prompt = ids[:1, :4]
    assert torch.equal(
        model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0),
        masked.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0),
    )
    # a trained model's config says use_cache=False (Trainer sets it); its generation config keeps the cache on,
    # and that is what the compressed folder must keep too, or it generates without its cache
    model.config.use_cache = False
    model.generation_config.use_cache, model.generation_config.max_new_tokens = True, 7
    save_compressed(model, tmp_path / "gpt2")
    reloaded = load_compressed(tmp_path / "gpt2")
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)
    assert reloaded.generation_config.use_cache is True and reloaded.generation_config.max_new_tokens == 7


def test_gpt2_prune_by_importance_then_quantize_round_trips(tmp_path):
    model = tiny_gpt2()
    ids = torch.randint(0, 50, (8, 12), generator=torch.Generator().manual_seed(3))
    batches = [{"input_ids": ids[i : i + 4], "labels": ids[i : i + 4]} for i in (0, 4)]
    removed = prune_heads(model, amount=0.25, dataloader=batches)
    assert sum(len(v) for v in removed.values()) == 2
    assert prune_ffn(model, amount=0.5, dataloader=batches) == [64, 64]
    quantize(model, "dynamic_int8")
    save_compressed(model, tmp_path / "gpt2")
    with torch.no_grad():
        assert torch.equal(load_compressed(tmp_path / "gpt2")(ids).logits, model(ids).logits)


def test_taylor_head_importance_matches_the_head_gate_gradient():
    """Michel et al.: the importance of a head is |∂L/∂ξ| for a gate ξ = 1 on its context vector, which equals
    |Σ W·∂L/∂W| over the head's inputs of the output projection."""
    from hfopt.compression import head_importance

    model = tiny_bert()
    batch = {**inputs(8), "labels": torch.tensor([0, 1] * 4)}
    scores = head_importance(model, [batch])
    gates = torch.ones(4, requires_grad=True)
    dense = model.bert.encoder.layer[1].attention.output.dense
    hook = dense.register_forward_pre_hook(lambda m, args: (args[0] * gates.repeat_interleave(8),))
    model(**batch).loss.backward()
    hook.remove()
    assert torch.allclose(scores[1], gates.grad.abs(), atol=1e-6)


def test_ranking_heads_after_some_were_removed_is_a_clear_error():
    for model in (tiny_bert(), tiny_gpt2()):
        remove_heads(model, {0: [1]})
        with pytest.raises(InputError, match="already pruned"):
            prune_heads(model, amount=0.25)
    with pytest.raises(InputError, match="not a model family hfopt knows the structure of; supported: BERT"):
        prune_heads(torch.nn.Sequential(torch.nn.Linear(2, 2)), amount=0.5)


@pytest.mark.parametrize(
    "damage, words",
    [
        ("architecture", "compression.json is damaged"),
        ("extra tensor", "saved weights do not match the recorded model"),
        ("missing tensor", "saved weights do not match the recorded model"),
        ("heads", "has shape"),
        ("quantized module", "names bert.encoder.layer.0.output as linear_int8, which this model does not have"),
    ],
)
def test_a_damaged_or_edited_record_never_loads_random_weights(tmp_path, damage, words):
    import json

    from safetensors.torch import load_file, save_file

    model = quantize(tiny_bert(), "dynamic_int8") if damage == "quantized module" else tiny_bert()
    folder = save_compressed(model, tmp_path / "m")
    record, weights = folder / "compression.json", folder / "model.safetensors"
    recipe, tensors = json.loads(record.read_text()), load_file(str(weights))
    if damage == "architecture":
        recipe["architecture"] = "NoSuchModel"
    elif damage == "extra tensor":
        tensors["stray.weight"] = torch.zeros(2)
    elif damage == "missing tensor":
        tensors.pop("bert.encoder.layer.1.output.dense.weight")
    elif damage == "heads":
        config = json.loads((folder / "config.json").read_text())
        config["hfopt_heads_per_layer"] = [2, 4]
        (folder / "config.json").write_text(json.dumps(config))
    else:  # the record renamed: an int8 module it names is not where the record says
        recipe["quantized_modules"] = {
            k.replace("0.output.dense", "0.output"): v for k, v in recipe["quantized_modules"].items()
        }
    record.write_text(json.dumps(recipe))
    save_file(tensors, str(weights))
    with pytest.raises(InputError, match=words):
        load_compressed(folder)


def test_the_size_of_a_run_folder_is_its_model_not_its_checkpoints(tmp_path):
    """`hfopt compress --compare teacher=RUN_DIR`: a recipe's output_dir holds checkpoint-*/ copies of the model,
    which counted three times over in the reported size."""
    from hfopt.compression.report import weights_size

    (tmp_path / "model.safetensors").write_bytes(b"\0" * 100)
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "model.safetensors").write_bytes(b"\0" * 1000)
    (tmp_path / "checkpoint-10" / "optimizer.bin").write_bytes(b"\0" * 2000)
    (tmp_path / "config.json").write_text("{}")
    assert weights_size(tmp_path) == 100
    (tmp_path / "model.onnx.data").write_bytes(b"\0" * 50)
    assert weights_size(tmp_path) == 150 and weights_size(tmp_path / "model.safetensors") == 100


def test_the_size_of_a_folder_with_one_model_in_two_formats_counts_it_once(tmp_path):
    """A Hub snapshot often holds model.safetensors and pytorch_model.bin (the same weights); a recipe's output_dir
    holds training_args.bin, which is no weight. A folder of .bin weights alone is counted."""
    from hfopt.compression.report import weights_size

    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 300)
    (tmp_path / "training_args.bin").write_bytes(b"\0" * 7)
    assert weights_size(tmp_path) == 300
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 280)
    assert weights_size(tmp_path) == 280


def test_vocabulary_pruning_keeps_the_used_tokens_maps_the_rest_to_unknown_and_round_trips(tmp_path):
    from transformers import AutoTokenizer

    from hfopt.compression import prune_vocabulary
    from hfopt.models import load_trained_model
    from tests.testing_utils import WORDS, make_tiny_bert

    folder = make_tiny_bert(tmp_path / "bert", words=WORDS)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    seen, unseen = WORDS[:6], WORDS[6]
    texts = [" ".join(seen[:3]), " ".join(seen[3:])]

    def encode(text):
        return dict(tokenizer([text], return_tensors="pt"))

    before = [logits(model, encode(" ".join(seen))), logits(model, encode(f"{seen[0]} {unseen}"))]
    as_unknown = logits(model, encode(f"{seen[0]} [UNK]"))
    parameters = sum(p.numel() for p in model.parameters())

    report = prune_vocabulary(model, tokenizer, texts)
    assert report["kept"] == 6 + len(tokenizer.all_special_ids) and report["vocabulary"] == len(tokenizer)
    assert sum(p.numel() for p in model.parameters()) == parameters - (len(tokenizer) - report["kept"]) * 32
    after = [logits(model, encode(" ".join(seen))), logits(model, encode(f"{seen[0]} {unseen}"))]
    assert torch.allclose(after[0], before[0], atol=1e-6)  # texts of kept tokens: the same model
    assert torch.allclose(after[1], as_unknown, atol=1e-6) and not torch.allclose(before[1], as_unknown)

    save_compressed(model, tmp_path / "pruned", tokenizer)
    batch = dict(tokenizer([" ".join(WORDS[:10])], return_tensors="pt"))
    assert torch.allclose(logits(load_compressed(tmp_path / "pruned"), batch), logits(model, batch), atol=1e-6)
    # the recipes' loader rebuilds it too (prune → fine-tune), and it trains: its embedding gets gradients
    again = load_trained_model(AutoModelForSequenceClassification, str(tmp_path / "pruned"))
    assert torch.allclose(logits(again.eval(), batch), logits(model, batch), atol=1e-6)
    again.train()
    again(**batch, labels=torch.tensor([1])).loss.backward()
    assert again.get_input_embeddings().weight.grad.abs().sum() > 0
    # then int8 with int8 embeddings, and back
    quantize(model, "dynamic_int8", embeddings=True)
    save_compressed(model, tmp_path / "int8", tokenizer)
    assert torch.allclose(logits(load_compressed(tmp_path / "int8"), batch), logits(model, batch), atol=1e-6)


def test_vocabulary_pruning_refuses_tied_outputs_and_tokenizers_without_an_unknown_token(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from transformers import GPT2TokenizerFast

    from hfopt.architectures import keep_vocabulary
    from hfopt.compression import prune_vocabulary

    lm = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50))
    with pytest.raises(InputError, match="output layer is tied to its input embeddings"):
        keep_vocabulary(lm, [1, 2, 3], unknown_id=0)
    byte_level = GPT2TokenizerFast(tokenizer_object=Tokenizer(BPE()), eos_token="<|endoftext|>")
    byte_level.add_special_tokens({"unk_token": "<|endoftext|>"})  # as GPT-2's: the unknown token is eos
    with pytest.raises(InputError, match="needs a tokenizer with an unknown token of its own"):
        prune_vocabulary(tiny_bert(), byte_level, ["a text"])


@pytest.mark.parametrize(
    "file, edit, words",
    [
        ("compression.json", {"quantization": {"method": "bf16"}}, "quantization.embeddings is"),
        ("compression.json", {"quantization": None}, "quantization is null"),
        ("compression.json", {"torchao_tensors": ["bert.pooler.dense.weight"]}, "torchao_tensors is"),
        ("config.json", {"hfopt_heads_per_layer": [[0, 1], [0, 1]]}, "hfopt_heads_per_layer is"),
        ("config.json", {"num_attention_heads": 2}, "num_attention_heads is 2, the weights were saved with 4"),
        ("config.json", {"hidden_act": "relu"}, "hidden_act is"),
        ("config.json", {"dtype": "float32"}, "dtype is"),
        ("config.json", {"id2label": {"0": "pos", "1": "neg"}}, "id2label"),
    ],
)
def test_an_edited_record_that_still_fits_the_shapes_is_refused(tmp_path, file, edit, words):
    """Edits to compression.json or config.json that keep every shape (other heads or amounts, quantization
    fields, a config value, the dtype) used to load a model other than the one saved; the weights file keeps the
    record it was saved with, and load_compressed names the first difference."""
    import json

    model = tiny_bert()
    if file == "compression.json" and "quantization" in edit:
        model = quantize(model, "fp16")
    remove_heads(model, {0: [1], 1: [0]})
    folder = save_compressed(model, tmp_path / "m")
    assert torch.equal(logits(load_compressed(folder).float()), logits(model.float()))
    path = folder / file
    values = json.loads(path.read_text())
    values.update(edit)
    path.write_text(json.dumps(values))
    with pytest.raises(InputError, match=f"{file} no longer describes model.safetensors: {words}"):
        load_compressed(folder)


def test_a_record_saying_other_quantization_than_the_weights_is_refused_without_the_stored_record(tmp_path):
    """A folder without the stored record (saved by an older hfopt, or its weights rewritten): the dtype of each
    tensor is still checked against what the record builds."""
    import json

    from safetensors.torch import load_file, save_file

    folder = save_compressed(quantize(tiny_bert(), "fp16"), tmp_path / "m")
    save_file(load_file(str(folder / "model.safetensors")), str(folder / "model.safetensors"))  # no metadata
    record = json.loads((folder / "compression.json").read_text())
    record["quantization"] = None
    (folder / "compression.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="is saved as torch.float16, the recorded model needs torch.float32"):
        load_compressed(folder)


def test_every_folder_compress_writes_loads_through_one_loader(tmp_path):
    """load_compressed is hfopt.models.load_model_folder with the compression hook: the same model, and an
    unquantized compressed folder (tied weights recorded as aliases) loads without the hook too, as the recipes
    load it."""
    from transformers import AutoModelForCausalLM

    from hfopt.compression.io import CompressedFolder
    from hfopt.models import load_model_folder, load_trained_model

    model = tiny_gpt2()
    prune_heads(model, 0.5)
    prune_ffn(model, 0.25)
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(3))
    save_compressed(model, tmp_path / "pruned")
    for loaded in (
        load_compressed(tmp_path / "pruned"),
        load_model_folder(tmp_path / "pruned", compressed=CompressedFolder),
        load_model_folder(tmp_path / "pruned"),
        load_trained_model(AutoModelForCausalLM, str(tmp_path / "pruned")),
    ):
        assert loaded.lm_head.weight is loaded.transformer.wte.weight
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    quantize(model, "dynamic_int8")
    save_compressed(model, tmp_path / "int8")
    int8 = load_model_folder(tmp_path / "int8", AutoModelForCausalLM, compressed=CompressedFolder)
    with torch.no_grad():
        assert torch.equal(int8(ids).logits, model(ids).logits)
    with pytest.raises(InputError, match="is not a folder written by save_compressed"):
        load_compressed(tmp_path / "nothing")
