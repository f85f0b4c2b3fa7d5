"""Quantization-aware training (hfopt.compression.qat): the fake-quantized arithmetic is the deployed int8
arithmetic, the converted model round-trips, and a plain Trainer trains, checkpoints and resumes with it."""

import copy
from contextlib import contextmanager

import pytest
import torch
from torch import nn
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
from transformers import TrainerCallback
from transformers.pytorch_utils import Conv1D

from hfopt.args import CompressionArguments
from hfopt.compression import convert_qat, load_compressed, prepare_qat, save_compressed, strip_qat
from hfopt.compression.qat import (
    QATConv1D,
    QATLinear,
    QuantizationAwareTrainingCallback,
    activation_range,
    fake_quantize_activation,
)
from hfopt.errors import InputError
from tests.testing_utils import random_batch, tiny_bert_model, tiny_gpt2_model


@contextmanager
def quantized_engine(name):
    if name not in torch.backends.quantized.supported_engines:
        pytest.skip(f"the {name} quantized engine is not built into this torch")
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


@pytest.mark.parametrize("engine", ["x86", "fbgemm", "onednn", "qnnpack"])
def test_fake_quantized_linear_is_the_dynamic_int8_linear_of_each_engine(engine):
    torch.manual_seed(0)
    x = torch.randn(8, 64) * 3 + 0.5
    with quantized_engine(engine):
        reduce_range = activation_range() == (0, 127)
        assert reduce_range == (engine != "qnnpack")  # qnnpack ignores the reduced range the others honour
        expected = torch.quantize_per_tensor_dynamic(x, torch.quint8, reduce_range).dequantize()
        assert torch.allclose(fake_quantize_activation(x), expected, atol=1e-6)
        float_model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
        fake = copy.deepcopy(float_model)
        prepare_qat(fake)
        int8 = quantize_dynamic(copy.deepcopy(float_model), {nn.Linear: per_channel_dynamic_qconfig}, torch.qint8)
        with torch.no_grad():
            fake_error = (fake(x) - int8(x)).abs().max()
            float_error = (float_model(x) - int8(x)).abs().max()
    assert fake_error < 1e-5 and float_error > 100 * fake_error


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_converted_model_computes_what_training_saw_and_round_trips(family, tmp_path):
    model = tiny_bert_model() if family == "bert" else tiny_gpt2_model()
    fake = copy.deepcopy(model)
    keys, parameters = list(fake.state_dict()), [id(p) for p in fake.parameters()]
    count = prepare_qat(fake)
    assert count == (2 * 6 + 2 if family == "bert" else 2 * 4)  # per block 6 Linear (4 Conv1D) + pooler, classifier
    assert list(fake.state_dict()) == keys and [id(p) for p in fake.parameters()] == parameters
    assert not any(type(m) in (nn.Linear, Conv1D) for m in fake.modules() if m is not fake.get_output_embeddings())
    int8 = convert_qat(copy.deepcopy(fake))  # from the prepared model: convert strips first
    batch = random_batch()
    with torch.no_grad():
        fake_logits, int8_logits, float_logits = fake(**batch).logits, int8(**batch).logits, model(**batch).logits
    assert (fake_logits - int8_logits).abs().max() <= 1e-5
    assert (float_logits - int8_logits).abs().max() > 1e-4  # the float model is measurably not the int8 one
    if family == "gpt2":  # the head tied to the input embeddings stays float and tied, as `quantize` keeps it
        assert int8.lm_head.weight is int8.transformer.wte.weight
    save_compressed(int8, tmp_path / "int8")
    loaded = load_compressed(tmp_path / "int8")
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, int8_logits)
    assert strip_qat(fake) == count
    assert not any(isinstance(m, (QATLinear, QATConv1D)) for m in fake.modules())


def test_a_model_without_linear_layers_is_refused_in_one_line():
    with pytest.raises(InputError, match=r"needs nn.Linear or GPT-2 Conv1D layers; Sequential has none") as err:
        prepare_qat(nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4)))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"qat": "int4"}, "qat must be one of int8, got 'int4'"),
        ({"share_layers": 0}, "share_layers must be ≥ 1, got 0"),
        ({"share_layers_init": "first"}, "share_layers_init must be one of average, central, got 'first'"),
    ],
)
def test_compression_arguments_check_the_new_flags(kwargs, words):
    with pytest.raises(InputError, match=words):
        CompressionArguments(**kwargs)


# --- a plain Trainer ------------------------------------------------------------------------------------------


def keyword_data(n, seed):
    """Label 1: about half the tokens are 7. A tiny BERT learns it in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids, label = torch.randint(10, 60, (12,), generator=g), int(torch.rand(1, generator=g) < 0.5)
        if label:
            ids[torch.rand(12, generator=g) < 0.5] = 7
        rows.append({"input_ids": ids, "labels": label})
    return rows


class RecordClasses(TrainerCallback):
    def __init__(self):
        self.seen = set()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.seen.add(type(model.bert.encoder.layer[0].attention.self.query))


def train(output_dir, steps=40, resume=None):
    from transformers import Trainer, TrainingArguments

    model = tiny_bert_model()
    args = TrainingArguments(
        str(output_dir),
        per_device_train_batch_size=16,
        learning_rate=2e-3,
        max_steps=steps,
        logging_steps=5,
        save_strategy="steps",
        save_steps=steps // 2,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    record = RecordClasses()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=keyword_data(640, 0),
        callbacks=[QuantizationAwareTrainingCallback(int8_dir="int8"), record],
    )
    trainer.train(resume_from_checkpoint=resume)
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return model, losses, record.seen


def test_qat_in_a_plain_trainer_learns_checkpoints_and_resumes_exactly(tmp_path):
    from transformers import AutoModelForSequenceClassification

    model, losses, seen = train(tmp_path / "run")
    assert seen == {QATLinear}  # every step ran fake-quantized
    assert type(model.bert.encoder.layer[0].attention.self.query) is nn.Linear  # float again after training
    assert losses[-1] < 0.5 * losses[0], losses

    # checkpoints are plain float checkpoints
    middle = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "checkpoint-20")
    assert type(middle.classifier) is nn.Linear

    # the int8 model written at the end is the converted trained model
    int8 = load_compressed(tmp_path / "run" / "int8")
    batch = random_batch()
    with torch.no_grad():
        assert torch.equal(int8(**batch).logits, convert_qat(copy.deepcopy(model))(**batch).logits)

    resumed, _, _ = train(tmp_path / "resumed", resume=str(tmp_path / "run" / "checkpoint-20"))
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
