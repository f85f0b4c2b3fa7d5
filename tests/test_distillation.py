"""DistillationTrainer: the loss against hand computations, the frozen teacher, accumulation invariance,
token-level KD for causal LM and seq2seq, student_from_teacher, and mismatches caught before training."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    MarianConfig,
    MarianMTModel,
    Trainer,
    TrainingArguments,
)

from hfopt.data import padding_collator
from hfopt.distillation import (
    DistillationTrainer,
    DistillationTrainingArguments,
    distillation_loss,
    student_from_teacher,
)
from hfopt.errors import InputError
from hfopt.models import use_batch_mean_loss
from tests.testing_utils import easy_rows


def softmax(x, t):
    e = np.exp(x / t - (x / t).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_kd_loss_equals_hand_computation(temperature):
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    p, q = softmax(t, temperature), softmax(s, temperature)
    expected = temperature**2 * (p * (np.log(p) - np.log(q))).sum(-1).mean()
    got = distillation_loss(torch.tensor(s), torch.tensor(t), temperature)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(distillation_loss(torch.tensor(s), torch.tensor(s), temperature)) == pytest.approx(0, abs=1e-7)


def test_token_level_kd_shifts_and_masks():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(2, 5, 7)), rng.normal(size=(2, 5, 7))
    labels = np.array([[1, 2, 3, -100, -100], [4, 5, 6, 1, 2]])
    got = distillation_loss(torch.tensor(s), torch.tensor(t), 2.0, torch.tensor(labels), shift=True)
    # positions i whose next label (i+1) is real: row 0: 0, 1; row 1: 0..3
    rows = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3)]
    kls = [(softmax(t[b, i], 2) * (np.log(softmax(t[b, i], 2)) - np.log(softmax(s[b, i], 2)))).sum() for b, i in rows]
    assert float(got) == pytest.approx(4 * np.mean(kls), rel=1e-6)


def tiny_trainer(tiny_bert, tmp_path, alpha, temperature, teacher_seed=1, **kw):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    torch.manual_seed(teacher_seed)
    teacher = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    with torch.no_grad():  # a teacher that differs from the student
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    student = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    use_batch_mean_loss(student)
    rows = easy_rows(32, seed=5)
    data = Dataset.from_dict({"text": [s for s, _ in rows], "label": [y for _, y in rows]}).map(
        lambda b: tokenizer(b["text"], padding="max_length", max_length=16), batched=True, remove_columns=["text"]
    )
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        logging_steps=1,
        alpha=alpha,
        temperature=temperature,
        lr_scheduler_type="constant",
        optim="sgd",
    )
    args = DistillationTrainingArguments(**{**defaults, **kw})
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=data,
        data_collator=padding_collator(tokenizer, args),
    )
    return trainer, teacher, student, data


@pytest.mark.parametrize("alpha, temperature", [(0.0, 1.0), (0.3, 2.0), (0.7, 4.0)])
def test_trainer_loss_is_the_formula_on_a_batch(tiny_bert, tmp_path, alpha, temperature):
    trainer, teacher, student, data = tiny_trainer(tiny_bert, tmp_path, alpha, temperature)
    batch = trainer.data_collator([data[i] for i in range(4)])
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        s, t = student(**batch).logits.double().numpy(), teacher(**batch).logits.double().numpy()
    labels = batch["labels"].numpy()
    q = softmax(s, 1.0)
    ce = -np.log(q[np.arange(4), labels]).mean()
    p_t, q_t = softmax(t, temperature), softmax(s, temperature)
    kd = temperature**2 * (p_t * (np.log(p_t) - np.log(q_t))).sum(-1).mean()
    assert float(loss) == pytest.approx(alpha * ce + (1 - alpha) * kd, rel=1e-5)


def test_alpha_one_is_plain_fine_tuning(tiny_bert, tmp_path):
    trainer, teacher, student, data = tiny_trainer(tiny_bert, tmp_path, alpha=1.0, temperature=3.0)
    batch = trainer.data_collator([data[i] for i in range(4)])
    plain = Trainer(model=student, args=TrainingArguments(str(tmp_path / "p"), report_to="none", use_cpu=True))
    with torch.no_grad():
        assert float(trainer.compute_loss(student, batch)) == pytest.approx(float(plain.compute_loss(student, batch)))


def test_teacher_stays_frozen_and_out_of_the_optimizer(tiny_bert, tmp_path):
    trainer, teacher, student, _ = tiny_trainer(tiny_bert, tmp_path, alpha=0.5, temperature=2.0, max_steps=5)
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    student_before = {n: p.detach().clone() for n, p in student.named_parameters()}
    trainer.train()
    assert all(torch.equal(before[n], p) for n, p in teacher.named_parameters())
    assert any(not torch.equal(student_before[n], p) for n, p in student.named_parameters())
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for p in teacher.parameters())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert all("loss_ce" in row and "loss_kd" in row for row in logged)


def test_accumulation_invariance(tiny_bert, tmp_path):
    weights = []
    for batch, accumulation in ((4, 1), (2, 2)):
        trainer, _, student, _ = tiny_trainer(
            tiny_bert,
            tmp_path / f"{batch}",
            alpha=0.5,
            temperature=2.0,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
        )
        trainer.train()
        weights.append(torch.cat([p.detach().flatten() for p in student.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-5)


def test_student_from_teacher_copies_the_chosen_blocks(tiny_bert):
    config = BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=6, num_attention_heads=2, intermediate_size=16, num_labels=2
    )
    teacher = BertForSequenceClassification(config)
    student = student_from_teacher(teacher, num_layers=3)
    assert student.config.num_hidden_layers == 3 and teacher.config.num_hidden_layers == 6
    t, s = teacher.state_dict(), student.state_dict()
    for student_layer, teacher_layer in enumerate([0, 2, 4]):
        key = "bert.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(s[key.format(student_layer)], t[key.format(teacher_layer)])
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=16, n_layer=4, n_head=2))
    small = student_from_teacher(gpt, num_layers=2, layers=[1, 3])
    assert torch.equal(
        small.state_dict()["transformer.h.1.mlp.c_fc.weight"], gpt.state_dict()["transformer.h.3.mlp.c_fc.weight"]
    )


def test_mismatches_are_caught_before_training(tmp_path):
    def bert(v=40, n=2):
        return BertForSequenceClassification(
            BertConfig(
                vocab_size=v,
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=16,
                num_labels=n,
            )
        )

    args = DistillationTrainingArguments(str(tmp_path), report_to="none", use_cpu=True)
    with pytest.raises(InputError, match="vocabularies differ: 40 vs 50"):
        DistillationTrainer(model=bert(v=50), teacher_model=bert(), args=args)
    with pytest.raises(InputError, match="label spaces differ"):
        DistillationTrainer(model=bert(n=3), teacher_model=bert(), args=args)


def lm_batches(vocab, n, length, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, length), generator=g)
    return ids


def test_token_level_kd_on_tiny_gpt2_and_marian(tmp_path):
    torch.manual_seed(0)
    # causal LM: the teacher is a GPT-2 trained a little on a repetitive sequence, the student starts fresh
    pattern = torch.arange(3, 13).repeat(4)[:32]
    data = Dataset.from_dict({"input_ids": [pattern.tolist()] * 64, "labels": [pattern.tolist()] * 64})
    gpt_config = GPT2Config(vocab_size=16, n_embd=32, n_layer=2, n_head=2, n_positions=32)
    teacher = GPT2LMHeadModel(gpt_config)
    Trainer(
        model=teacher,
        args=TrainingArguments(
            str(tmp_path / "t"),
            max_steps=30,
            learning_rate=1e-2,
            per_device_train_batch_size=8,
            report_to="none",
            use_cpu=True,
            save_strategy="no",
            disable_tqdm=True,
        ),
        train_dataset=data,
    ).train()
    student = student_from_teacher(teacher, num_layers=1)
    torch.nn.init.normal_(student.transformer.h[0].mlp.c_fc.weight, std=0.2)
    args = DistillationTrainingArguments(
        str(tmp_path / "s"),
        max_steps=30,
        learning_rate=1e-2,
        alpha=0.0,
        temperature=2.0,
        per_device_train_batch_size=8,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=5,
        hidden_loss_weight=1.0,
    )
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    trainer.train()
    kd = [row["loss_kd"] for row in trainer.state.log_history if "loss_kd" in row]
    assert kd[-1] < 0.5 * kd[0]

    # seq2seq: Marian teacher and a smaller Marian student sharing its vocabulary
    marian = dict(
        vocab_size=20,
        d_model=16,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        pad_token_id=0,
        decoder_start_token_id=0,
        eos_token_id=1,
        max_position_embeddings=16,
        scale_embedding=True,
    )
    teacher = MarianMTModel(MarianConfig(encoder_layers=2, decoder_layers=2, **marian))
    student = MarianMTModel(MarianConfig(encoder_layers=1, decoder_layers=1, **marian))
    source = torch.randint(2, 20, (64, 8), generator=torch.Generator().manual_seed(3))
    data = Dataset.from_dict({"input_ids": source.tolist(), "labels": source.flip(1).tolist()})
    args = DistillationTrainingArguments(
        str(tmp_path / "m"),
        max_steps=40,
        learning_rate=5e-3,
        alpha=0.0,
        temperature=1.0,
        per_device_train_batch_size=8,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=5,
    )
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    trainer.train()
    kd = [row["loss_kd"] for row in trainer.state.log_history if "loss_kd" in row]
    assert kd[-1] < 0.5 * kd[0]


def test_hidden_projection_trains_and_stays_out_of_the_student(tmp_path):
    def bert(hidden, heads=2):
        return BertForSequenceClassification(
            BertConfig(
                vocab_size=30,
                hidden_size=hidden,
                num_hidden_layers=2,
                num_attention_heads=heads,
                intermediate_size=16,
                num_labels=2,
                attn_implementation="eager",
            )
        )

    torch.manual_seed(0)
    teacher, student = bert(32), bert(16)
    data = Dataset.from_dict({"input_ids": torch.randint(5, 30, (32, 8)).tolist(), "labels": [0, 1] * 16})
    args = DistillationTrainingArguments(
        str(tmp_path),
        max_steps=5,
        per_device_train_batch_size=8,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        hidden_loss_weight=1.0,
        attention_loss_weight=1.0,
        layer_map=[1, 2],
    )
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    projection_before = trainer.hidden_projection.weight.detach().clone()
    trainer.train()
    assert not torch.equal(projection_before, trainer.hidden_projection.weight)
    assert not any("projection" in k for k in student.state_dict())
    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert all(row["loss_hidden"] > 0 and row["loss_attention"] >= 0 for row in logged)
    with pytest.raises(InputError, match="equal head counts"):
        DistillationTrainer(model=bert(16, heads=4), teacher_model=teacher, args=args)


def test_teacher_evaluation_leaves_the_students_token_count(tiny_bert, tmp_path):
    # Trainer writes its own num_input_tokens_seen into every evaluation's metrics: a second Trainer for the
    # teacher said 0, and merged into the results (as recipes/distill_bert.py does) it replaced the real count.
    trainer, _, _, data = tiny_trainer(tiny_bert, tmp_path, 0.5, 2.0, include_num_input_tokens_seen="non_padding")
    results = dict(trainer.train().metrics)
    results.update(trainer.evaluate(data))
    teacher = trainer.evaluate_teacher(data)
    results.update(teacher)
    assert "teacher_eval_loss" in teacher and "num_input_tokens_seen" not in teacher and "epoch" not in teacher
    assert results["num_input_tokens_seen"] == trainer.state.num_input_tokens_seen > 0
    assert trainer.args.include_num_input_tokens_seen == "non_padding"  # the student's args are unchanged
