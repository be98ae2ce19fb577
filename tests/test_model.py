"""LFMIM's defining properties: modality independence, one-way layer-wise fusion, separate supervision."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (the training extras: pip install 'lfmim-edge[train]')")

from edge.config import PRESETS, LFMIMConfig, ModalitySpec  # noqa: E402
from edge.errors import ConfigError  # noqa: E402
from edge.model.lfmim import LFMIM, lfmim_loss  # noqa: E402

CFG = PRESETS["tiny"]
HEAD_OF = {0: "t", 1: "a", 2: "v"}


def make(cfg: LFMIMConfig = CFG, seed: int = 0) -> LFMIM:
    torch.manual_seed(seed)
    return LFMIM(cfg).eval()


def inputs(cfg: LFMIMConfig = CFG, batch: int = 3, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, s.length, s.dim, generator=g) for s in (cfg.text, cfg.audio, cfg.vision)]


@pytest.mark.parametrize("changed", [0, 1, 2])
def test_changing_one_modality_leaves_the_other_unimodal_outputs_bit_identical(changed):
    model = make()
    x = inputs()
    y = [t.clone() for t in x]
    y[changed] = torch.randn_like(y[changed])
    with torch.no_grad():
        before, after = model(*x), model(*y)
    for u in range(3):
        head = HEAD_OF[u]
        if u == changed:
            assert not torch.equal(getattr(before, head), getattr(after, head))
        else:
            assert torch.equal(getattr(before, head), getattr(after, head)), f"{head} changed with modality {changed}"
    assert not torch.allclose(before.m, after.m), "the fused output must depend on every modality"


def test_bidirectional_flow_breaks_independence():
    model = make(CFG.replace(flow="bi"))
    x = inputs()
    y = [x[0], torch.randn_like(x[1]), x[2]]
    with torch.no_grad():
        before, after = model(*x), model(*y)
    assert not torch.allclose(before.t, after.t), "with flow='bi' audio reaches the text head through the fused stream"
    assert not torch.allclose(before.v, after.v)


def _grad_owners(model: LFMIM, loss: torch.Tensor) -> set[str]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("head,module", [(0, "text"), (1, "audio"), (2, "vision")])
def test_a_unimodal_loss_reaches_only_its_own_module(head, module):
    model = make().train()
    out = model(*inputs())
    labels = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 0], [1, 1, 1, 1]])
    weights = [0.0, 0.0, 0.0, 0.0]
    weights[head] = 1.0
    loss, _ = lfmim_loss(out, labels, tuple(weights))
    assert _grad_owners(model, loss) == {module}


def test_the_multimodal_loss_reaches_every_module():
    model = make().train()
    labels = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 0], [1, 1, 1, 1]])
    loss, _ = lfmim_loss(model(*inputs()), labels, (0.0, 0.0, 0.0, 1.0))
    assert _grad_owners(model, loss) == {"text", "audio", "vision", "multi"}


def test_first_fusion_layer_sees_zeros_for_the_multimodal_rows():
    model = make()
    x = inputs()
    with torch.no_grad():
        before = model(*x).m
        model.multi.alpha_bar[0].fill_(123.0)  # multiplies Z-bar^1, which is all zeros
        same = model(*x).m
        model.multi.alpha_bar[1].fill_(3.0)
        changed = model(*x).m
    assert torch.equal(before, same)
    assert not torch.allclose(before, changed)


def test_fusion_reads_unimodal_layers_up_to_the_last_input():
    """Layer l + 1 of the fused stream reads the output of uni-modal layer l, so the last uni-modal layer only
    feeds its own head."""
    model = make()
    x = inputs()
    with torch.no_grad():
        before = model(*x)
        for p in model.text.layers[-1].parameters():
            p.add_(0.5)
        after = model(*x)
        assert torch.equal(before.m, after.m)
        assert not torch.allclose(before.t, after.t)
        for p in model.text.layers[0].parameters():
            p.add_(0.5)
        assert not torch.allclose(before.m, model(*x).m)


def test_paper_contract_and_config_driven_shapes():
    paper = LFMIMConfig()
    assert (paper.text.length, paper.text.dim) == (80, 768)
    assert (paper.audio.length, paper.audio.dim) == (100, 768)
    assert (paper.vision.length, paper.vision.dim) == (64, 512)
    assert (paper.d_model, paper.num_layers, paper.num_heads, paper.num_classes) == (128, 4, 8, 7)
    odd = CFG.replace(text=ModalitySpec(10, 7), audio=ModalitySpec(6, 9), vision=ModalitySpec(5, 3), num_layers=3,
                      num_fex_tokens=2, conv_kernel=3, positional="learned", pooling="first")
    out = make(odd)(*inputs(odd, batch=2))
    assert all(o.shape == (2, 7) for o in out)
    assert len(make(odd).multi.layers) == 3 and odd.multimodal_length == 2 + 7 + 9 + 3


def test_loss_ignores_missing_labels_and_label_mix_one_is_lfmim_ml():
    model = make()
    out = model(*inputs())
    labels = torch.tensor([[0, 1, 2, 3], [-1, 5, 6, 0], [1, -1, 1, 1]])
    _, losses = lfmim_loss(out, labels)
    expected_t = torch.nn.functional.cross_entropy(out.t[[0, 2]], labels[[0, 2], 0])
    assert torch.allclose(losses[0], expected_t)
    full = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 0], [1, 2, 1, 1]])
    _, ml = lfmim_loss(out, full, label_mix=1.0)
    for i, logits in enumerate((out.t, out.a, out.v)):
        assert torch.allclose(ml[i], torch.nn.functional.cross_entropy(logits, full[:, 3]))
    total, per_head = lfmim_loss(out, full, (1.0, 2.0, 0.0, 0.5))
    assert torch.allclose(total, per_head[0] + 2 * per_head[1] + 0.5 * per_head[3])


@pytest.mark.parametrize("change,match", [
    ({"d_model": 30, "num_heads": 4}, "multiple of num_heads"),
    ({"flow": "sideways"}, "flow must be"),
    ({"conv_kernel": 2}, "odd"),
    ({"pooling": "median"}, "pooling must be"),
])
def test_invalid_config_is_one_clear_error(change, match):
    with pytest.raises(ConfigError, match=match):
        CFG.replace(**change)


def test_config_round_trips_through_json_dicts():
    cfg = CFG.replace(flow="bi", fusion_init=(0.5, 0.25))
    assert LFMIMConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown LFMIMConfig field"):
        LFMIMConfig.from_dict({**cfg.to_dict(), "width": 3})
