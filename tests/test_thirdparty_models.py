"""Shapeshifter Networks of third-party models: transformers' BERT, GPT-2, T5, ViT and
Wav2Vec2 (its positional convolution carries torch's ``weight_norm``), built from tiny
configs (no weights are downloaded), through the whole life of an SSN."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import allocator

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

Builder = Callable[[], nn.Module]


def bert() -> nn.Module:
    return transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=3))


def gpt2() -> nn.Module:
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=32,
        bos_token_id=0, eos_token_id=0))


def t5() -> nn.Module:
    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))


def vit() -> nn.Module:
    return transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=3))


def wav2vec2() -> nn.Module:
    return transformers.Wav2Vec2ForSequenceClassification(transformers.Wav2Vec2Config(
        vocab_size=20, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_labels=3,
        classifier_proj_size=16))


def _inputs(name: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 100, (2, 12), generator=g)
    labels = torch.tensor([0, 2])
    return {
        "bert": {"input_ids": ids, "labels": labels},
        "gpt2": {"input_ids": ids, "labels": ids},
        "t5": {"input_ids": ids, "labels": ids[:, :6].contiguous()},
        "vit": {"pixel_values": torch.randn(2, 3, 16, 16, generator=g), "labels": labels},
        "wav2vec2": {"input_values": torch.randn(2, 800, generator=g), "labels": labels},
    }[name]


MODELS: dict[str, Builder] = {"bert": bert, "gpt2": gpt2, "t5": t5, "vit": vit,
                              "wav2vec2": wav2vec2}


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name]()


def _logits(model: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**x).logits


def _ties(model: nn.Module) -> list[set[str]]:
    """Groups of state_dict keys that hold the same tensor (tied weights)."""
    by_ptr: dict[int, set[str]] = {}
    for key, value in model.state_dict().items():
        by_ptr.setdefault(value.data_ptr(), set()).add(key)
    return sorted((keys for keys in by_ptr.values() if len(keys) > 1), key=sorted)


@pytest.mark.parametrize("name", MODELS)
def test_a_third_party_model_lives_a_whole_ssn_life(name: str) -> None:
    model, x = _build(name), _inputs(name)
    ssn = allocator.shapeshift(model, 0.25)
    # budget respected, and most of it used
    assert 0.99 * ssn.allocation().budget <= allocator.count_parameters(ssn)
    assert allocator.count_parameters(ssn) <= ssn.allocation().budget
    # forward gives the model's own output type and shapes
    ssn.train()
    out = ssn(**x)
    assert type(out) is type(model(**x))
    assert out.logits.shape == model(**x).logits.shape
    # gradients reach every group value's group and every unshared tensor that has one
    # in the plain model
    model.zero_grad()
    model(**x).loss.backward()
    plain_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    out.loss.backward()
    for group in ssn.groups:
        assert group.theta.grad is not None and group.theta.grad.abs().sum() > 0
    missing = [n for n, p in ssn.named_parameters() if p.grad is None
               and not (n.startswith("model.") and n[len("model."):] not in plain_grad)]
    assert missing == []
    # an optimiser step changes the outputs
    before = _logits(ssn, x)
    torch.optim.SGD(ssn.parameters(), lr=0.1).step()
    after = _logits(ssn, x)
    assert not torch.allclose(before, after)
    # materialise: the model's own class, a state_dict a fresh model loads, same outputs,
    # the same names and the same ties
    plain = allocator.materialize(ssn)
    assert type(plain) is type(model)
    fresh = _build(name)
    fresh.load_state_dict(plain.state_dict())
    assert sorted(plain.state_dict()) == sorted(model.state_dict())
    assert _ties(plain) == _ties(fresh) == _ties(model)
    torch.testing.assert_close(_logits(fresh, x), after, rtol=1e-5, atol=1e-5)
    # the SSN keeps the model's module names
    assert {n for n, _ in model.named_modules()} <= {n for n, _ in ssn.model.named_modules()}
    # save and load into a freshly built model
    buf = io.BytesIO()
    allocator.save(ssn, buf)
    buf.seek(0)
    loaded = allocator.load(buf, _build(name))
    torch.testing.assert_close(_logits(loaded, x), after, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("budget", [0.05, 0.25, 4.0])
def test_gpt2_shares_its_conv1d_weights_at_every_budget(budget: float) -> None:
    model = _build("gpt2")
    base = allocator.count_parameters(model)
    ssn = allocator.shapeshift(model, budget)
    names = {s.name for s in ssn.plan.slots}
    assert "transformer.h.0.attn.c_attn.weight" in names
    assert "transformer.h.1.mlp.c_proj.weight" in names
    assert allocator.count_parameters(ssn) <= ssn.allocation().budget
    if budget == 4.0:  # only the biases and norms are not multiplied
        assert allocator.count_parameters(ssn) >= 3.9 * base
    ssn(**_inputs("gpt2")).loss.backward()


def test_gpt2_conv1d_fan_in_is_its_first_dimension_and_tied_embeddings_stay_tied() -> None:
    model = _build("gpt2")
    slots = {s.name: s for s in allocator.find_slots(model)[0]}
    c_attn = slots["transformer.h.0.attn.c_attn.weight"]
    assert c_attn.kind == "Conv1D" and c_attn.shape == (32, 96) and c_attn.fan_in == 32
    tied = [s for s in slots.values() if len(s.owners) > 1]
    assert [set(s.owners) for s in tied] == [{"transformer.wte.weight", "lm_head.weight"}]
    ssn = allocator.shapeshift(model, 0.1)
    with torch.no_grad():
        assert torch.equal(ssn.model.lm_head.weight, ssn.model.transformer.wte.weight)
    plain = allocator.materialize(ssn)
    assert plain.lm_head.weight is plain.transformer.wte.weight


def test_wav2vec2_weight_norm_stays_and_its_direction_is_generated() -> None:
    model = _build("wav2vec2")
    ssn = allocator.shapeshift(model, 0.25)
    conv = "wav2vec2.encoder.pos_conv_embed.conv"
    assert f"{conv}.parametrizations.weight.original1" in {s.name for s in ssn.plan.slots}
    kept = {row["layer"]: row["reason"] for row in ssn.allocation().unshared_rows()}
    assert "singleton" in kept[f"{conv}.parametrizations.weight.original0"]
    plain = allocator.materialize(ssn)
    module = plain.get_submodule(conv)
    assert torch.nn.utils.parametrize.is_parametrized(module, "weight")
    assert type(module.parametrizations.weight[0]).__name__ == "_WeightNorm"
    assert isinstance(module.parametrizations.weight.original1, nn.Parameter)


def test_learned_mapping_pretrains_on_transformers_outputs() -> None:
    model = _build("bert")
    g = torch.Generator().manual_seed(0)
    dict_batches = [{"input_ids": torch.randint(1, 100, (4, 8), generator=g),
                     "labels": torch.randint(0, 3, (4,), generator=g)} for _ in range(3)]
    ssn = allocator.shapeshift(model, 0.3, mapping="learned", groups=3, pretrain=dict_batches)
    assert len(set(s.group for s in ssn.plan.slots)) == 3
    # (inputs, targets) pairs: the cross-entropy of SequenceClassifierOutput.logits
    pairs = [({"input_ids": b["input_ids"]}, b["labels"]) for b in dict_batches]
    allocator.shapeshift(model, 0.3, mapping="learned", groups=2, pretrain=pairs)
    # a user loss, and a language model's (batch, length, vocabulary) logits
    seen: list[Any] = []

    def loss(output: Any, targets: Any) -> torch.Tensor:
        seen.append(type(output).__name__)
        return output.logits.float().pow(2).mean()

    allocator.shapeshift(model, 0.3, mapping="learned", groups=2, pretrain=pairs,
                         pretrain_loss=loss)
    assert seen == ["SequenceClassifierOutput"] * 3
    lm = _build("gpt2")
    ids = [torch.randint(1, 100, (2, 8), generator=g) for _ in range(2)]
    allocator.shapeshift(lm, 0.3, mapping="learned", groups=2,
                         pretrain=[({"input_ids": i}, i) for i in ids])
