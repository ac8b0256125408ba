"""Shapeshifter Networks on arbitrary models: forward, gradients, export, persistence."""

from __future__ import annotations

import copy
import io
import itertools

import pytest
import torch
from torch import nn

import allocator
from tests.models import ConvZoo, TiedLanguageModel, mlp

MODELS = {"tied_lm": TiedLanguageModel, "conv_zoo": ConvZoo}
GENERATORS = list(itertools.product(allocator.DOWNSAMPLE, allocator.UPSAMPLE))


def _build(name: str) -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    cls = MODELS[name]
    return cls(), cls.example()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("budget", [0.1, 0.5, 4.0])
@pytest.mark.parametrize("mapping", ["single", "type", "roundrobin", "random"])
def test_ssn_keeps_shapes_and_every_parameter_gets_a_gradient(name, budget, mapping) -> None:
    model, x = _build(name)
    groups = 3 if mapping in ("roundrobin", "random") else None
    ssn = allocator.shapeshift(model, budget, mapping=mapping, groups=groups)
    out = ssn(*x)
    assert out.shape == model(*x).shape
    out.square().sum().backward()
    missing = [n for n, p in ssn.named_parameters() if p.grad is None]
    assert missing == []
    assert allocator.count_parameters(ssn) <= ssn.allocation().budget


@pytest.mark.parametrize(("down", "up"), GENERATORS)
@pytest.mark.parametrize("budget", [0.3, 3.0])
def test_every_value_of_every_group_is_read(down, up, budget) -> None:
    torch.manual_seed(0)
    model = mlp()
    ssn = allocator.shapeshift(model, budget, downsample=down, upsample=up,
                               mapping="roundrobin", groups=2)
    ssn(torch.randn(16, 32)).sum().backward()
    for group in ssn.groups:
        assert group.theta.grad is not None
        assert (group.theta.grad != 0).all(), "a group value that no layer reads"


def test_user_model_is_left_untouched_and_keeps_its_classes() -> None:
    model, x = _build("tied_lm")
    before = copy.deepcopy(model.state_dict())
    ssn = allocator.shapeshift(model, 0.2, mapping="type")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(ssn.model, TiedLanguageModel)
    assert isinstance(ssn.model.out, nn.Linear) and isinstance(ssn.model.lstm, nn.LSTM)
    assert dict(ssn.model.named_modules()).keys() >= dict(model.named_modules()).keys()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("budget", "down", "up"), [(0.2, "emb", "inter"), (0.2, "wavg", "mask"),
                                                     (3.0, "avg", "repeat"), (3.0, "emb", "inter")])
def test_materialized_model_is_the_original_class_and_matches(name, budget, down, up) -> None:
    model, x = _build(name)
    ssn = allocator.shapeshift(model, budget, downsample=down, upsample=up, mapping="type")
    ssn.eval()
    plain = allocator.materialize(ssn)
    assert type(plain) is type(model)
    assert allocator.count_parameters(plain) == allocator.count_parameters(model)
    fresh = type(model)()
    fresh.load_state_dict(plain.state_dict())
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(*x), ssn(*x), rtol=1e-5, atol=1e-5)


def test_materialize_keeps_weight_tying() -> None:
    model, _ = _build("tied_lm")
    plain = allocator.materialize(allocator.shapeshift(model, 0.5, mapping="type"))
    assert plain.out.weight is plain.emb.weight


@pytest.mark.parametrize("name", MODELS)
def test_save_and_load_restore_identical_outputs(name, tmp_path) -> None:
    model, x = _build(name)
    ssn = allocator.shapeshift(model, 0.3, mapping="random", groups=2, seed=3)
    opt = torch.optim.SGD(ssn.parameters(), lr=0.1)
    ssn(*x).square().mean().backward()
    opt.step()  # saved weights differ from the initial ones
    ssn.eval()
    path = tmp_path / "ssn.pt"
    allocator.save(ssn, path)
    assert isinstance(torch.load(path, weights_only=True), dict)
    loaded = allocator.load(path, type(model)())
    loaded.eval()
    assert loaded.plan == ssn.plan
    with torch.no_grad():
        assert torch.equal(loaded(*x), ssn(*x))


