"""hfopt.architectures: every family users fine-tune is found, its heads and feed-forward neurons removed
exactly as masking them would, and what a family cannot do is one clear line."""

import pytest
import torch
import transformers as T

from hfopt.architectures import architecture, share_blocks, transformer_blocks
from hfopt.compression import load_compressed, prune_ffn, prune_heads, remove_heads, save_compressed, shrink_ffn
from hfopt.distillation import student_from_teacher
from hfopt.errors import InputError

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def build(family, seed=0):
    torch.manual_seed(seed)
    if family == "bert":
        model = T.BertForSequenceClassification(
            T.BertConfig(
                vocab_size=60,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                **NO_DROPOUT,
            )
        )
    elif family == "roberta":
        model = T.RobertaForSequenceClassification(
            T.RobertaConfig(
                vocab_size=60,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=40,
                **NO_DROPOUT,
            )
        )
    elif family == "electra":
        model = T.ElectraForSequenceClassification(
            T.ElectraConfig(
                vocab_size=60,
                embedding_size=16,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                **NO_DROPOUT,
            )
        )
    elif family == "deberta-v2":
        model = T.DebertaV2ForSequenceClassification(
            T.DebertaV2Config(
                vocab_size=60,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=40,
                relative_attention=True,
                position_buckets=16,
                pos_att_type=["p2c", "c2p"],
                **NO_DROPOUT,
            )
        )
    elif family == "distilbert":
        model = T.DistilBertForSequenceClassification(
            T.DistilBertConfig(
                vocab_size=60,
                dim=32,
                n_layers=2,
                n_heads=4,
                hidden_dim=64,
                dropout=0.0,
                attention_dropout=0.0,
                seq_classif_dropout=0.0,
            )
        )
    elif family == "gpt2":
        model = T.GPT2LMHeadModel(
            T.GPT2Config(
                vocab_size=60,
                n_embd=32,
                n_layer=2,
                n_head=4,
                n_positions=40,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
            )
        )
    elif family == "marian":
        model = T.MarianMTModel(
            T.MarianConfig(
                vocab_size=60,
                d_model=32,
                encoder_layers=2,
                decoder_layers=2,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
                max_position_embeddings=40,
                pad_token_id=0,
                decoder_start_token_id=0,
                dropout=0.0,
                attention_dropout=0.0,
                activation_dropout=0.0,
            )
        )
    else:
        model = T.T5ForConditionalGeneration(
            T.T5Config(
                vocab_size=60,
                d_model=32,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
                decoder_start_token_id=0,
                dropout_rate=0.0,
            )
        )
    return model.eval()


def logits(model):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 60, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if model.config.is_encoder_decoder:
        inputs["decoder_input_ids"] = ids[:, :5]
    with torch.no_grad():
        return model(**inputs).logits


FAMILIES = ["bert", "roberta", "electra", "deberta-v2", "distilbert", "gpt2", "marian", "t5"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_found_with_its_blocks(family):
    model = build(family)
    arch = architecture(model)
    expected = {"roberta": "bert", "electra": "bert", "marian": "bart"}.get(family, family)
    assert arch.family == expected
    assert len(arch.blocks()) == (4 if family in ("marian", "t5") else 2)
    assert transformer_blocks(model) == arch.blocks()


def masked_copy(family, site_heads, ffn_keep):
    """The same model with the heads' value projections and the dropped neurons' output weights zeroed: what
    removing them must equal."""
    model = build(family)
    arch = architecture(model)
    with torch.no_grad():
        for index, heads in site_heads.items():
            site = arch.attention_sites()[index]
            value_name = [n for n in site.inputs if "v" in n.lower() and "pos" not in n][0]
            value = getattr(site.module, value_name)
            size = site.head_size
            for h in heads:
                value.weight[h * size : (h + 1) * size] = 0
                if value.bias is not None:
                    value.bias[h * size : (h + 1) * size] = 0
        for index, keep in ffn_keep.items():
            site = arch.ffn_sites()[index]
            dropped = sorted(set(range(site.size)) - set(keep))
            site.output_projection.weight[:, dropped] = 0
    return model


@pytest.mark.parametrize("family", ["bert", "roberta", "electra", "deberta-v2", "distilbert", "marian"])
def test_removing_heads_and_neurons_equals_masking_them_and_round_trips(family, tmp_path):
    model = build(family)
    sites = architecture(model).attention_sites()
    heads = {0: [1, 3], len(sites) - 1: [0]}
    keep = {0: list(range(0, 64, 2)), 1: list(range(40))}
    masked = masked_copy(family, heads, keep)
    before = model.num_parameters()
    remove_heads(model, heads)
    shrink_ffn(model, keep)
    assert torch.allclose(logits(model), logits(masked), atol=1e-5)
    assert model.num_parameters() < before
    assert model.config.hfopt_heads_per_layer[0] == 2 and model.config.hfopt_ffn_sizes[:2] == [32, 40]
    save_compressed(model, tmp_path / family)
    assert torch.equal(logits(load_compressed(tmp_path / family)), logits(model))


def test_t5_prunes_feed_forward_neurons_and_refuses_heads_in_one_line(tmp_path):
    model = build("t5")
    keep = {0: list(range(0, 64, 2)), 3: list(range(10))}
    masked = masked_copy("t5", {}, keep)
    shrink_ffn(model, keep)
    assert torch.allclose(logits(model), logits(masked), atol=1e-5)
    assert prune_ffn(model, 0.5) == [16, 32, 32, 5]
    save_compressed(model, tmp_path / "t5")
    assert torch.equal(logits(load_compressed(tmp_path / "t5")), logits(model))
    with pytest.raises(InputError, match="attention-head pruning is not supported for t5 models"):
        prune_heads(build("t5"), 0.25)


@pytest.mark.parametrize("family", ["deberta-v2", "distilbert", "marian"])
def test_pruning_by_weight_norm_works_for_the_newly_supported_families(family):
    model = build(family)
    removed = prune_heads(model, 0.25)
    assert sum(len(v) for v in removed.values()) == round(0.25 * 4 * len(architecture(model).attention_sites()))
    assert logits(model).isfinite().all()


@pytest.mark.parametrize("family", ["roberta", "deberta-v2", "distilbert"])
def test_students_are_made_from_every_single_stack_family(family):
    teacher = build(family)
    student = student_from_teacher(teacher, num_layers=1, layers=[1])
    assert len(architecture(student).blocks()) == 1
    assert student.num_parameters() < teacher.num_parameters()


def test_encoder_decoders_are_refused_where_one_stack_is_needed():
    with pytest.raises(
        InputError, match="student_from_teacher supports single-stack models .* MarianMTModel is an encoder-decoder"
    ):
        student_from_teacher(build("marian"), num_layers=1)
    with pytest.raises(InputError, match="weight sharing supports single-stack models"):
        share_blocks(build("t5"), [[0, 1]])


@pytest.mark.parametrize(
    "groups, words",
    [
        ([[0, 1], [1]], r"shared-layer groups overlap: block\(s\) \[1\] are in two groups"),
        ([[0, 5]], r"shared-layer group \[0, 5\] names blocks outside 0..1"),
    ],
)
def test_bad_share_groups_are_one_line(groups, words):
    with pytest.raises(InputError, match=words):
        share_blocks(build("bert"), groups)
