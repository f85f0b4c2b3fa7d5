"""Weight sharing (hfopt.compression.sharing): grouped blocks become one module initialised from their members,
train together, store once, reload shared, and decode with a KV cache like a full forward pass."""

import copy

import pytest
import torch
from safetensors import safe_open

from hfopt.architectures import architecture
from hfopt.compression import load_compressed, prune_heads, quantize, save_compressed, share_layers
from hfopt.compression.report import count_parameters
from hfopt.compression.sharing import block_gram, contiguous_groups
from hfopt.errors import InputError
from tests.testing_utils import random_batch, tiny_bert_model, tiny_gpt2_model


def blocks(model):
    return [block for _, block in architecture(model).blocks()]


def block_parameters(model) -> int:
    unique = {id(p): p for block in blocks(model) for p in block.parameters()}
    return sum(p.numel() for p in unique.values())


def logits(model, batch=None):
    with torch.no_grad():
        return model(**(batch or random_batch())).logits


def test_six_blocks_into_three_groups_halves_the_block_parameters():
    model = tiny_bert_model(layers=6)
    before, total = block_parameters(model), model.num_parameters()
    groups = share_layers(model, num_groups=3)
    assert sorted(i for g in groups for i in g) == list(range(6)) and len(groups) == 3
    assert all(g == list(range(g[0], g[-1] + 1)) for g in groups)  # runs of adjacent blocks
    assert block_parameters(model) * 2 == before
    assert model.num_parameters() == total - before // 2
    assert count_parameters(model)[0] == model.num_parameters()  # the report counts shared weights once
    for group in groups:
        assert all(blocks(model)[i] is blocks(model)[group[0]] for i in group)
    assert model.config.hfopt_shared_layers == [g for g in groups if len(g) > 1]


def test_groups_follow_the_similarity_of_adjacent_blocks():
    model = tiny_bert_model(layers=5)
    with torch.no_grad():  # blocks 1, 2, 3 become near copies of each other; 0 and 4 stay unlike anything
        for i in (2, 3):
            for source, target in zip(blocks(model)[1].parameters(), blocks(model)[i].parameters(), strict=True):
                target.copy_(source + 1e-3 * torch.randn_like(source))
    assert contiguous_groups(block_gram(model), 3) == [[0], [1, 2, 3], [4]]
    assert contiguous_groups(block_gram(model), 4) in ([[0], [1], [2, 3], [4]], [[0], [1, 2], [3], [4]])
    assert share_layers(model, num_groups=3) == [[0], [1, 2, 3], [4]]


@pytest.mark.parametrize("init", ["average", "central"])
def test_a_group_starts_from_the_average_or_the_most_central_member(init):
    model = tiny_bert_model(layers=4)
    originals = [copy.deepcopy(block.state_dict()) for block in blocks(model)]
    with torch.no_grad():  # block 1 sits between 0 and 2: the central member of [0, 1, 2]
        for key, value in blocks(model)[1].state_dict().items():
            value.copy_(0.6 * originals[0][key] + 0.4 * originals[2][key])
    originals[1] = copy.deepcopy(blocks(model)[1].state_dict())
    share_layers(model, groups=[[0, 1, 2]], init=init)
    merged = blocks(model)[0].state_dict()
    for key, value in merged.items():
        expected = torch.stack([o[key] for o in originals[:3]]).mean(0) if init == "average" else originals[1][key]
        assert torch.allclose(value, expected, atol=1e-6), key
    assert blocks(model)[3] is not blocks(model)[0]  # a block in no group keeps its own weights
    assert all(torch.equal(v, originals[3][k]) for k, v in blocks(model)[3].state_dict().items())


