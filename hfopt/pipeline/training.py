"""The training stages of the compression pipeline (a student, recovery, quantization-aware training): a plain
`Trainer` on the task's training data, or a `DistillationTrainer` with the original model as teacher; checkpoints
in the stage's work folder, so a killed pipeline resumes the stage where it stopped.

Example::

    model, figures = train_stage(model, data, objective="distill", teacher=original, config=config, epochs=1,
                                 learning_rate=5e-5, augment=config.augments("recover"),
                                 work_dir=out / ".training" / "recover", fingerprint=fp)
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from torch import nn

from ..run import list_checkpoints, write_text_atomic

logger = logging.getLogger(__name__)

__all__ = ["train_stage"]

FINGERPRINT_FILE = "stage_fingerprint.txt"


def train_stage(
    model: nn.Module,
    data,
    *,
    objective: str,
    teacher: nn.Module | None,
    config,
    epochs: float,
    learning_rate: float,
    augment: bool,
    work_dir: Path,
    fingerprint: str,
    callbacks=(),
) -> tuple[nn.Module, dict]:
    """Train `model` on `data` (a CompressionTask's `train_dataset()`): `objective` "distill" (from `teacher`,
    with `config.alpha`, `config.temperature` and `config.hidden_loss_weight`) or "finetune", on rows augmented
    by `config.augment_*` when `augment`. Resumes from the
    newest checkpoint in `work_dir` when it was written for the same `fingerprint`; returns the trained model (CPU,
    eval mode) and its training figures, the teacher back on the CPU."""
    from transformers import Trainer, TrainingArguments

    from ..distillation import DistillationTrainer, DistillationTrainingArguments

    work_dir = Path(work_dir)
    marker = work_dir / FINGERPRINT_FILE
    if work_dir.exists() and (not marker.is_file() or marker.read_text().strip() != fingerprint):
        logger.info("Removing %s: checkpoints of a stage with other settings.", work_dir)
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(marker, fingerprint + "\n")
    checkpoints = list_checkpoints(work_dir)
    resume = str(checkpoints[-1][1]) if checkpoints else None
    common = dict(
        output_dir=str(work_dir),
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=config.batch_size,
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        warmup_steps=0.1,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning without a GPU only warns
    )
    if objective == "distill":
        args = DistillationTrainingArguments(
            alpha=config.alpha,
            temperature=config.temperature,
            hidden_loss_weight=config.hidden_loss_weight,
            **common,
        )
        trainer_class, extra = DistillationTrainer, {"teacher_model": teacher.eval()}
    else:
        args, trainer_class, extra = TrainingArguments(**common), Trainer, {}
    dataset = data.train_dataset()
    if augment:  # a new variant of each row each time it is read
        from ..augmentation import augment_train_dataset

        probabilities = (config.augment_deletion_prob, config.augment_swap_prob, config.augment_mask_prob)
        augment_train_dataset(dataset, data.tokenizer, *probabilities, seed=config.seed)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=data.data_collator(),
        callbacks=list(callbacks),
        **extra,
    )
    if resume:
        logger.info("Resuming the training stage from %s.", resume)
    output = trainer.train(resume_from_checkpoint=resume)
    figures = {
        "objective": objective,
        "epochs": epochs,
        "steps": output.global_step,
        "train_loss": output.training_loss,
        "train_seconds": output.metrics.get("train_runtime"),
        "resumed_from": Path(resume).name if resume else None,
    }
    if teacher is not None:
        teacher.cpu()  # the trainer moved it to its device: the caller times and scores the original on the CPU
    return trainer.model.cpu().eval(), {"training": figures}