def test_state_dict_round_trips_with_weights_only() -> None:
    model, x = _build("conv_zoo")
    ssn = allocator.shapeshift(model, 0.5)
    buf = io.BytesIO()
    torch.save(ssn.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = allocator.shapeshift(type(model)(), 0.5)
    other.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(other(*x), ssn(*x))


@pytest.mark.parametrize(
    "payload",
    [b"", b"not a checkpoint", "truncate", "foreign", "other_model"],
)
def test_bad_checkpoints_raise_checkpoint_error(payload, tmp_path) -> None:
    model, _ = _build("conv_zoo")
    path = tmp_path / "bad.pt"
    good = io.BytesIO()
    allocator.save(allocator.shapeshift(model, 0.3), good)
    if payload == "truncate":
        path.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    elif payload == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    elif payload == "other_model":
        path.write_bytes(good.getvalue())
        with pytest.raises(allocator.CheckpointError, match="does not fit"):
            allocator.load(path, TiedLanguageModel())
        return
    else:
        path.write_bytes(payload)
    with pytest.raises(allocator.CheckpointError):
        allocator.load(path, ConvZoo())


def test_bfloat16_model_trains_in_bfloat16() -> None:
    model, x = _build("tied_lm")
    ssn = allocator.shapeshift(model.to(torch.bfloat16), 0.3, mapping="roundrobin", groups=3)
    assert all(p.dtype == torch.bfloat16 for p in ssn.parameters())
    out = ssn(x[0], x[1].to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert all(p.grad is not None for p in ssn.parameters())


def test_autocast_reaches_every_parameter() -> None:
    model, x = _build("conv_zoo")
    ssn = allocator.shapeshift(model, 0.4, mapping="random", groups=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ssn(*x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert all(p.grad is not None for p in ssn.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_device_follows_the_model_on_cuda() -> None:
    model, x = _build("conv_zoo")
    ssn = allocator.shapeshift(model.cuda(), 0.3)
    assert all(p.is_cuda for p in ssn.parameters())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = ssn(*(t.cuda() for t in x))
    out.float().sum().backward()
    assert all(p.grad is not None for p in ssn.parameters())
    plain = allocator.materialize(ssn)
    assert all(p.is_cuda for p in plain.parameters())


def test_ssn_trains_a_real_task_and_loss_falls() -> None:
    torch.manual_seed(0)
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data[:512], dtype=torch.float32) / 16
    y = torch.tensor(digits.target[:512])
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    ssn = allocator.shapeshift(model, 0.25, mapping="roundrobin", groups=2)
    opt = torch.optim.Adam(ssn.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = nn.functional.cross_entropy(ssn(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (ssn(x).argmax(1) == y).float().mean().item()
    assert loss.item() < 0.3 * first
    assert accuracy > 0.9


@pytest.mark.parametrize(("rows", "cols", "m"), [(40, 30, 100), (1, 50, 7), (64, 9, 60), (5, 5, 1)])
def test_inter_is_bilinear_interpolation(rows, cols, m) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(cols, rows, bias=False))
    ssn = allocator.shapeshift(model, m, upsample="inter")
    theta = ssn.groups[0].theta
    r, c = allocator._generators.inter_grid(m, rows, cols)
    src = theta.repeat(-(-r * c // m))[: r * c].view(1, 1, r, c)
    want = nn.functional.interpolate(src, size=(rows, cols), mode="bilinear", align_corners=True)
    gen = ssn.generators()[0][1]
    # times fixed random signs
    assert set(gen.sign.unique().tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(ssn.model[0].weight, want.view(rows, cols) * gen.sign.view(rows, cols))


@pytest.mark.parametrize("budget", [0.25, 4.0])
def test_emb_ssn_trains_at_the_plain_models_sgd_learning_rate(budget) -> None:
    """Coefficient gradients sum over whole layers, and `emb`'s shared projection over
    all the group's layers; without the coefficient scaling, SGD at the plain model's
    lr 0.1 blows up on this network within a few dozen steps."""
    from trials.data import load_dataset
    from trials.zoo import build_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_dataset("mnist1d")
    model = build_model("resnet1d", input_shape=data.input_shape, num_classes=10)
    ssn = allocator.shapeshift(model, budget, downsample="emb", mapping="single")
    assert any(r["templates"] > 1 for r in ssn.allocation().rows())
    opt = torch.optim.SGD(ssn.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        idx = torch.randint(0, len(data.train.y), (128,), generator=g)
        loss = nn.functional.cross_entropy(ssn(data.train.x[idx]), data.train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert max(losses) < 1.5 * losses[0]
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0]


def test_the_default_downsampling_is_slice_below_the_models_size_and_wavg_above(tmp_path) -> None:
    """Below its own size a model's small layers read one window each (``slice``); from
    it up they mix templates (``wavg``), which ``slice`` could not fill. The choice is
    the allocation's, saved with it."""
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 8), nn.Linear(8, 8))
    low, high = allocator.shapeshift(model, 0.5), allocator.shapeshift(model, 4.0)
    assert low.plan.options["downsample"] == "slice"
    assert high.plan.options["downsample"] == "wavg"
    combines = {g.combine for _, g in low.generators()}
    assert combines == {"slice"}, combines  # the 8 x 8 layer, smaller than the group, too
    assert "wavg" in {g.combine for _, g in high.generators()}
    assert allocator.count_parameters(high) > 3.9 * allocator.count_parameters(model)
    explicit = allocator.shapeshift(model, 0.5, downsample="wavg")
    assert "wavg" in {g.combine for _, g in explicit.generators()}
    allocator.save(low, tmp_path / "low.pt")
    again = allocator.load(tmp_path / "low.pt", copy.deepcopy(model))
    assert again.plan.options["downsample"] == "slice"


def test_avg_keeps_one_templates_scale_and_old_avg_allocations_are_refused(tmp_path) -> None:
    """`avg` mixes K templates as their sum over sqrt(K): K independent windows keep one
    window's scale (their mean had 1 / sqrt(K) of it: deep networks started too small).
    An allocation saved in format 2 with such a layer would load into other weights, so
    it is refused; one without loads."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 40, bias=False), nn.Linear(40, 10, bias=False))
    ssn = allocator.shapeshift(model, 3.0, downsample="avg", templates=4)
    gens = dict(ssn.generators())
    gen = gens["0.weight"]
    assert gen.combine == "avg" and gen.templates == 4
    t = ssn.groups[0].windows(gen.offset, gen.templates, gen.window).detach()
    torch.testing.assert_close(ssn.model[0].weight.detach().reshape(-1), t.sum(0) / 2.0)
    # independent windows: the generated weight has about one window's RMS, not half of it
    assert 0.7 < float(ssn.model[0].weight.detach().pow(2).mean().sqrt()
                       / t.pow(2).mean().sqrt()) < 1.3

    def saved_as_format_2(net: allocator.SSN) -> dict:
        state = net.state_dict()
        key = next(k for k in state if k.endswith("_extra_state"))
        state[key] = copy.deepcopy(state[key])
        state[key]["npas_plan"]["format"] = 2
        return state

    with pytest.raises(allocator.CheckpointError, match="format 2 has `avg` layers"):
        allocator.shapeshift(model, 3.0, downsample="avg", templates=4).load_state_dict(
            saved_as_format_2(ssn))
    wavg = allocator.shapeshift(model, 3.0, templates=4)
    allocator.shapeshift(model, 3.0, templates=4).load_state_dict(saved_as_format_2(wavg))
