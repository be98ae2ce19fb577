"""The authors' LFMIM variant and the import of their checkpoints.

The name/shape table and the functional forward below are written from the reference
(shared/reference/authors-lfmim-v2.md), independently of edge.model.authors, so that the model is checked
against the specification rather than against itself.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
import torch.nn.functional as F  # noqa: E402

from edge.errors import CheckpointError, ConfigError, InputError  # noqa: E402
from edge.labels import CLASSES  # noqa: E402
from edge.model.authors import (  # noqa: E402
    AuthorsConfig,
    AuthorsLFMIM,
    add_positions,
    build_authors_model,
    pad_audio,
    sinusoidal_rows,
)
from edge.model.checkpoint import load_checkpoint, load_state_into, read_metadata  # noqa: E402
from edge.model.import_authors import import_authors_checkpoint  # noqa: E402

# Small but structurally complete: real sequence lengths, 4 layers, 2 vision blocks per layer.
SMALL = dict(width=64, heads=4, layers=4, vblocks=2, t_in=64, a_in=64, v_in=128, t_len=80, a_len=50, v_len=16, m=4)
FULL = dict(width=1024, heads=16, layers=4, vblocks=2, t_in=1024, a_in=1024, v_in=2048, t_len=80, a_len=50, v_len=16,
            m=4)


# ----------------------------------------------------------------------------------- reference table


def reference_table(width, layers, vblocks, t_in, a_in, v_in, t_len, a_len, v_len, m, classes=7, **_):
    """Every name -> shape of the authors' state dict (without ``module.``), from the reference page."""
    w = width
    ts, as_, vs = t_len + 1, a_len + 1, v_len + 1
    table = {}
    for stream, count in (("t", layers), ("a", layers), ("v", layers * vblocks), ("m", layers)):
        for i in range(count):
            p = f"transformer_{stream}.{i}."
            table[p + "attn.in_proj_weight"] = (3 * w, w)
            table[p + "attn.in_proj_bias"] = (3 * w,)
            table[p + "attn.out_proj.weight"] = (w, w)
            table[p + "attn.out_proj.bias"] = (w,)
            for ln in ("ln_1", "ln_12", "ln_2", "ln_22"):
                table[p + ln + ".weight"] = (w,)
                table[p + ln + ".bias"] = (w,)
            table[p + "mlp.c_fc.weight"] = (4 * w, w)
            table[p + "mlp.c_fc.bias"] = (4 * w,)
            table[p + "mlp.c_proj.weight"] = (w, 4 * w)
            table[p + "mlp.c_proj.bias"] = (w,)
    for i in range(layers):
        table[f"t2m.{i}.weight"] = (1, ts)
        table[f"t2m.{i}.bias"] = (1,)
        table[f"v2m.{i}.weight"] = (1, vs)
        table[f"v2m.{i}.bias"] = (1,)
    table["fc_vtom.weight"], table["fc_vtom.bias"] = (w, w), (w,)
    table["fc_tdimtr.weight"], table["fc_tdimtr.bias"] = (w, t_in), (w,)
    table["fc_adimtr.weight"], table["fc_adimtr.bias"] = (w, a_in), (w,)
    table["fc_vdimtr.weight"], table["fc_vdimtr.bias"] = (w, v_in), (w,)
    for kind in ("pre", "post", "prepe"):
        for s in "tavm":
            table[f"ln_{kind}_{s}.weight"] = (w,)
            table[f"ln_{kind}_{s}.bias"] = (w,)
    table["proj_a"] = (w, w)
    table["proj_v"] = (w, w)
    table["mix_t"], table["mix_a"], table["mix_v"], table["mix_m"] = (ts,), (as_,), (vs,), (m + ts + as_ + vs,)
    for s in "tav":
        for key, shape in (("0", (w // 2, w)), ("2", (32, w // 2)), ("4", (classes, 32))):
            table[f"mlp_{s}.{key}.weight"] = shape
            table[f"mlp_{s}.{key}.bias"] = (shape[0],)
    for key, shape in (("0", (2 * w, 4 * w)), ("2", (128, 2 * w)), ("4", (64, 128)), ("6", (classes, 64))):
        table[f"mlp_m.{key}.weight"] = shape
        table[f"mlp_m.{key}.bias"] = (shape[0],)
    table["plus_p"] = (6,)
    table["pe_t"], table["pe_t2m"], table["pe_a"] = (ts, w), (ts, w), (as_, w)
    table["pe_v"], table["pe_v2m"], table["pe_m"] = (vs, w), (vs, w), (m, w)
    table["me"] = (4,)
    table["embedding_t"], table["embedding_a"], table["embedding_v"] = (w,), (w,), (w,)
    table["embedding_m"] = (m, w)
    return table


def authors_state(spec=SMALL, seed=0, buffer=True):
    """A state dict as the authors' DDP training saves it: ``module.`` names, random well-scaled values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in reference_table(**spec).items():
        value = torch.randn(shape, generator=gen)
        if ".ln_" in name or name.startswith("ln_"):
            value = 1.0 + 0.1 * value if name.endswith("weight") else 0.1 * value
        elif len(shape) == 2:
            value = value / math.sqrt(shape[1])
        elif name != "plus_p":
            value = 0.1 * value
        state["module." + name] = value
    if buffer:
        state["module.embed_positions._float_tensor"] = torch.zeros(1)
    return state


# ------------------------------------------------------------------------------ functional reference


def reference_forward(sd, text, audio, vision, heads):
    """The reference's forward pass with torch.nn.functional, straight on the raw ``module.`` state dict."""
    g = lambda n: sd["module." + n]  # noqa: E731
    width = g("fc_tdimtr.weight").shape[0]
    n_m = g("embedding_m").shape[0]
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("module.transformer_t."))
    vblocks = (1 + max(int(k.split(".")[2]) for k in sd if k.startswith("module.transformer_v."))) // layers

    def ln(x, n):
        return F.layer_norm(x.float(), (width,), g(n + ".weight"), g(n + ".bias"), 1e-5)

    def lin(x, n):
        return F.linear(x, g(n + ".weight"), g(n + ".bias"))

    def block(x, p):
        h = ln(x, p + "ln_1").transpose(0, 1)
        att, _ = F.multi_head_attention_forward(
            h, h, h, width, heads, g(p + "attn.in_proj_weight"), g(p + "attn.in_proj_bias"), None, None, False,
            0.0, g(p + "attn.out_proj.weight"), g(p + "attn.out_proj.bias"), training=False, need_weights=False,
        )
        x = x + ln(att.transpose(0, 1), p + "ln_12")
        h = lin(F.relu(lin(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
        return x + ln(h, p + "ln_22")

    def positions(x):
        n = x.shape[1]
        half = width // 2
        freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
        ang = torch.arange(n + 1, dtype=torch.float32).unsqueeze(1) * freq.unsqueeze(0)
        table = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
        table[0] = 0.0
        idx = torch.arange(1, n + 1).unsqueeze(0) * (x[:, :, 0] != 0).long()
        return table[idx]

    def embed(x, s):
        x = ln(x * math.sqrt(width), f"ln_prepe_{s}")
        return ln(x + positions(x), f"ln_pre_{s}")

    b = text.shape[0]
    text = text[:, :80]
    if audio.shape[1] >= 50:
        audio = audio[:, :50]
    else:
        audio = torch.cat([audio, torch.zeros(b, 50 - audio.shape[1], audio.shape[2])], dim=1)
    t = torch.cat([g("embedding_t").repeat(b, 1, 1), lin(text, "fc_tdimtr")], dim=1)
    a = torch.cat([g("embedding_a").repeat(b, 1, 1), lin(audio, "fc_adimtr")], dim=1)
    v = torch.cat([g("embedding_v").repeat(b, 1, 1), lin(vision, "fc_vdimtr")], dim=1)
    m = g("embedding_m").repeat(b, 1, 1)
    t, a, v, m = embed(t, "t"), embed(a, "a"), embed(v, "v"), embed(m, "m")
    p = g("plus_p")
    lt, lv = t.shape[1], v.shape[1]
    for i in range(layers):
        if i == 0:
            m = torch.cat([m[:, :n_m], t, v, a], dim=1)
        else:
            parts = [m[:, :n_m],
                     p[0] * m[:, n_m:n_m + lt] + p[1] * t,
                     p[2] * m[:, n_m + lt:n_m + lt + lv] + p[3] * v,
                     p[4] * m[:, n_m + lt + lv:] + p[5] * a]
            m = torch.cat(parts, dim=1)
        t = block(t, f"transformer_t.{i}.")
        a = block(a, f"transformer_a.{i}.")
        for j in range(vblocks):
            v = block(v, f"transformer_v.{vblocks * i + j}.")
        m = block(m, f"transformer_m.{i}.")
    pooled = {}
    for s, x in zip("tavm", (t, a, v, m)):
        pooled[s] = torch.einsum("l,bld->bd", g(f"mix_{s}"), ln(x, f"ln_post_{s}"))

    def head(x, n, count):
        for k in range(count):
            x = lin(x, f"{n}.{2 * k}")
            if k < count - 1:
                x = F.relu(x)
        return x

    fused = torch.cat([pooled["t"], pooled["a"], pooled["v"], pooled["m"]], dim=-1)
    return (head(pooled["t"], "mlp_t", 3), head(pooled["a"], "mlp_a", 3), head(pooled["v"], "mlp_v", 3),
            head(fused, "mlp_m", 4))


def inputs(batch=3, text_len=80, audio_len=50, seed=1, spec=SMALL):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, text_len, spec["t_in"], generator=gen),
            torch.randn(batch, audio_len, spec["a_in"], generator=gen),
            torch.randn(batch, spec["v_len"], spec["v_in"], generator=gen))


def small_config(**changes):
    base = AuthorsConfig(width=64, heads=4, text_in=64, audio_in=64, vision_in=128)
    return base.replace(**changes)


def save_authors(tmp_path: Path, state, name="authors.pth") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def imported_model(tmp_path: Path, state) -> AuthorsLFMIM:
    dst = import_authors_checkpoint(save_authors(tmp_path, state), tmp_path / "out" / "model.safetensors", heads=4)
    ckpt = load_checkpoint(dst)
    model = build_authors_model(ckpt.config)
    load_state_into(model, ckpt.state, source=str(dst))
    return model.eval()


# ---------------------------------------------------------------------------------------- (a) import


def test_imported_checkpoint_matches_functional_reference(tmp_path):
    state = authors_state()
    src = save_authors(tmp_path, state)
    dst = import_authors_checkpoint(src, tmp_path / "model.safetensors", heads=4)
    variant, config, meta = read_metadata(dst)
    assert variant == "authors"
    assert meta == {"source": str(src), "imported_from": "sunjunaimer/LFMIM LFMIM0723v2"}
    assert AuthorsConfig.from_dict(config) == small_config()
    ckpt = load_checkpoint(dst)
    assert set(ckpt.state) == set(reference_table(**SMALL))
    model = build_authors_model(ckpt.config)
    load_state_into(model, ckpt.state, source=str(dst))
    model.eval()
    # Longer text is cropped to 80 positions; shorter audio is zero-padded to 50 frames.
    for text_len, audio_len in ((80, 50), (93, 37), (85, 64)):
        x = inputs(text_len=text_len, audio_len=audio_len)
        with torch.no_grad():
            got = model(*x)
            want = reference_forward(state, *x, heads=4)
        assert len(got) == 4
        for g, w in zip(got, want):
            assert g.shape == (3, len(CLASSES))
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_padding_rows_detected_in_forward(tmp_path):
    """With ln_prepe_a's first weight and bias 0, every audio step's first feature is exactly 0 (padding)."""
    state = authors_state(seed=3)
    state["module.ln_prepe_a.weight"][0] = 0.0
    state["module.ln_prepe_a.bias"][0] = 0.0
    model = imported_model(tmp_path, state)
    x = inputs(seed=4)
    with torch.no_grad():
        for g, w in zip(model(*x), reference_forward(state, *x, heads=4)):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_keys_without_module_prefix_and_without_buffer(tmp_path):
    state = {k.removeprefix("module."): v for k, v in authors_state(buffer=False).items()}
    src = save_authors(tmp_path, state)
    dst = import_authors_checkpoint(src, tmp_path / "plain.safetensors", heads=4)
    assert set(load_checkpoint(dst).state) == set(reference_table(**SMALL))


def test_inferred_config_other_dimensions(tmp_path):
    spec = dict(SMALL, width=32, layers=2, vblocks=3, t_in=24, a_in=40, v_in=48, a_len=20, v_len=8, m=2)
    src = save_authors(tmp_path, authors_state(spec))
    dst = import_authors_checkpoint(src, tmp_path / "x.safetensors", heads=2)
    cfg = AuthorsConfig.from_dict(read_metadata(dst)[1])
    assert cfg == AuthorsConfig(width=32, heads=2, layers=2, vision_blocks_per_layer=3, text_in=24, audio_in=40,
                                vision_in=48, text_len=80, audio_len=20, vision_len=8, num_m_tokens=2)


def test_explicit_config_and_default_heads(tmp_path):
    src = save_authors(tmp_path, authors_state())
    dst = import_authors_checkpoint(src, tmp_path / "a.safetensors")
    assert AuthorsConfig.from_dict(read_metadata(dst)[1]) == small_config(heads=16)
    # A dictionary fixes the fields it names; the shapes give the rest (the CLI passes {"heads": N}).
    dst = import_authors_checkpoint(src, tmp_path / "b.safetensors", config={"heads": 8})
    assert AuthorsConfig.from_dict(read_metadata(dst)[1]) == small_config(heads=8)
    dst = import_authors_checkpoint(src, tmp_path / "c.safetensors", config=small_config(heads=2).to_dict())
    assert read_metadata(dst)[1]["heads"] == 2
    with pytest.raises(ConfigError, match="heads"):
        import_authors_checkpoint(src, tmp_path / "d.safetensors", config=small_config(), heads=2)
    with pytest.raises(ConfigError, match="unknown AuthorsConfig field"):
        import_authors_checkpoint(src, tmp_path / "e.safetensors", config={"depth": 2})


# ------------------------------------------------------------------------------------- (b) full size


def test_full_size_default_model_matches_reference_table():
    with torch.device("meta"):
        model = build_authors_model(AuthorsConfig().to_dict())
    got = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert got == reference_table(**FULL)
    assert got["transformer_t.0.attn.in_proj_weight"] == (3072, 1024)
    assert got["mix_m"] == (153,)
    assert got["mlp_m.0.weight"] == (2048, 4096)
    assert len([k for k in got if k.startswith("transformer_v.") and k.endswith("in_proj_weight")]) == 8


# ------------------------------------------------------------------------------------------ (c) errors


def test_missing_key(tmp_path):
    state = authors_state()
    del state["module.transformer_m.3.ln_22.bias"]
    src = save_authors(tmp_path, state, "missing.pth")
    want = r"missing\.pth.*expected transformer_m\.3\.ln_22\.bias \(64\), found nothing"
    with pytest.raises(CheckpointError, match=want):
        import_authors_checkpoint(src, tmp_path / "m.safetensors", heads=4)
    assert not (tmp_path / "m.safetensors").exists()


def test_wrong_shape(tmp_path):
    state = authors_state()
    state["module.transformer_t.0.attn.in_proj_weight"] = torch.zeros(192, 32)
    src = save_authors(tmp_path, state, "shape.pth")
    want = r"shape\.pth.*expected transformer_t\.0\.attn\.in_proj_weight \(192, 64\), found \(192, 32\)"
    with pytest.raises(CheckpointError, match=want):
        import_authors_checkpoint(src, tmp_path / "s.safetensors", heads=4)


def test_unexpected_key(tmp_path):
    state = authors_state()
    state["module.extra_head.weight"] = torch.zeros(3, 3)
    src = save_authors(tmp_path, state, "extra.pth")
    with pytest.raises(CheckpointError, match=r"extra\.pth.*unexpected extra_head\.weight \(3, 3\)"):
        import_authors_checkpoint(src, tmp_path / "e.safetensors", heads=4)


@pytest.mark.parametrize("as_dict", [False, True])
def test_shape_mismatch_against_explicit_config(tmp_path, as_dict):
    src = save_authors(tmp_path, authors_state(), "small.pth")
    config = AuthorsConfig().to_dict() if as_dict else AuthorsConfig()
    want = r"small\.pth.*expected transformer_t\.0\.attn\.in_proj_weight \(3072, 1024\), found \(192, 64\)"
    with pytest.raises(CheckpointError, match=want):
        import_authors_checkpoint(src, tmp_path / "f.safetensors", config=config)


def test_not_a_torch_file(tmp_path):
    src = tmp_path / "notes.pth"
    src.write_bytes(b"this is not a checkpoint\n" * 10)
    with pytest.raises(CheckpointError, match=r"notes\.pth.*not a PyTorch state-dict file"):
        import_authors_checkpoint(src, tmp_path / "n.safetensors")


class _Opaque:
    """An arbitrary object: loading it would need full unpickling."""

    def __init__(self) -> None:
        self.weights = torch.zeros(2)


def test_refuses_full_unpickling(tmp_path):
    src = tmp_path / "pickled.pth"
    torch.save({"module.obj": _Opaque()}, src)
    with pytest.raises(CheckpointError, match=r"pickled\.pth.*weights_only"):
        import_authors_checkpoint(src, tmp_path / "p.safetensors")


def test_nonexistent_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"nowhere\.pth.*not found"):
        import_authors_checkpoint(tmp_path / "nowhere.pth", tmp_path / "z.safetensors")


def test_cannot_infer_from_foreign_state_dict(tmp_path):
    src = save_authors(tmp_path, {"encoder.weight": torch.zeros(2, 2)}, "foreign.pth")
    with pytest.raises(CheckpointError, match=r"foreign\.pth.*fc_tdimtr\.weight is missing"):
        import_authors_checkpoint(src, tmp_path / "g.safetensors")


# ----------------------------------------------------------------------------------------- (d) padding


def test_pad_audio_crops_and_pads():
    audio = torch.randn(2, 30, 5)
    padded = pad_audio(audio, 50)
    assert padded.shape == (2, 50, 5)
    assert torch.equal(padded[:, :30], audio) and not padded[:, 30:].any()
    long = torch.randn(2, 70, 5)
    assert torch.equal(pad_audio(long, 50), long[:, :50])
    assert pad_audio(torch.randn(1, 50, 5)).shape == (1, 50, 5)


def test_short_audio_equals_explicitly_padded():
    torch.manual_seed(0)
    model = AuthorsLFMIM(small_config()).eval()
    text, audio, vision = inputs(audio_len=30)
    explicit = torch.cat([audio, torch.zeros(3, 20, 64)], dim=1)
    with torch.no_grad():
        for a, b in zip(model(text, audio, vision), model(text, explicit, vision)):
            assert torch.equal(a, b)


def test_sinusoidal_rows_layout():
    rows = sinusoidal_rows(5, 10)
    half = 5
    for pos in range(1, 6):
        for k in range(half):
            f = math.exp(-math.log(10000.0) * k / (half - 1))
            assert rows[pos - 1, k].item() == pytest.approx(math.sin(pos * f), abs=1e-6)
            assert rows[pos - 1, half + k].item() == pytest.approx(math.cos(pos * f), abs=1e-6)
    odd = sinusoidal_rows(3, 7)
    assert odd.shape == (3, 7) and not odd[:, -1].any()


def test_add_positions_masks_padding_without_renumbering():
    x = torch.randn(1, 5, 8)
    x[0, 1, 0] = 0.0
    x[0, 3, 0] = -0.0
    out = add_positions(x)
    rows = sinusoidal_rows(5, 8)
    for i in range(5):
        want = x[0, i] if i in (1, 3) else x[0, i] + rows[i]  # step i keeps position i + 1
        assert torch.equal(out[0, i], want)


# ------------------------------------------------------------------------------------ (e) train / eval


def test_eval_is_deterministic_and_train_uses_dropout():
    torch.manual_seed(0)
    model = AuthorsLFMIM(small_config())
    x = inputs(batch=2)
    model.eval()
    with torch.no_grad():
        first, second = model(*x), model(*x)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    model.train()
    with torch.no_grad():
        third, fourth = model(*x), model(*x)
    assert not torch.allclose(third[3], fourth[3])
    assert not torch.allclose(third[3], first[3])


def test_no_dropout_config_train_equals_eval():
    torch.manual_seed(0)
    model = AuthorsLFMIM(small_config(input_dropout=0.0, attn_dropout=0.0, mlp_dropout=0.0))
    x = inputs(batch=2)
    with torch.no_grad():
        train_out = model.train()(*x)
        eval_out = model.eval()(*x)
    for a, b in zip(train_out, eval_out):
        torch.testing.assert_close(a, b)


def test_backward_reaches_used_parameters():
    torch.manual_seed(0)
    model = AuthorsLFMIM(small_config(layers=2))
    sum(o.sum() for o in model(*inputs(batch=2))).backward()
    assert model.plus_p.grad is not None and model.plus_p.grad.abs().sum() > 0
    assert model.embedding_m.grad is not None
    assert model.proj_a.grad is None and model.t2m[0].weight.grad is None  # unused, as in the authors' code


# ---------------------------------------------------------------------------------------------- config


def test_config_round_trip_and_validation():
    cfg = small_config()
    assert AuthorsConfig.from_dict(cfg.to_dict()) == cfg
    assert AuthorsConfig().classes == CLASSES
    assert AuthorsConfig().multimodal_seq == 153
    with pytest.raises(ConfigError, match="multiple of heads"):
        AuthorsConfig(width=100, heads=16)
    with pytest.raises(ConfigError, match="unknown AuthorsConfig field"):
        AuthorsConfig.from_dict({"depth": 3})
    with pytest.raises(ConfigError, match="layers must be a positive integer"):
        AuthorsConfig.from_dict({"layers": 0})


def test_wrong_input_shapes_raise():
    model = AuthorsLFMIM(small_config(layers=1)).eval()
    text, audio, vision = inputs(batch=1)
    with pytest.raises(InputError, match="vision"):
        model(text, audio, vision[:, :10])
    with pytest.raises(InputError, match="audio"):
        model(text, audio[..., :10], vision)


def test_imported_checkpoint_runs_through_the_cli_evaluation(tmp_path, capsys):
    """A model trained with the public code is deployable: import with the CLI, evaluate on a matching store."""
    from edge.cli import eval as eval_cli
    from edge.cli import import_authors as import_cli
    from edge.config import ModalitySpec
    from edge.train.store_writer import FeatureStoreWriter

    src = save_authors(tmp_path, authors_state())
    dst = tmp_path / "imported.safetensors"
    assert import_cli.main([str(src), str(dst), "--heads", "4", "-q"]) == 0
    assert '"variant": "authors"' in capsys.readouterr().out
    specs = {"text": ModalitySpec(SMALL["t_in"], SMALL["t_len"]), "audio": ModalitySpec(SMALL["a_in"], SMALL["a_len"]),
             "vision": ModalitySpec(SMALL["v_in"], SMALL["v_len"])}
    rng = torch.Generator().manual_seed(0)
    with FeatureStoreWriter(tmp_path / "store", specs, dtype="float32") as writer:
        for i in range(12):
            feats = [torch.randn(s.length, s.dim, generator=rng).numpy() for s in specs.values()]
            writer.add("test", f"s{i}", *feats, [i % 7, (i + 1) % 7, i % 7, i % 7])
    assert eval_cli.main(["--checkpoint", str(dst), "--store", str(tmp_path / "store"), "--no-progress", "-q"]) == 0
    assert "multimodal" in capsys.readouterr().out
    assert (tmp_path / "eval-test" / "report.json").is_file()
    assert import_cli.main([str(tmp_path / "missing.pth"), str(dst)]) == 2
    assert "missing.pth" in capsys.readouterr().err
