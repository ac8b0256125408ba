"""Generated embeddings look up only the rows a batch reads (``allocator._rows``): the
same outputs and gradients as generating the whole weight, for every generator."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
import torch
from torch import nn

import allocator
from allocator._rows import ROW_EXPANDERS, generated_rows, row_lookups
from allocator._vocab import DOWNSAMPLE, UPSAMPLE

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

GENERATORS = [(d, u) for d in DOWNSAMPLE for u in UPSAMPLE]


def test_every_expansion_kind_has_a_row_function() -> None:
    assert set(ROW_EXPANDERS) == set(UPSAMPLE)


class Lookup(nn.Module):
    """Two embeddings (one with a padding row and frequency scaling) and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(300, 12, padding_idx=3)
        self.pos = nn.Embedding(20, 12, scale_grad_by_freq=True)
        self.head = nn.Linear(12, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1]).expand_as(ids)
        return self.head(torch.tanh(self.tok(ids) + self.pos(pos))).mean(1)


class UntiedReader(Lookup):
    """Reads its embedding's weight a second time, outside the embedding (no tie)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.tok(ids))
        return (h @ self.tok.weight.T).mean(1)


def _ids() -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 300, (4, 15), generator=g)
    ids[0, :4] = 3  # the padding row, several times
    ids[1, 2] = 299
    return ids


def _full_path(ssn: allocator.SSN) -> allocator.SSN:
    """The same SSN with the row lookup switched off: every weight generated in full."""
    other = copy.deepcopy(ssn)
    other._row_modules = []
    return other


def _run(ssn: nn.Module, ids: torch.Tensor,
         call: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Output and gradients of ``ssn``'s parameters, calling ``call`` (default ``ssn``)."""
    ssn.zero_grad(set_to_none=True)
    out = (call or ssn)(ids)
    out = out if isinstance(out, torch.Tensor) else out.logits
    (out.float() * torch.linspace(-1, 2, out.numel()).view_as(out)).sum().backward()
    grads = {n: p.grad.clone() for n, p in ssn.named_parameters() if p.grad is not None}
    return out.detach(), grads


def _assert_same(a: nn.Module, b: nn.Module, ids: torch.Tensor, **tol: Any) -> None:
    out_a, grads_a = _run(a, ids)
    out_b, grads_b = _run(b, ids)
    torch.testing.assert_close(out_a, out_b, **tol)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], **tol, msg=name)


@pytest.mark.parametrize(("downsample", "upsample"), GENERATORS)
@pytest.mark.parametrize("budget", [0.15, 0.5, 3.0])
def test_rows_equal_the_full_weight_rows_for_every_generator(downsample, upsample, budget) -> None:
    torch.manual_seed(0)
    ssn = allocator.shapeshift(Lookup(), budget, downsample=downsample, upsample=upsample,
                               mapping="roundrobin", groups=2)
    index = torch.tensor([0, 3, 7, 7, 150, 299, 1])
    for name, gen in ssn.generators():
        if not name.startswith("tok"):
            continue
        rows = generated_rows(gen, index)
        full = gen(torch.empty(0))
        torch.testing.assert_close(rows, full[index], atol=1e-6, rtol=1e-6)
        weights = torch.randn_like(rows)
        ga = torch.autograd.grad((rows * weights).sum(), list(ssn.parameters()), allow_unused=True)
        gb = torch.autograd.grad((full[index] * weights).sum(), list(ssn.parameters()),
                                 allow_unused=True)
        for a, b in zip(ga, gb, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("downsample", "upsample"), GENERATORS)
@pytest.mark.parametrize("budget", [0.15, 0.5, 3.0])
def test_ssn_with_row_lookups_equals_the_full_path(downsample, upsample, budget) -> None:
    torch.manual_seed(0)
    ssn = allocator.shapeshift(Lookup(), budget, downsample=downsample, upsample=upsample)
    assert ssn._row_modules == ["tok", "pos"]
    tok = dict(ssn.generators())["tok.weight"]
    assert tok.expand == (upsample if budget < 1 else None)  # every kind's row function
    _assert_same(ssn, _full_path(ssn), _ids(), atol=1e-6, rtol=1e-6)
    out_a, grads_a = _run(ssn, _ids())
    out_b, grads_b = _run(ssn, _ids(), call=ssn.model)  # outside SSN.forward
    torch.testing.assert_close(out_a, out_b, atol=1e-6, rtol=1e-6)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-6, msg=name)


def test_padding_row_is_zero_and_takes_no_gradient() -> None:
    torch.manual_seed(0)
    ssn = allocator.shapeshift(Lookup(), 0.3)
    only_pad = torch.full((2, 5), 3)
    tok = ssn.model.get_submodule("tok")
    assert torch.as_tensor(tok.weight)[3].abs().sum() == 0  # the full path, for reference
    with row_lookups([tok]):
        emb = tok(only_pad)
    assert emb.abs().sum() == 0
    emb.sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in ssn.parameters())


