"""hfopt.trainer_internals: the private Trainer methods hfopt uses still take the parameters it calls them with
(a transformers release that changes one fails here), and a changed one is a clear error, not a wrong run.
The behaviour that makes `_get_eval_sampler`'s patch needed is pinned in tests/test_batching.py
(test_predictions_keep_row_order_under_group_by_length: without it, rows come back shuffled)."""

import inspect

import pytest
from transformers import Trainer, TrainingArguments

from hfopt.trainer_internals import PRIVATE_METHODS, private_method, replace_private_method


@pytest.mark.parametrize("name", sorted(PRIVATE_METHODS))
def test_private_trainer_methods_take_the_parameters_hfopt_passes(name):
    assert tuple(inspect.signature(getattr(Trainer, name)).parameters)[1:] == PRIVATE_METHODS[name]


def test_a_changed_private_method_is_a_clear_error_and_only_the_instance_is_patched(tmp_path):
    import torch

    trainer = Trainer(model=torch.nn.Linear(2, 2), args=TrainingArguments(str(tmp_path), report_to="none"))
    original = replace_private_method(trainer, "_get_eval_sampler", lambda eval_dataset: "mine")
    assert trainer._get_eval_sampler([1]) == "mine" and Trainer._get_eval_sampler is not trainer._get_eval_sampler
    assert original.__self__ is trainer and inspect.ismethod(original)

    trainer._remove_unused_columns = lambda data: data  # as if a release dropped `description`
    with pytest.raises(RuntimeError, match=r"Trainer._remove_unused_columns is not what hfopt expects.*tested with"):
        private_method(trainer, "_remove_unused_columns")
    with pytest.raises(RuntimeError, match="_get_train_sampler"):
        private_method(trainer, "_get_train_sampler")  # not one hfopt declared
