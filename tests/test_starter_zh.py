"""starter-zh, the Chinese profile: transcript clean-up, the character tokenizer's layout, the character BERT's ONNX
parity, the shipped assets, the profile's build and its live loop with a Chinese transcript, and the trained
model's figures on EmotionTalk val (where ../shared/data is present)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.assets import asset_manifest, asset_path
from edge.fileio import sha256_file
from edge.errors import ConfigError, DataError
from edge.features.text_pre import SpecialIds, encode_texts
from edge.labels import CLASSES
from edge.profile import load_profile, parse_profile, profile_hash
from edge.starter.zh_text import (
    SPECIALS, ZH_TEXT_LENGTH, build_char_tokenizer, char_vocabulary, clean_transcript, load_char_tokenizer,
    strip_punctuation,
)

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "edge" / "assets" / "starter-zh"
needs_assets = pytest.mark.skipif(not (ASSETS / "assets.json").is_file(),
                                  reason="edge/assets/starter-zh/ is not packaged yet; run scripts/make_starter_zh.py")
needs_tools = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or importlib.util.find_spec("facenet_pytorch") is None,
    reason="the starter-zh build needs ffmpeg (apt-get install ffmpeg) and MTCNN's weights "
           "(pip install --no-deps facenet-pytorch==2.6.0)")


# ------------------------------------------------------------------------------------------------- transcripts


def test_markup_goes_and_the_words_of_overlapping_speech_stay():
    assert clean_transcript("[over/]还给他点[/over]饭。") == "还给他点饭。"
    assert clean_transcript("挺[interrupted][/over]。") == "挺。"
    assert clean_transcript("[laughing]好啊[Sobbing] [crying]") == "好啊"
    # malformed tags in the source keep their words and lose the tag
    assert clean_transcript("[over/我敲您]好") == "我敲您好"
    assert clean_transcript("[over[/over]你[/over/]呢[[/over]") == "你呢"
    assert strip_punctuation("真的吗？！太好了，OK。") == "真的吗太好了OK"


# --------------------------------------------------------------------------------------------------- tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer(char_vocabulary(["你好，世界！", "你好吗？", "好的 OK", "世界很大。"], min_count=1))


def test_vocabulary_specials_first_then_characters_by_frequency():
    vocab = char_vocabulary(["你好你", "好你", "吗"], min_count=2)
    assert vocab == [*SPECIALS, "你", "好"]  # 吗 seen once: [UNK]
    with pytest.raises(DataError, match="no character occurs 5 times"):
        char_vocabulary(["你好"], min_count=5)
    with pytest.raises(DataError, match="must start with"):
        build_char_tokenizer(["你", *SPECIALS])


def test_the_tokenizer_gives_one_id_per_character_in_the_run_paths_layout(tokenizer, tmp_path):
    special = SpecialIds.from_tokenizer(tokenizer)
    assert (special.pad, special.cls, special.sep) == (0, 2, 3)
    ids = tokenizer.encode("你好 世界", add_special_tokens=False).ids
    assert [tokenizer.id_to_token(i) for i in ids] == ["你", "好", "世", "界"]  # whitespace dropped
    # full-width forms as a recogniser may write them become the ASCII ones (NFKC), letters are lower-cased
    assert tokenizer.encode("ＯＫ！", add_special_tokens=False).ids == tokenizer.encode("ok!", add_special_tokens=False).ids
    assert tokenizer.encode("猫", add_special_tokens=False).tokens == ["[UNK]"]
    assert tokenizer.encode("你好").tokens == ["[CLS]", "你", "好", "[SEP]"]
    feeds = encode_texts(tokenizer, ["你好吗？", "", "你" * 100], length=8)
    cls, sep = special.cls, special.sep
    assert feeds["input_ids"][0].tolist() == [cls, *tokenizer.encode("你好吗？", add_special_tokens=False).ids, sep, 0, 0]
    assert feeds["attention_mask"][0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert feeds["input_ids"][1].tolist() == [cls, sep, 0, 0, 0, 0, 0, 0]
    assert feeds["input_ids"][2, -1] == sep and feeds["attention_mask"][2].all()  # cut before [SEP], never after
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    again = load_char_tokenizer(path)
    assert again.encode("世界很大。").ids == tokenizer.encode("世界很大。").ids
    assert again.padding is None and again.truncation is None


@needs_assets
def test_the_shipped_tokenizer_fits_the_shipped_encoder():
    onnx = pytest.importorskip("onnx")
    tok = load_char_tokenizer(asset_path("asset:starter-zh/tokenizer.json"))
    assert [tok.id_to_token(i) for i in range(len(SPECIALS))] == list(SPECIALS)
    assert tok.padding is None and tok.truncation is None
    graph = onnx.load(str(asset_path("asset:starter-zh/text.fp32.onnx"))).graph
    rows = [tuple(i.dims) for i in graph.initializer if i.name.endswith("word_embeddings.weight")]
    assert rows and rows[0][0] == tok.get_vocab_size()
    ids = tok.encode("我真的很生气！", add_special_tokens=False).ids
    assert len(ids) == 7 and SPECIALS.index("[UNK]") not in ids  # common characters are in the vocabulary


# ------------------------------------------------------------------------------------------------ the encoder


def test_masking_chooses_real_characters_only():
    torch = pytest.importorskip("torch")
    from edge.starter.zh_model import mask_tokens

    ids = torch.randint(5, 50, (64, 32))
    ids[:, 0], ids[:, 20] = 2, 3
    mask = torch.ones_like(ids)
    mask[:, 21:] = 0
    ids[:, 21:] = 0
    inputs, labels = mask_tokens(ids, mask, vocab_size=50, generator=torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, 20:].any()
    assert 0.10 < chosen[:, 1:20].float().mean() < 0.20
    assert torch.equal(labels[chosen], ids[chosen])
    assert (inputs[chosen] == SPECIALS.index("[MASK]")).float().mean() > 0.6
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_the_character_bert_exports_to_onnx_within_parity(tokenizer, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from edge.build.export import export_text_encoder
    from edge.runtime.onnxruntime_runner import OrtRunner
    from edge.starter.zh_model import CharBertConfig, char_bert

    torch.manual_seed(0)
    config = CharBertConfig(vocab_size=tokenizer.get_vocab_size(), hidden=32, layers=2, heads=2, ff=64, tokens=16)
    bert = char_bert(config).eval()
    report = export_text_encoder(bert, tmp_path / "text.onnx", length=16)
    assert report.max_abs_diff <= 1e-4 and report.output_shapes["hidden"][1:] == (16, 32)
    feeds = encode_texts(tokenizer, ["你好，世界！", "好的"], length=16)
    with OrtRunner(tmp_path / "text.onnx", threads=1) as runner:
        got = runner.infer(feeds)["hidden"]
    with torch.inference_mode():
        want = bert(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
    real = feeds["attention_mask"].astype(bool)
    assert np.abs(got[real] - want[real]).max() <= 1e-4


# ---------------------------------------------------------------------------------------------------- profile


def test_the_profile_names_chinese_and_reuses_the_starters_vision_and_log_mel_audio_encoder():
    import dataclasses

    p = load_profile("starter-zh")
    s = load_profile("starter")
    assert p.language == "zh" and p.to_dict()["language"] == "zh"
    assert (p.text.encoder, p.text.tokens, p.text.dim) == ("char-bert", ZH_TEXT_LENGTH, 128)
    assert (p.vision, p.stream) == (s.vision, s.stream)
    # LFMIM-zh was trained on the log-mel CNN's frames (the starter's audio encoder until the Whisper front)
    assert (p.audio.encoder, p.audio.weights) == ("logmel-cnn", "asset:starter/audio.fp32.onnx")
    assert dataclasses.replace(p.audio, encoder=s.audio.encoder, weights=s.audio.weights) == s.audio
    assert p.lfmim.text.length == ZH_TEXT_LENGTH and p.lfmim.classes == CLASSES
    assert p.prequantized == "asset:starter" and s.language == "" and "language" not in s.to_dict()
    assert profile_hash(p) != profile_hash(s)


def test_a_bad_language_is_one_clear_error():
    with pytest.raises(ConfigError, match="language must be a language code"):
        parse_profile({"name": "x", "language": "Chinese"}, source="x.toml")
    assert parse_profile({"name": "x", "language": "yue"}, source="x.toml").language == "yue"


@needs_assets
def test_the_assets_are_what_assets_json_records_within_the_budget():
    record = asset_manifest("starter-zh")
    for name in ("text.fp32.onnx", "tokenizer.json", "lfmim.safetensors", "lfmim.json"):
        entry = record["files"][name]
        assert sha256_file(ASSETS / name) == entry["sha256"] and entry["made_by"], name
    everything = sum(p.stat().st_size for p in ASSETS.parent.glob("*/*") if p.is_file() and p.suffix != ".py")
    assert everything <= 60 * 2**20
    text = (ASSETS / "assets.json").read_text() + (ASSETS / "lfmim.json").read_text()
    assert "/work/" not in text and "/home/" not in text and "/tmp/" not in text, "no path of the packaging machine"
    p = load_profile("starter-zh")
    for ref in (p.text.weights, p.audio.weights, p.vision.weights, p.checkpoint):
        assert asset_path(ref).is_file()
    # LFMIM-zh was trained on the features of the very encoders the profile runs (a new starter face encoder means
    # re-running scripts/make_starter_zh.py)
    used = record["encoders_used_for_the_composite_set"]
    assert used["vision"]["sha256"] == sha256_file(asset_path(p.vision.weights))
    assert used["audio"]["sha256"] == sha256_file(asset_path(p.audio.weights))


# ------------------------------------------------------------------------------------------ build and live loop


@pytest.fixture(scope="module")
def zh_build(tmp_path_factory) -> Path:
    from edge.build.builder import BuildOptions, build

    out = tmp_path_factory.mktemp("starter-zh-engines")
    return build(BuildOptions(profile="starter-zh", precision="fp32", target="cpu", out_root=str(out),
                              progress=False, threads=1)).parent


@needs_assets
@needs_tools
@pytest.mark.slow
def test_the_fp32_build_copies_the_shipped_encoder_and_its_tokenizer(zh_build):
    manifest = json.loads((zh_build / "manifest.json").read_text())
    text = manifest["networks"]["text"]
    assert text["source"] == "asset:starter-zh/text.fp32.onnx"
    assert text["onnx"]["sha256"] == asset_manifest("starter-zh")["files"]["text.fp32.onnx"]["sha256"]
    assert manifest["networks"]["audio"]["source"] == "asset:starter/audio.fp32.onnx"
    shipped = load_char_tokenizer(ASSETS / "tokenizer.json")
    built = load_char_tokenizer(zh_build / "tokenizer" / "tokenizer.json")
    assert built.get_vocab() == shipped.get_vocab()


class FixedChinese:
    """Stands in for Mandarin speech recognition (Whisper with language "zh" is another module's, tested there):
    a real :class:`~edge.stream.asr.SpeechRecognizer` that returns one fixed Chinese sentence for every speech
    segment, so that this test exercises the Chinese text path of the live loop, not the recogniser."""

    TEXT = "你怎么又迟到了？我真的受够了！"

    def __new__(cls):
        from edge.stream.asr import SpeechRecognizer, Transcript

        class _Fixed(SpeechRecognizer):
            name = "fixed-zh"
            calls = 0

            def transcribe(self, samples16k):
                type(self).calls += 1
                return Transcript(cls.TEXT, duration=len(samples16k) / 16000)

        return _Fixed()


@needs_assets
@needs_tools
@pytest.mark.slow
@pytest.mark.data
def test_the_live_loop_carries_a_chinese_transcript_to_the_text_head(zh_build, shared_data):
    from edge.confidence import softmax
    from edge.features.extractors import Extractors
    from edge.runtime.engines import open_engines
    from edge.stream.config import RunConfig
    from edge.stream.recognizer import Recognizer

    clip = str(shared_data / "crema-d-samples" / "1001_DFA_ANG_XX.mp4")  # a face and speech; its words are replaced
    config = RunConfig(profile="starter-zh", engines=str(zh_build), video=clip, speed="max", threads=1,
                       smoothing="none")
    asr = FixedChinese()
    with open_engines("starter-zh", directory=zh_build) as engines:
        recognizer = Recognizer(config, engines=engines, asr=asr)
        got = []
        recognizer.on_estimate(got.append)
        recognizer.start()
        assert recognizer.wait(120), "a 2 s clip at full speed must finish"
        recognizer.stop()
        assert asr.calls >= 1 and got
        with_text = [e for e in got if e.available["text"]]
        assert with_text, "the transcript must reach the text branch"
        assert all(FixedChinese.TEXT in (e.transcript or "") for e in with_text)
        # the text head reads the text alone: the loop's text probabilities are those of the sentence's features
        ex = Extractors(engines)
        text = ex.text([FixedChinese.TEXT])
        zeros = {m: np.zeros((1, s.length, s.dim), np.float32) for m, s in
                 (("audio", engines.profile.lfmim.audio), ("vision", engines.profile.lfmim.vision))}
        want = softmax(engines.runners["lfmim"].infer({"text": text.astype(np.float32), **zeros})["t"][0])
        for e in with_text:
            assert np.allclose(e.probs["text"], want, atol=1e-5)
            assert abs(sum(e.probs["fused"]) - 1) < 1e-4


# ------------------------------------------------------------------------------------------- trained figures


@needs_assets
@needs_tools
@pytest.mark.slow
@pytest.mark.data
def test_lfmims_text_head_on_emotiontalk_val_through_the_run_path_is_the_recorded_figure(zh_build, shared_data):
    from edge.features.extractors import Extractors
    from edge.runtime.engines import open_engines
    from edge.starter.composite import read_emotiontalk
    from edge.train.metrics import classification_metrics

    rows = read_emotiontalk(shared_data / "emotiontalk" / "emotiontalk.csv")["val"]
    texts = [clean_transcript(r.text) for r in rows]
    labels = np.array([r.labels[0] for r in rows])
    with open_engines("starter-zh", directory=zh_build) as engines:
        ex = Extractors(engines)
        spec = engines.profile.lfmim
        preds = []
        for i in range(0, len(texts), 64):
            text = ex.text(texts[i:i + 64]).astype(np.float32)
            zeros = {m: np.zeros((len(text), s.length, s.dim), np.float32) for m, s in
                     (("audio", spec.audio), ("vision", spec.vision))}
            preds.append(engines.runners["lfmim"].infer({"text": text, **zeros})["t"].argmax(1))
    overall = classification_metrics(labels, np.concatenate(preds), CLASSES)["overall"]
    majority = classification_metrics(labels, np.full_like(labels, CLASSES.index("neutral")), CLASSES)["overall"]
    recorded = asset_manifest("starter-zh")["figures"]["lfmim_test"]["t"]
    # the target is 0.55; the shipped model reaches 0.42 (missed: see the model card). This guards what it
    # does reach, far above the majority class (0.23)
    assert overall["weighted_f1"] >= 0.40, overall
    assert overall["weighted_f1"] > majority["weighted_f1"] + 0.15
    assert abs(overall["weighted_f1"] - recorded["weighted_f1"]) < 0.01, "the model card's figure is the shipped one's"


@needs_assets
def test_the_chain_can_reuse_the_shipped_text_encoder(tmp_path):
    """make_starter_zh.py --text-from-assets: new starter encoders, the same text encoder and its recorded figures."""
    spec = importlib.util.spec_from_file_location("make_starter_zh", ROOT / "scripts" / "make_starter_zh.py")
    chain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chain)
    shipped, command = chain.reuse_shipped_text(tmp_path / "text")
    assert sha256_file(tmp_path / "text" / "text_encoder.onnx") == sha256_file(ASSETS / "text.fp32.onnx")
    assert sha256_file(tmp_path / "text" / "tokenizer.json") == sha256_file(ASSETS / "tokenizer.json")
    assert command == asset_manifest("starter-zh")["commands"]["text"]
    figures = chain.figures(tmp_path, shipped)  # no train.json under tmp_path: the shipped record is used
    assert figures["text_encoder"] == asset_manifest("starter-zh")["figures"]["text_encoder"]