def test_one_optimizer_step_changes_the_grouped_blocks_together():
    model = tiny_bert_model(layers=4).train()
    share_layers(model, groups=[[0, 1], [2, 3]])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == model.num_parameters()
    before = copy.deepcopy(model.state_dict())
    model(**random_batch(), labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    optimizer.step()
    after = model.state_dict()
    for key in after:
        if ".layer.1." in key or ".layer.3." in key:
            twin = key.replace(".layer.1.", ".layer.0.").replace(".layer.3.", ".layer.2.")
            assert torch.equal(after[key], after[twin]), key
    changed = [k for k in after if ".layer." in k and not torch.equal(after[k], before[k])]
    assert any(".layer.1." in k for k in changed) and any(".layer.3." in k for k in changed)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_shared_models_round_trip_stored_once(family, tmp_path):
    make = (lambda: tiny_bert_model(layers=4)) if family == "bert" else (lambda: tiny_gpt2_model(layers=4))
    unshared, model = make(), make()
    share_layers(model, groups=[[0, 1], [2, 3]])
    save_compressed(unshared, tmp_path / "unshared")
    save_compressed(model, tmp_path / "shared")
    size = {name: (tmp_path / name / "model.safetensors").stat().st_size for name in ("unshared", "shared")}
    block_bytes = 4 * block_parameters(unshared)
    assert size["unshared"] - size["shared"] > 0.45 * block_bytes  # two of four blocks' weights are gone
    loaded = load_compressed(tmp_path / "shared")
    assert torch.equal(logits(loaded), logits(model))
    assert blocks(loaded)[0] is blocks(loaded)[1] and blocks(loaded)[2] is blocks(loaded)[3]

    # save_pretrained (Trainer checkpoints) stores them once too, and hfopt's loader rebuilds the sharing
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from hfopt.args import ModelArguments
    from hfopt.models import load_model

    model.save_pretrained(tmp_path / "pretrained")
    with safe_open(str(tmp_path / "pretrained" / "model.safetensors"), "pt") as f:
        stored_blocks = {
            k.split(".")[k.split(".").index("layer" if family == "bert" else "h") + 1]
            for k in f.keys()
            if ".layer." in k or ".h." in k
        }
    assert stored_blocks == {"0", "2"}
    auto = AutoModelForSequenceClassification if family == "bert" else AutoModelForCausalLM
    path = str(tmp_path / "pretrained")
    reloaded = load_model(auto, ModelArguments(model_name_or_path=path), AutoConfig.from_pretrained(path), [0])
    assert torch.equal(logits(reloaded.eval()), logits(model))
    assert blocks(reloaded)[0] is blocks(reloaded)[1]


def test_shared_and_int8_round_trips_with_each_int8_layer_once(tmp_path):
    model = tiny_bert_model(layers=4)
    share_layers(model, groups=[[0, 1], [2, 3]])
    quantize(model, "dynamic_int8")
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    assert sum(isinstance(m, QLinear) for m in model.modules()) == 2 * 6 + 2
    save_compressed(model, tmp_path / "int8")
    loaded = load_compressed(tmp_path / "int8")
    assert torch.equal(logits(loaded), logits(model)) and blocks(loaded)[0] is blocks(loaded)[1]


def test_shared_gpt2_decodes_with_a_kv_cache_like_a_full_forward(tmp_path):
    model = tiny_gpt2_model(layers=4)
    share_layers(model, groups=[[0, 1], [2, 3]])
    save_compressed(model, tmp_path / "shared")
    prompt, following = torch.tensor([[5, 6, 7, 8]]), torch.tensor([[9]])
    for candidate in (model, copy.deepcopy(model), load_compressed(tmp_path / "shared")):
        with torch.no_grad():
            full = candidate(torch.cat([prompt, following], 1)).logits[0, -1]
            cache = candidate(prompt, use_cache=True).past_key_values
            step = candidate(following, past_key_values=cache, use_cache=True).logits[0, -1]
        assert torch.allclose(full, step, atol=1e-5), (full - step).abs().max()


def marian():
    from transformers import MarianConfig, MarianMTModel

    config = MarianConfig(
        vocab_size=40,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=16,
        pad_token_id=0,
        decoder_start_token_id=0,
    )
    return MarianMTModel(config)


@pytest.mark.parametrize(
    "make, kwargs, words",
    [
        (
            tiny_bert_model,
            {"groups": [[0, 1], [1]]},
            r"shared-layer groups overlap: block\(s\) \[1\] are in two groups",
        ),
        (tiny_bert_model, {"groups": [[0, 2]]}, r"shared-layer group \[0, 2\] names blocks outside 0..1"),
        (tiny_bert_model, {"num_groups": 3}, r"cannot share 2 blocks into 3 groups: share_layers takes 1 to 2 groups"),
        (tiny_bert_model, {"num_groups": 0}, r"cannot share 2 blocks into 0 groups"),
        (tiny_bert_model, {"num_groups": 1, "init": "first"}, r"share_layers init 'first' is not one of average, cen"),
        (marian, {"num_groups": 1}, r"weight sharing supports single-stack models .* MarianMTModel is an encoder-dec"),
    ],
)
def test_bad_input_is_one_clear_line(make, kwargs, words):
    model = make()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(InputError, match=words) as err:
        share_layers(model, **kwargs)
    assert "\n" not in str(err.value)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # nothing merged on the way


def test_sharing_twice_or_pruning_shared_blocks_is_refused():
    model = tiny_bert_model(layers=4)
    share_layers(model, num_groups=2)
    with pytest.raises(InputError, match="blocks of this BertForSequenceClassification are already shared"):
        share_layers(model, num_groups=1)
    with pytest.raises(InputError, match=r"attention-head pruning of a model whose blocks are shared \(\[\["):
        prune_heads(model, 0.25)
    with pytest.raises(ValueError, match="num_groups or groups, not both"):
        share_layers(tiny_bert_model(), num_groups=1, groups=[[0, 1]])


def test_a_shared_model_trains_checkpoints_and_resumes_exactly_in_a_plain_trainer(tmp_path):
    from transformers import Trainer, TrainingArguments

    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(5, 60, (10,), generator=g), "labels": i % 2} for i in range(256)]

    def train(output_dir, resume=None):
        model = tiny_bert_model(layers=4)
        share_layers(model, groups=[[0, 1], [2, 3]])
        args = TrainingArguments(
            str(output_dir), per_device_train_batch_size=16, learning_rate=1e-3, max_steps=16, save_steps=8,
            save_strategy="steps", report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
        )  # fmt: skip
        Trainer(model=model, args=args, train_dataset=rows).train(resume_from_checkpoint=resume)
        return model

    model = train(tmp_path / "run")
    assert blocks(model)[0] is blocks(model)[1]
    resumed = train(tmp_path / "resumed", resume=str(tmp_path / "run" / "checkpoint-8"))
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
