"""OFT beyond the shared contracts: the rotation by hand, PEFT's options against PEFT, the budget knob, refusals."""
import copy
import json

import pytest
import torch
from conftest import TARGETS, tiny_bert

import peftzoo
from peftzoo.adapters.oft import cayley_neumann, nearest_divisor

peft = pytest.importorskip("peft")
TOL = dict(atol=1e-5, rtol=1e-5)


def _randomize(ad, std=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ad.adapter_parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def test_rotation_by_hand():
    model = tiny_bert()
    ad = peftzoo.attach(model, "oft", targets=["query"], oft_block_size=4)
    _randomize(ad)
    layer = ad.layers["bert.encoder.layer.0.attention.self.query"]
    u = torch.zeros(8, 4, 4)
    iu = torch.triu_indices(4, 4, 1)
    u[:, iu[0], iu[1]] = layer.weight_q.detach()
    q = u - u.transpose(1, 2)
    eye = torch.eye(4)
    series = eye + 2 * q + 2 * q @ q + 2 * q @ q @ q + q @ q @ q @ q  # 5 terms, PEFT's default
    torch.testing.assert_close(layer.rotation(), series)
    # W' = W Rᵀ with R block-diagonal: the merged weight, and the forward
    w_merged = layer.base.weight @ torch.block_diag(*series).t()
    torch.testing.assert_close(layer.base.weight + layer.delta_weight(), w_merged, **TOL)
    x = torch.randn(3, 32)
    torch.testing.assert_close(layer(x), x @ w_merged.t() + layer.base.bias, **TOL)
    # exact Cayley: (I − Q)(I + Q)⁻¹, orthogonal
    exact = peftzoo.attach(tiny_bert(), "oft", targets=["query"], oft_block_size=4, use_cayley_neumann=False)
    layer2 = exact.layers["bert.encoder.layer.0.attention.self.query"]
    with torch.no_grad():
        layer2.weight_q.copy_(layer.weight_q)
    r = layer2.rotation()
    torch.testing.assert_close(r, (eye - q) @ torch.linalg.inv(eye + q), **TOL)
    torch.testing.assert_close(r.transpose(1, 2) @ r, eye.expand(8, 4, 4), **TOL)
    # PEFT's 3-term series equals its 4-term one
    torch.testing.assert_close(cayley_neumann(q, 3), cayley_neumann(q, 4))
    torch.testing.assert_close(cayley_neumann(q, 3), eye + 2 * q + 2 * q @ q + q @ q @ q)


def test_count_by_hand():
    model = tiny_bert()
    # query, value 32 -> 32 and intermediate.dense 32 -> 64, 2 layers: d_in = 32 everywhere; head 32·3 + 3
    head = 32 * 3 + 3
    assert peftzoo.count(model, "oft", targets=TARGETS, train=["classifier"], oft_block_size=8) == 6 * 4 * 28 + head
    assert peftzoo.count(model, "oft", targets=TARGETS, oft_block_size=0, r=2) == 6 * 2 * (16 * 15 // 2)
    assert peftzoo.count(model, "oft", targets=TARGETS, oft_block_size=8, block_share=True) == 6 * 28
    assert peftzoo.count(model, "oft", targets=["output.dense"], oft_block_size=8) == 2 * (4 * 28 + 8 * 28)


OPTIONS = [dict(oft_block_size=8), dict(oft_block_size=0, r=2), dict(oft_block_size=8, block_share=True),
           dict(oft_block_size=4, use_cayley_neumann=False), dict(oft_block_size=8, num_cayley_neumann_terms=3),
           dict(oft_block_size=12),  # 12 divides no width here: PEFT (and peftzoo) move it to 8
           dict(oft_block_size=8, coft=True, eps=1.0)]  # entries at std 0.1: ‖Q_i‖_F ≈ 0.75, out of the ball (≤ 0.5)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_options_equal_peft_forward_gradients_and_files(tmp_path, ids, kw):
    model = tiny_bert()
    ad = peftzoo.attach(model, "oft", targets=TARGETS + ["output.dense"], train=["classifier"], **kw)
    _randomize(ad)
    ad.save_peft(tmp_path / "ours")
    pm = peft.PeftModel.from_pretrained(tiny_bert(), tmp_path / "ours", is_trainable=True).eval()
    labels = torch.tensor([0, 1, 2])
    out, ref = model(ids, labels=labels), pm(ids, labels=labels)
    torch.testing.assert_close(out.logits, ref.logits, **TOL)
    assert (out.logits - tiny_bert()(ids).logits).abs().max() > 1e-4  # the rotation matters
    out.loss.backward()
    ref.loss.backward()
    theirs = [p for n, p in pm.named_parameters() if p.requires_grad and "oft_R" in n]
    assert sum(p.numel() for p in theirs) == sum(p.numel() for p in ad.adapter_parameters())
    for a, b in zip(ad.adapter_parameters(), theirs):
        torch.testing.assert_close(a.grad, b.grad, **TOL)
    pm.merge_adapter()  # PEFT's merged weights equal ours
    ad.merge()
    for n, layer in ad.layers.items():
        torch.testing.assert_close(layer.base.weight, pm.get_submodule("base_model.model." + n).base_layer.weight,
                                   **TOL)
    pm.unmerge_adapter()
    pm.save_pretrained(tmp_path / "peft")
    back = tiny_bert()
    peftzoo.load_peft(back, tmp_path / "peft")
    torch.testing.assert_close(back(ids).logits, ref.logits, **TOL)


def test_nearest_divisor_is_peft_rule():
    from peft.tuners.oft.layer import OFTLayer
    for n in (20, 32, 392, 7, 384):
        for v in range(1, n + 3):
            assert nearest_divisor(n, v) == OFTLayer.adjust_oft_parameters(None, n, v), (n, v)


def test_moved_block_size_warns_and_budget_solver_skips_it():
    from peftzoo.bench.budget import solve
    model = tiny_bert()
    with pytest.warns(UserWarning, match=r"oft_block_size=12 does not divide d_in of 6 layer\(s\).*blocks of 8"):
        peftzoo.attach(tiny_bert(), "oft", targets=TARGETS, oft_block_size=12)
    s = solve(model, "oft", 6 * 32 * 11 // 2, targets=TARGETS)  # b = 12 would hit it exactly, but is moved to 8
    assert s.kwargs == {"oft_block_size": 8, "r": 0} and s.achieved == 6 * 32 * 7 // 2
    s = solve(model, "oft", 6 * 32 * 15 // 2 + 10, targets=TARGETS)
    assert s.kwargs["oft_block_size"] == 16 and s.ok


def test_refusals_name_the_option():
    model = tiny_bert()
    cases = [(dict(r=4), "exactly one non-zero"), (dict(coft=True, eps=0.0), "coft=True needs eps > 0"),
             (dict(module_dropout=0.1), "never applies"), (dict(num_cayley_neumann_terms=1), "R = I")]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            peftzoo.attach(model, "oft", targets=["query"], **kw)
    lin = torch.nn.Sequential(torch.nn.Linear(7, 4))
    with pytest.raises(ValueError, match=r"'0': d_in=7 .* size 1"):
        peftzoo.attach(lin, "oft", targets=["0"], oft_block_size=4)
    assert all(p.requires_grad for p in model.parameters())  # nothing half-attached


def test_peft_file_options_checked(tmp_path):
    ad = peftzoo.attach(tiny_bert(), "oft", targets=["query"], oft_block_size=8)
    ad.save_peft(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["peft_version"] == "0.21.2" and cfg["use_cayley_neumann"] is True
    for change, msg in [({"peft_version": "0.17.1"}, "before PEFT changed it")]:
        (tmp_path / "adapter_config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(ValueError, match=msg):
            peftzoo.load_peft(tiny_bert(), tmp_path)
    assert cfg["coft"] is False and cfg["eps"] == 6e-5  # PEFT's defaults; a COFT file loads as COFT
    (tmp_path / "adapter_config.json").write_text(json.dumps({**cfg, "coft": True, "eps": 0.01}))
    ad = peftzoo.load_peft(tiny_bert(), tmp_path)
    assert ad.config.coft is True and ad.config.eps == 0.01
    (tmp_path / "adapter_config.json").write_text(json.dumps({**cfg, "module_dropout": 0.1}))
    with pytest.warns(UserWarning, match="never applies"):
        peftzoo.load_peft(tiny_bert(), tmp_path)


class PointwiseNet(torch.nn.Module):
    """1×1 convs (stride 2 with padding, a reflect-padded one without bias) and a Linear head; input (2, 8, 6, 6)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.pw = torch.nn.Conv2d(8, 12, 1, stride=2, padding=1)
        self.pw2 = torch.nn.Conv2d(12, 6, 1, padding=1, padding_mode="reflect", bias=False)
        self.head = torch.nn.Linear(6 * 6 * 6, 3)

    def forward(self, x):
        return self.head(torch.relu(self.pw2(torch.relu(self.pw(x)))).flatten(1))


def _equals_peft(net, model, ad, x, targets, kw, tmp_path, peft_unmerges=False):
    """Our randomized adapter on `model` (a `net()`) against PEFT through our file: forward, count, gradients, merge,
    unmerge; then PEFT's own moved values back through its file. Returns the PEFT model loaded from our file."""
    ad.save_peft(tmp_path / "ours")
    pm = peft.PeftModel.from_pretrained(net(), tmp_path / "ours", is_trainable=True)
    out, ref = model(x), pm(x)
    torch.testing.assert_close(out, ref, **TOL)
    assert (out - net()(x)).abs().max() > 1e-3  # the rotation matters
    theirs = [p for n, p in pm.named_parameters() if p.requires_grad]
    assert peftzoo.count(net(), "oft", targets=targets, **kw) == sum(p.numel() for p in theirs) \
        == ad.num_trainable()
    out.pow(2).mean().backward()
    ref.pow(2).mean().backward()
    for a, b in zip(ad.adapter_parameters(), theirs):
        torch.testing.assert_close(a.grad, b.grad, **TOL)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    pm.merge_adapter()
    ad.merge()
    for n, layer in ad.layers.items():
        torch.testing.assert_close(layer.base.weight, pm.get_submodule("base_model.model." + n).base_layer.weight,
                                   **TOL)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, **TOL)
    ad.unmerge()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, weights[k], **TOL)
    if peft_unmerges:
        pm.unmerge_adapter()
        drift = max((pm.get_submodule("base_model.model." + n).base_layer.weight - weights[n + ".base.weight"])
                    .abs().max() for n in ad.layers)
        assert drift < 1e-2  # PEFT's float32 inverse leaves its unmerged W off by this much; a fresh PEFT model below
    loaded = pm = peft.PeftModel.from_pretrained(net(), tmp_path / "ours", is_trainable=True)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in pm.parameters():  # PEFT's own trained values, then its file
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
        ref2 = pm(x)
    assert (ref2 - ref).abs().max() > 1e-3
    pm.save_pretrained(tmp_path / "peft")
    back = net()
    peftzoo.load_peft(back, tmp_path / "peft")
    with torch.no_grad():
        torch.testing.assert_close(back(x), ref2, **TOL)
    return loaded


CONV_OPTIONS = [dict(oft_block_size=4), dict(oft_block_size=0, r=2), dict(oft_block_size=4, block_share=True),
                dict(oft_block_size=4, use_cayley_neumann=False), dict(oft_block_size=5)]  # 5: moved to 4 / 6


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("kw", CONV_OPTIONS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_pointwise_conv_equals_peft_forward_gradients_merge_and_files(tmp_path, kw):
    targets = ["pw", "pw2", "head"]
    x = torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(1))
    model = PointwiseNet()
    ad = peftzoo.attach(model, "oft", targets=targets, **kw)
    assert {type(m).__name__ for m in ad.layers.values()} == {"OftConv", "OftLayer"}
    _randomize(ad, std=0.2)
    _equals_peft(PointwiseNet, model, ad, x, targets, kw, tmp_path, peft_unmerges=True)


def test_conv_refusals_name_the_reason():
    from peft import OFTConfig, get_peft_model
    cases = [(torch.nn.Conv2d(8, 8, 3), r"kernel \(3, 3\).*differs from the base layer's already at init"),
             (torch.nn.Conv2d(8, 8, 2, stride=2), r"kernel \(2, 2\)"),
             (torch.nn.Conv2d(8, 8, 1, groups=2), "a groups > 1 weight"),
             (torch.nn.Conv2d(8, 8, 1, dilation=2), "refuses dilation > 1")]
    for conv, msg in cases:
        model = torch.nn.Sequential(conv)
        with pytest.raises(ValueError, match=r"OFT on '0', a Conv2d: .*" + msg):
            peftzoo.attach(model, "oft", targets=["0"], oft_block_size=4)
        assert isinstance(model[0], torch.nn.Conv2d) and all(p.requires_grad for p in model.parameters())
    with pytest.raises(TypeError, match="is a Conv1d"):
        peftzoo.attach(torch.nn.Sequential(torch.nn.Conv1d(8, 8, 1)), "oft", targets=["0"], oft_block_size=4)
    # the premise of the kernel refusal: PEFT's OFT at init (R = I) does not give the base conv's output
    x = torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    for conv in (torch.nn.Conv2d(8, 8, 3), torch.nn.Conv2d(8, 8, 2, stride=2)):
        pm = get_peft_model(torch.nn.Sequential(conv), OFTConfig(target_modules=["0"], oft_block_size=4, r=0))
        with torch.no_grad():
            assert (pm(x) - conv(x)).abs().max() > 0.1


class EmbNet(torch.nn.Module):
    """A token embedding with padding_idx, a position embedding and a Linear; input ids (N, L) < 20."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(20, 16, padding_idx=0)
        self.pos = torch.nn.Embedding(8, 16)
        self.proj = torch.nn.Linear(16, 3)

    def forward(self, ids):
        return self.proj(torch.tanh(self.emb(ids) + self.pos(torch.arange(ids.shape[1])))).mean(1)


EMB_OPTIONS = [dict(oft_block_size=4), dict(oft_block_size=0, r=2), dict(oft_block_size=4, block_share=True),
               dict(oft_block_size=4, use_cayley_neumann=False), dict(oft_block_size=6)]  # 6: moved to 4 (d = 16)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("kw", EMB_OPTIONS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_embedding_equals_peft_forward_gradients_merge_and_files(tmp_path, kw):
    targets = ["emb", "pos", "proj"]
    x = torch.randint(0, 20, (4, 7), generator=torch.Generator().manual_seed(1))
    x[0, :2] = 0  # padding rows too
    model = EmbNet()
    ad = peftzoo.attach(model, "oft", targets=targets, **kw)
    assert {type(m).__name__ for m in ad.layers.values()} == {"OftEmbedding", "OftLayer"}
    _randomize(ad, std=0.2)
    layer = ad.layers["emb"]  # by hand: each looked-up row times the block-diagonal R (d = 16 rotated, not V)
    r = torch.block_diag(*layer.rotation())
    torch.testing.assert_close(layer(x), torch.nn.functional.embedding(x, EmbNet().emb.weight @ r), **TOL)
    pm = _equals_peft(EmbNet, model, ad, x, targets, kw, tmp_path)
    assert any("oft_embedding_R" in n for n, p in pm.named_parameters() if p.requires_grad)


def test_embedding_with_max_norm_is_refused_and_why():
    from peft import OFTConfig, get_peft_model
    model = torch.nn.Sequential(torch.nn.Embedding(10, 8, max_norm=1.0))
    with pytest.raises(ValueError, match=r"OFT on '0', an Embedding with max_norm=1.0: .*not orthogonal"):
        peftzoo.attach(model, "oft", targets=["0"], oft_block_size=4)
    assert isinstance(model[0], torch.nn.Embedding)
    # the premise: PEFT's forward (look up and renormalise in place, then rotate) is not its merge (rotate the
    # table, look up and renormalise) once R is off orthogonal (the Neumann series), on the same fresh table
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 8, max_norm=1.0)
    with torch.no_grad():
        emb.weight.mul_(3)  # rows longer than max_norm
    pm = get_peft_model(torch.nn.Sequential(emb), OFTConfig(target_modules=["0"], oft_block_size=4, r=0))
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
    merged = copy.deepcopy(pm)
    x = torch.arange(10)
    with torch.no_grad():
        merged.merge_adapter()
        assert (merged(x) - pm(x)).abs().max() > 1e-2


def _steps(model, params, ids, n=3, lr=0.05):
    """n AdamW steps on the loss; the logits of each forward (each computed before its step)."""
    opt, labels, seen = torch.optim.AdamW(params, lr=lr), torch.tensor([0, 1, 2]), []
    for _ in range(n):
        out = model(ids, labels=labels)
        seen.append(out.logits.detach())
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    return seen


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("share", [False, True])
def test_coft_training_trajectory_equals_peft(tmp_path, ids, share):
    """COFT projects the trained entries in place inside forward: same init (0), same AdamW; the logits of 4 forwards
    (3 of them after an optimizer step) and the entries after the 4th step equal PEFT's; the projection is active
    (the run differs from plain OFT) and holds its bound."""
    targets, kw = TARGETS + ["output.dense"], dict(oft_block_size=8, coft=True, eps=0.2, block_share=share)
    model = tiny_bert()
    ad = peftzoo.attach(model, "oft", targets=targets, train=["classifier"], **kw)
    ad.save_peft(tmp_path)
    cfg = peft.PeftConfig.from_pretrained(tmp_path)
    assert cfg.coft is True and cfg.eps == 0.2
    cfg.inference_mode = False
    pm = peft.get_peft_model(tiny_bert(), cfg)
    theirs = [p for p in pm.parameters() if p.requires_grad]
    assert sum(p.numel() for p in theirs) == ad.num_trainable()
    ours = _steps(model, ad.trainable_parameters(), ids, 4)
    ref = _steps(pm, theirs, ids, 4)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, **TOL)
    for n, layer in ad.layers.items():  # the entries the last forward projected, then one more step
        torch.testing.assert_close(layer.weight_q, pm.get_submodule("base_model.model." + n).oft_R["default"].weight,
                                   **TOL)
    plain = tiny_bert()
    ad2 = peftzoo.attach(plain, "oft", targets=targets, train=["classifier"], **{**kw, "coft": False})
    free = _steps(plain, ad2.trainable_parameters(), ids, 4)
    assert (free[-1] - ours[-1]).abs().max() > 1e-3  # the projection changed the trajectory
    with torch.no_grad():
        model(ids)
    for layer in ad.layers.values():
        q = layer.weight_q.detach()
        radius = 0.2 / (1 if share else layer.in_features // 8) ** 0.5  # eps / √(blocks stored)
        assert q.shape[0] == (1 if share else layer.in_features // 8)
        assert torch.all(q.norm(dim=1) * 2 ** 0.5 <= radius * (1 + 1e-5))  # ‖Q_i‖_F = √2 ‖entries‖
        assert torch.all(q.norm(dim=1) * 2 ** 0.5 >= radius * (1 - 1e-5))  # the steps pushed every block out