def test_the_row_path_does_not_generate_the_whole_embedding() -> None:
    torch.manual_seed(0)
    ssn = allocator.shapeshift(Lookup(), 0.3)
    calls: list[str] = []
    for name, gen in ssn.generators():
        gen.register_forward_hook(lambda *_, name=name: calls.append(name))
    ssn(_ids()).sum().backward()
    assert calls == ["head.weight"]
    calls.clear()
    ssn.model(_ids()).sum().backward()
    assert sorted(calls) == ["head.weight", "pos.weight", "tok.weight"]


def test_weight_read_outside_the_embedding_stays_right() -> None:
    torch.manual_seed(0)
    ssn = allocator.shapeshift(UntiedReader(), 0.3, downsample="emb")
    assert "tok" in ssn._row_modules  # one owner: looked up by rows, also read in full
    _assert_same(ssn, _full_path(ssn), _ids(), atol=1e-6, rtol=1e-6)


def test_out_of_range_ids_fail_as_in_torch() -> None:
    ssn = allocator.shapeshift(Lookup(), 0.3)
    for bad in (300, -1):
        ids = _ids()
        ids[2, 2] = bad
        with pytest.raises(IndexError):
            ssn(ids)
        with pytest.raises(IndexError):
            Lookup()(ids)


def test_materialize_save_and_load_are_unchanged() -> None:
    torch.manual_seed(0)
    ssn = allocator.shapeshift(Lookup(), 0.3, downsample="emb")
    ids = _ids()
    plain = allocator.materialize(ssn)
    assert type(plain) is Lookup and "forward" not in plain.tok.__dict__
    torch.testing.assert_close(plain(ids), ssn(ids), atol=1e-6, rtol=1e-6)
    assert "forward" not in ssn.model.tok.__dict__  # restored after the call
    buf = io.BytesIO()
    allocator.save(ssn, buf)
    buf.seek(0)
    loaded = allocator.load(buf, Lookup())
    assert loaded._row_modules == ssn._row_modules
    torch.testing.assert_close(loaded(ids), ssn(ids))
    assert set(loaded.state_dict()) == set(_full_path(ssn).state_dict())


def test_bfloat16_and_autocast_match_the_full_path() -> None:
    torch.manual_seed(0)
    ssn = allocator.shapeshift(Lookup(), 0.3).to(torch.bfloat16)
    _assert_same(ssn, _full_path(ssn), _ids(), atol=1e-2, rtol=1e-2)
    ssn = allocator.shapeshift(Lookup(), 0.3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_rows = ssn(_ids())
        out_full = _full_path(ssn)(_ids())
    assert out_rows.dtype == out_full.dtype
    torch.testing.assert_close(out_rows, out_full)


def _bert() -> nn.Module:
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=3, pad_token_id=0))


@pytest.mark.parametrize(("budget", "options"), [
    (0.1, {}),
    (4.0, {"templates": 4, "downsample": "emb"}),
    (0.3, {"mapping": "roundrobin", "groups": 4, "downsample": "emb", "upsample": "repeat"}),
])
def test_transformers_bert_trains_identically_either_way(budget, options) -> None:
    rows = allocator.shapeshift(_bert(), budget, **options)
    assert rows._row_modules == ["bert.embeddings.word_embeddings",
                                 "bert.embeddings.position_embeddings",
                                 "bert.embeddings.token_type_embeddings"]
    full = _full_path(rows)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 500, (4, 16), generator=g)
    labels = torch.tensor([0, 1, 2, 1])
    for ssn in (rows, full):
        ssn.train()
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (rows, full)]
    for _ in range(3):
        losses = []
        for ssn, opt in zip((rows, full), opts, strict=True):
            torch.manual_seed(7)  # the same dropout masks
            loss = ssn(input_ids=ids, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    for (na, a), (nb, b) in zip(rows.named_parameters(), full.named_parameters(), strict=True):
        assert na == nb
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=na)


def test_tied_embeddings_are_generated_in_full_and_stay_tied() -> None:
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=32))
    ssn = allocator.shapeshift(model, 0.2)
    assert ssn._row_modules == ["transformer.wpe"]  # wte is tied to lm_head
    ids = torch.randint(0, 100, (2, 12))
    ssn.eval()
    # theta's gradient sums 12 laps of its layers' windows (values up to ~50): the order
    # of the sums differs between the two paths.
    _assert_same(ssn, _full_path(ssn), ids, atol=2e-5, rtol=1e-5)
    plain = allocator.materialize(ssn)
    assert plain.get_submodule("lm_head").weight is plain.get_submodule("transformer.wte").weight


def test_int32_and_many_dimensional_ids_match_the_full_path() -> None:
    torch.manual_seed(0)
    ssn = allocator.shapeshift(Lookup(), 0.5, downsample="emb")
    tok = ssn.model.get_submodule("tok")
    ids = _ids().view(2, 2, 15)
    full = nn.functional.embedding(ids, torch.as_tensor(tok.weight), padding_idx=3)
    with row_lookups([tok]):
        for dtype in (torch.long, torch.int32):
            torch.testing.assert_close(tok(ids.to(dtype)), full, atol=1e-6, rtol=1e-6)
        assert tok(ids[:0]).shape == (0, 2, 15, 12)
