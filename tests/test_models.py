"""hfopt.models.use_batch_mean_loss: the fix for Trainer's loss scaling of classification heads."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from hfopt.data import padding_collator
from hfopt.models import use_batch_mean_loss
from tests.testing_utils import easy_rows


def train_weights(model_dir, tmp_path, batch_size, accumulation, fix: bool):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    if fix:
        use_batch_mean_loss(model)
    rows = easy_rows(32, seed=5)
    # equal lengths, so that the mean of micro-batch means is the mean of the whole batch
    data = Dataset.from_dict({"text": [s for s, _ in rows], "label": [y for _, y in rows]}).map(
        lambda b: tokenizer(b["text"], padding="max_length", max_length=16), batched=True, remove_columns=["text"]
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / f"{batch_size}x{accumulation}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=3,
        learning_rate=1e-2,
        optim="sgd",
        lr_scheduler_type="constant",
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        logging_steps=1,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=padding_collator(tokenizer, args))
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return torch.cat([p.detach().flatten() for p in model.parameters()]), losses


def test_accumulation_gives_the_same_update_and_loss_once_marked(tiny_bert, tmp_path):
    w_full, loss_full = train_weights(tiny_bert, tmp_path, 8, 1, fix=True)
    w_accum, loss_accum = train_weights(tiny_bert, tmp_path, 4, 2, fix=True)
    assert torch.allclose(w_full, w_accum, atol=1e-5)
    assert loss_full == pytest.approx(loss_accum, rel=1e-4)


def test_without_the_mark_transformers_scales_accumulated_gradients_wrongly(tiny_bert, tmp_path):
    w_full, loss_full = train_weights(tiny_bert, tmp_path, 8, 1, fix=False)
    w_accum, loss_accum = train_weights(tiny_bert, tmp_path, 4, 2, fix=False)
    # If this starts failing, transformers fixed the scaling and use_batch_mean_loss may be retired.
    assert not torch.allclose(w_full, w_accum, atol=1e-4)
    assert loss_accum[0] == pytest.approx(2 * loss_full[0], rel=0.05)


def test_only_models_whose_loss_ignores_num_items_are_marked():
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
        MarianConfig,
        MarianMTModel,
    )

    tiny = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    assert use_batch_mean_loss(BertForSequenceClassification(BertConfig(**tiny)))
    assert use_batch_mean_loss(
        MarianMTModel(
            MarianConfig(
                vocab_size=50,
                d_model=16,
                encoder_layers=1,
                decoder_layers=1,
                encoder_ffn_dim=16,
                decoder_ffn_dim=16,
                pad_token_id=0,
                decoder_start_token_id=0,
            )
        )
    )
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2))
    assert not use_batch_mean_loss(gpt)  # GPT-2's loss_function divides by num_items_in_batch itself
    assert getattr(gpt, "accepts_loss_kwargs", True)


# --- loading, checked --------------------------------------------------------------------------------------------


def test_a_model_folder_without_tokenizer_files_is_an_error(tiny_bert, tmp_path):
    import shutil

    from hfopt.args import ModelArguments
    from hfopt.errors import InputError
    from hfopt.models import load_tokenizer

    folder = tmp_path / "weights_only"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_bert / name, folder / name)
    with pytest.raises(
        InputError, match=r"model_name_or_path .*weights_only has no tokenizer files .*--tokenizer_name"
    ):
        load_tokenizer(ModelArguments(model_name_or_path=str(folder)))
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=str(folder), tokenizer_name=str(tiny_bert)))
    assert len(tokenizer) > 20


def test_a_trained_model_must_bring_its_task_head(tmp_path, caplog):
    from transformers import GPT2Config, GPT2LMHeadModel

    from hfopt.args import ModelArguments
    from hfopt.errors import InputError
    from hfopt.models import load_model, load_trained_model

    GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path / "lm")
    with pytest.raises(InputError, match=r"teacher .*lm has no trained task head .*score.weight.*GPT2LMHeadModel"):
        load_trained_model(AutoModelForSequenceClassification, str(tmp_path / "lm"), role="teacher")
    # fine-tuning starts a new head, and says so
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tmp_path / "lm", num_labels=2)
    tokenizer = type("T", (), {"__len__": lambda self: 50})()
    with caplog.at_level("INFO", logger="hfopt"):
        model = load_model(
            AutoModelForSequenceClassification,
            ModelArguments(model_name_or_path=str(tmp_path / "lm")),
            config,
            tokenizer,
        )
    assert model.score.weight.shape == (2, 16) and "A new task head (score.weight) starts from random" in caplog.text


def test_a_pruned_folder_trains_again_with_its_shapes(tmp_path):
    from transformers import AutoConfig

    from hfopt.args import ModelArguments
    from hfopt.compression import prune_ffn, prune_heads
    from hfopt.errors import InputError
    from hfopt.models import load_model
    from tests.testing_utils import random_batch, tiny_bert_model

    model = tiny_bert_model()
    prune_heads(model, 0.5)
    prune_ffn(model, 0.25)
    model.save_pretrained(tmp_path / "pruned")
    config = AutoConfig.from_pretrained(tmp_path / "pruned")
    tokenizer = type("T", (), {"__len__": lambda self: 60})()
    reloaded = load_model(
        AutoModelForSequenceClassification,
        ModelArguments(model_name_or_path=str(tmp_path / "pruned")),
        config,
        tokenizer,
    ).eval()
    batch = random_batch()
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, reloaded(**batch).logits, atol=1e-6)
    assert reloaded.num_parameters() == model.num_parameters()
    (tmp_path / "pruned" / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match=r"pruned/model.safetensors cannot be read"):
        load_model(
            AutoModelForSequenceClassification,
            ModelArguments(model_name_or_path=str(tmp_path / "pruned")),
            config,
            tokenizer,
        )


def test_a_quantized_folder_cannot_be_trained(tmp_path):
    from transformers import AutoConfig

    from hfopt.args import ModelArguments
    from hfopt.compression import quantize, save_compressed
    from hfopt.errors import InputError
    from hfopt.models import load_model
    from tests.testing_utils import tiny_bert_model

    save_compressed(quantize(tiny_bert_model(), "dynamic_int8"), tmp_path / "int8")
    with pytest.raises(InputError, match="holds a quantized model, which cannot be trained"):
        load_model(
            AutoModelForSequenceClassification,
            ModelArguments(model_name_or_path=str(tmp_path / "int8")),
            AutoConfig.from_pretrained(tmp_path / "int8"),
            type("T", (), {"__len__": lambda self: 60})(),
        )


def test_an_encoder_decoder_from_scratch_starts_at_the_width_scale():
    """The translation demo's Marian (d_model 128) stalled at BLEU 4 from transformers' init_std 0.02: attention
    starts uniform and the decoder ignores the source. From scratch it starts at d_model^-0.5, unless asked."""
    from hfopt.args import ModelArguments
    from hfopt.models import load_config

    overrides = "d_model=128,encoder_layers=1,decoder_layers=1,encoder_ffn_dim=64,decoder_ffn_dim=64"
    config = load_config(ModelArguments(model_type="marian", config_overrides=overrides))
    assert config.init_std == pytest.approx(128**-0.5)
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_config(config)
    query = model.model.encoder.layers[0].self_attn.q_proj.weight
    assert float(query.std()) == pytest.approx(128**-0.5, rel=0.1)
    kept = load_config(ModelArguments(model_type="marian", config_overrides=overrides + ",init_std=0.02"))
    assert kept.init_std == 0.02  # the user's value wins
    assert load_config(ModelArguments(model_type="gpt2")).initializer_range == 0.02  # decoder-only: untouched


# --- one loader for every model folder ---------------------------------------------------------------------------


def test_load_model_folder_loads_plain_restructured_and_compressed_folders(tiny_bert, tmp_path):
    from transformers import BertForSequenceClassification

    from hfopt.compression import prune_heads, quantize, save_compressed
    from hfopt.compression.io import CompressedFolder, load_compressed
    from hfopt.errors import InputError
    from hfopt.models import load_model_folder
    from tests.testing_utils import random_batch, tiny_bert_model

    batch = random_batch()
    # plain: the checkpoint's own class without a task, or the task's auto class
    plain = load_model_folder(tiny_bert)
    assert type(plain) is BertForSequenceClassification and not plain.training
    assert type(load_model_folder(tiny_bert, AutoModelForSequenceClassification)) is BertForSequenceClassification
    # restructured by hfopt, saved with save_pretrained: its structure rebuilt, every weight loaded
    model = tiny_bert_model()
    prune_heads(model, 0.5)
    model.save_pretrained(tmp_path / "pruned")
    with torch.no_grad():
        assert torch.equal(load_model_folder(tmp_path / "pruned")(**batch).logits, model(**batch).logits)
    # quantized by save_compressed: refused without the compression hook, the same model as load_compressed with it
    save_compressed(quantize(model, "dynamic_int8"), tmp_path / "int8")
    with pytest.raises(InputError, match="holds a quantized model, which cannot be trained"):
        load_model_folder(tmp_path / "int8", AutoModelForSequenceClassification)
    int8 = load_model_folder(tmp_path / "int8", AutoModelForSequenceClassification, compressed=CompressedFolder)
    with torch.no_grad():
        assert torch.equal(int8(**batch).logits, model(**batch).logits)
        assert torch.equal(int8(**batch).logits, load_compressed(tmp_path / "int8")(**batch).logits)
    # the hook changes nothing for folders without a record
    assert type(load_model_folder(tiny_bert, compressed=CompressedFolder)) is BertForSequenceClassification


def test_a_restructured_folder_with_a_weight_missing_or_left_over_is_an_error(tmp_path):
    from safetensors.torch import load_file, save_file

    from hfopt.compression import prune_ffn
    from hfopt.errors import InputError
    from hfopt.models import load_model_folder
    from tests.testing_utils import tiny_gpt2_model

    model = tiny_gpt2_model()
    prune_ffn(model, 0.5)
    model.save_pretrained(tmp_path / "gpt")
    reloaded = load_model_folder(tmp_path / "gpt")  # the output layer, tied to the embeddings, is saved once
    assert reloaded.lm_head.weight is reloaded.transformer.wte.weight
    weights = tmp_path / "gpt" / "model.safetensors"
    tensors = load_file(str(weights))
    save_file({**tensors, "stray.weight": torch.zeros(2)}, str(weights))
    with pytest.raises(InputError, match=r"saved weights do not match the recorded model .*unexpected \['stray"):
        load_model_folder(tmp_path / "gpt")
    tensors.pop("transformer.h.1.mlp.c_fc.weight")
    save_file(tensors, str(weights))
    with pytest.raises(InputError, match=r"missing \['transformer.h.1.mlp.c_fc.weight'\]"):
        load_model_folder(tmp_path / "gpt")


def test_a_folder_without_a_known_architecture_needs_a_task(tmp_path):
    import json

    from hfopt.errors import InputError
    from hfopt.models import load_model_folder
    from tests.testing_utils import tiny_bert_model

    tiny_bert_model().save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["architectures"] = ["NoSuchModel"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="teacher .*m records no architecture transformers has"):
        load_model_folder(tmp_path / "m", role="teacher")
    assert load_model_folder(tmp_path / "m", AutoModelForSequenceClassification).num_labels == 2
