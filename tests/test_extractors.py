"""The three feature extractors: tiny random-initialised configs of the real architectures, saved and loaded through
the real loading code, exported to ONNX and checked against PyTorch; ResNet18 against torchvision's layout."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
F = torch.nn.functional

from edge.build.export import ParityError, export_audio_encoder, export_onnx, export_resnet18, export_text_encoder  # noqa: E402
from edge.errors import CheckpointError, InputError  # noqa: E402
from edge.features.audio_pre import num_frames  # noqa: E402
from edge.features.resnet import ResNet18Features, load_resnet18  # noqa: E402
from edge.features.text_pre import encode_texts  # noqa: E402

# ---------------------------------------------------------------------------------------------------- ResNet18


def torchvision_resnet18_keys(num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of torchvision.models.resnet18, written out from its documented architecture."""
    keys: dict[str, tuple[int, ...]] = {}

    def bn(prefix, c):
        keys.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                     f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})

    keys["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            keys[f"{p}.conv1.weight"] = (cout, cin if block == 0 else cout, 3, 3)
            bn(f"{p}.bn1", cout)
            keys[f"{p}.conv2.weight"] = (cout, cout, 3, 3)
            bn(f"{p}.bn2", cout)
            if block == 0 and stage > 1:
                keys[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                bn(f"{p}.downsample.1", cout)
        cin = cout
    keys["fc.weight"] = (num_classes, 512)
    keys["fc.bias"] = (num_classes,)
    return keys


def random_state(num_classes: int = 7, seed: int = 0) -> dict[str, "torch.Tensor"]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in torchvision_resnet18_keys(num_classes).items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(100)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=gen) + 0.5
        elif name.endswith(".weight") and len(shape) == 4:
            state[name] = torch.randn(shape, generator=gen) * (2.0 / (shape[1] * shape[2] * shape[3])) ** 0.5
        else:
            state[name] = torch.randn(shape, generator=gen) * 0.1 + (1.0 if name.endswith("bn1.weight") else 0.0)
    return state


def functional_resnet18(x, s):
    """Reference forward pass with torch.nn.functional only, straight from the state dict."""
    def bn(x, p):
        return F.batch_norm(x, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"],
                            training=False, eps=1e-5)

    x = F.relu(bn(F.conv2d(x, s["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for stage in range(1, 5):
        for block in range(2):
            p = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            out = F.relu(bn(F.conv2d(x, s[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
            out = bn(F.conv2d(out, s[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
            if f"{p}.downsample.0.weight" in s:
                x = bn(F.conv2d(x, s[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            x = F.relu(out + x)
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def test_resnet18_has_torchvision_names_and_shapes():
    ours = {k: tuple(v.shape) for k, v in ResNet18Features(1000).state_dict().items()}
    assert ours == torchvision_resnet18_keys(1000)
    assert "fc.weight" not in ResNet18Features(None).state_dict()


@pytest.mark.parametrize("fmt", ["pth-wrapped-module", "pth", "safetensors"])
def test_resnet18_loads_torchvision_state_and_matches_functional_reference(tmp_path, fmt):
    state = random_state(num_classes=7)
    if fmt == "pth-wrapped-module":
        path = tmp_path / "raf.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    elif fmt == "pth":
        path = tmp_path / "raf.pth"
        torch.save(state, path)
    else:
        safetensors = pytest.importorskip("safetensors.torch")
        path = tmp_path / "raf.safetensors"
        safetensors.save_file(state, str(path))
    model = load_resnet18(path)
    assert model.fc.out_features == 7 and not model.training
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(x)
        ref = functional_resnet18(x, state)
    assert got.shape == (2, 512)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.logits(x), F.linear(ref, state["fc.weight"], state["fc.bias"]),
                               rtol=1e-5, atol=1e-5)


def test_resnet18_key_errors_are_named(tmp_path):
    state = random_state()
    del state["layer4.1.bn2.weight"]
    state["head.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(InputError, match=r"missing keys \(1\): layer4.1.bn2.weight.*unexpected keys \(1\): head.weight"):
        load_resnet18(path)
    torch.save(random_state(num_classes=7), path)
    with pytest.raises(CheckpointError, match=r"wrong shapes: fc.bias \(7,\) != \(1000,\), fc.weight \(7, 512\) != \(1000, 512\)"):
        load_resnet18(path, num_classes=1000)


def test_resnet18_file_errors(tmp_path):
    with pytest.raises(InputError, match="weights not found"):
        load_resnet18(tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read a state dict"):
        load_resnet18(junk)


def test_resnet18_random_init_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="edge"):
        model = load_resnet18(None)
    assert "random weights" in caplog.text and "meaningless" in caplog.text
    assert model.fc.out_features == 1000


def _ort(path):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_resnet18_export_parity_and_dynamic_batch(tmp_path):
    model = load_resnet18(None)
    report = export_resnet18(model, tmp_path / "resnet18.onnx", batch=1)
    assert report.input_shapes == {"faces": ("batch", 3, 224, 224)}
    assert report.output_shapes == {"features": ("batch", 512)}
    assert report.batches == (1, 3) and report.max_abs_diff < report.atol == 1e-4
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    (out,) = _ort(report.path).run(None, {"faces": x})
    assert out.shape == (4, 512)
    with torch.no_grad():
        np.testing.assert_allclose(out, model(torch.from_numpy(x)).numpy(), atol=1e-4)


# ---------------------------------------------------------------------------------------------------- BERT

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "我", "很", "高", "兴", "你", "好", "难", "过", "生", "气",
         "hello", "world", "##s", "。", "，"]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("tiny-bert")
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    transformers.BertTokenizerFast.from_pretrained(str(d)).save_pretrained(str(d))
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=37, max_position_embeddings=128)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(str(d))
    return d


def test_text_encoder_loads_tokenises_and_exports(tiny_bert_dir, tmp_path):
    from edge.features.text import TextEncoder, load_text_encoder

    bundle = load_text_encoder(tiny_bert_dir)
    assert bundle.hidden_size == 32 and not bundle.model.training
    feeds = encode_texts(bundle.tokenizer, ["我很高兴", "你好，hello worlds。", "生气"])
    report = export_text_encoder(bundle.model, tmp_path / "bert.onnx", batch=2)
    assert report.output_shapes == {"hidden": ("batch", 80, 32)}
    assert all(shape == ("batch", 80) for shape in report.input_shapes.values())
    assert report.batches == (2, 5) and report.max_abs_diff < 1e-4
    (out,) = _ort(report.path).run(["hidden"], feeds)  # real token ids, a third batch size
    assert out.shape == (3, 80, 32)
    with torch.no_grad():
        ref = TextEncoder(bundle.model)(*(torch.from_numpy(feeds[k]) for k in
                                          ("input_ids", "attention_mask", "token_type_ids")))
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-4)


def test_text_encoder_errors(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from edge.features.text import load_text_encoder

    with pytest.raises(InputError, match="no model directory at"):
        load_text_encoder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is not a transformers model directory"):
        load_text_encoder(tmp_path / "empty")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="hub is unreachable.*pass the local directory"):
        load_text_encoder("bert-base-chinese")


# ---------------------------------------------------------------------------------------------------- wav2vec2


@pytest.fixture(scope="module")
def tiny_wav2vec2_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("tiny-wav2vec2")
    config = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=37, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                                         num_conv_pos_embedding_groups=2, vocab_size=8)
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(config).save_pretrained(str(d))
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=16_000).save_pretrained(str(d))
    return d


def test_audio_encoder_loads_and_exports(tiny_wav2vec2_dir, tmp_path):
    from edge.features.audio import load_audio_encoder

    bundle = load_audio_encoder(tiny_wav2vec2_dir)
    assert bundle.do_normalize is True and bundle.sampling_rate == 16_000 and bundle.hidden_size == 32
    samples = 16_000  # a 1 s window keeps the test fast; the paper profile exports 4 s
    report = export_audio_encoder(bundle.model, tmp_path / "wav2vec2.onnx", samples=samples, batch=1)
    frames = num_frames(samples)
    assert frames == 49  # 20 ms hop, 25 ms receptive field
    assert report.input_shapes == {"waveform": ("batch", samples)}
    assert report.output_shapes == {"hidden": ("batch", frames, 32)}
    assert report.batches == (1, 3) and report.max_abs_diff < 1e-4
    x = np.random.default_rng(0).standard_normal((2, samples)).astype(np.float32)
    (out,) = _ort(report.path).run(None, {"waveform": x})
    assert out.shape == (2, frames, 32)


def test_audio_encoder_without_preprocessor_config_guesses(tiny_wav2vec2_dir, tmp_path, caplog):
    import shutil

    from edge.features.audio import load_audio_encoder

    d = tmp_path / "no-fe"
    shutil.copytree(tiny_wav2vec2_dir, d)
    (d / "preprocessor_config.json").unlink()
    with caplog.at_level(logging.WARNING, logger="edge"):
        bundle = load_audio_encoder(d)
    assert bundle.do_normalize is False and "assuming do_normalize=False" in caplog.text  # group-norm base model


def test_audio_encoder_errors(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from edge.features.audio import load_audio_encoder

    with pytest.raises(InputError, match="audio encoder: no model directory at"):
        load_audio_encoder(tmp_path / "missing")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="could not load 'TencentGameMate/chinese-wav2vec2-base'.*hub is unreachable"):
        load_audio_encoder("TencentGameMate/chinese-wav2vec2-base")


# ---------------------------------------------------------------------------------------------------- export errors


class Drifting(torch.nn.Module):
    """Traces to a constant that eager mode no longer uses: a broken export that parity must catch."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * 2 + float(self.calls)


def _linear_export(module, path, **kwargs):
    return export_onnx(module, [torch.randn(2, 4)], path, input_names=["x"], output_names=["y"],
                       dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, **kwargs)


def test_parity_failure_names_network_diff_and_tolerance(tmp_path):
    path = tmp_path / "drift.onnx"
    with pytest.raises(ParityError, match=r"drifting: .*output 'y' at batch 2: max abs diff [\d.e+-]+ exceeds "
                                          r"the tolerance atol=0.0001"):
        _linear_export(Drifting(), path, name="drifting")
    assert not path.exists()  # a file that failed its check is never left in place


def test_too_tight_tolerance_raises(tmp_path):
    model = load_resnet18(None)
    x = torch.randn(1, 3, 224, 224)
    with pytest.raises(ParityError, match=r"resnet18: .*max abs diff .* atol=0 \+ rtol=0"):
        export_onnx(model, [x], tmp_path / "r.onnx", input_names=["faces"], output_names=["features"],
                    dynamic_axes={"faces": {0: "batch"}, "features": {0: "batch"}}, atol=0.0, rtol=0.0,
                    name="resnet18")


def test_export_argument_errors(tmp_path):
    lin = torch.nn.Linear(4, 3)
    with pytest.raises(InputError, match="dynamic_axes names unknown tensors"):
        export_onnx(lin, [torch.randn(2, 4)], tmp_path / "l.onnx", input_names=["x"], output_names=["y"],
                    dynamic_axes={"z": {0: "batch"}})
    with pytest.raises(InputError, match="2 input names"):
        export_onnx(lin, [torch.randn(2, 4)], tmp_path / "l.onnx", input_names=["x", "w"], output_names=["y"],
                    dynamic_axes={})
    report = _linear_export(lin, tmp_path / "l.onnx")
    assert report.atol == 1e-4 and report.input_shapes == {"x": ("batch", 4)}
    assert report.to_dict()["batches"] == [2, 5]
