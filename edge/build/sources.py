"""Where each network of a build comes from: the profile's weights (or random ones), exported to FP32 ONNX.

Networks of a build, in order: the three MTCNN stages (``pnet``, ``rnet``, ``onet``), the face encoder
(``resnet18``), the text encoder (``text``), the audio encoder (``audio``) and the fusion model (``lfmim``).
Each export checks parity with PyTorch (see :mod:`edge.build.export`).

``random_weights=True`` builds the same architectures with random weights for a build whose mechanics and cost
matter but whose outputs do not (no internet, no weights yet): text and audio encoders of the profile's width
(BERT-base / wav2vec2-base for 768), a character-level Chinese + ASCII tokenizer of bert-base-chinese's size,
a random ResNet18, and MTCNN from facenet-pytorch's weights when installed (random otherwise).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.prepare.shipped import copy_onnx
from edge.profile import Profile

log = logging.getLogger("edge")

MTCNN_NETS = ("pnet", "rnet", "onet")
NETWORKS = (*MTCNN_NETS, "resnet18", "text", "audio", "lfmim")
TOKENIZER_DIR = "tokenizer"
#: Random LFMIM heads are scaled by this, so that the fidelity gate's top-1 agreement measures quantization error
#: rather than coin flips between near-tied random logits.
RANDOM_HEAD_GAIN = 8.0


def _arch(dim: int) -> dict[str, int]:
    """Transformer sizes for random weights: the base architecture at 768, a small one otherwise."""
    if dim == 768:
        return {"layers": 12, "heads": 12, "ff": 3072}
    heads = max(1, dim // 16) if dim % 16 == 0 else 1
    return {"layers": 2, "heads": heads, "ff": 4 * dim}


def random_tokenizer(out_dir: Path) -> Any:
    """A character-level BERT WordPiece tokenizer: specials, ASCII (word-initial and ``##`` continuation) and the
    CJK Unified Ideographs block."""
    transformers = lazy_import("transformers", purpose="building a tokenizer")
    out_dir.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ascii_chars = [chr(c) for c in range(33, 127)]
    chars = ascii_chars + ["##" + c for c in ascii_chars] + [chr(c) for c in range(0x4E00, 0x9FA6)]
    vocab = {token: i for i, token in enumerate(specials + chars)}
    return transformers.BertTokenizerFast(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True)


def _text(profile: Profile, out: Path, random_weights: bool):
    from edge.build.export import export_text_encoder

    if _is_onnx(profile.text.weights):
        return _copied_text(profile, out)
    if random_weights:
        transformers = lazy_import("transformers", purpose="the BERT text encoder")
        tokenizer = random_tokenizer(out / TOKENIZER_DIR)
        a = _arch(profile.text.dim)
        config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=profile.text.dim,
                                         num_hidden_layers=a["layers"], num_attention_heads=a["heads"],
                                         intermediate_size=a["ff"], max_position_embeddings=max(512, profile.text.tokens))
        torch = lazy_import("torch")
        torch.manual_seed(0)
        model = transformers.BertModel(config, add_pooling_layer=False).eval()
        source = f"random BERT ({a['layers']} layers, {profile.text.dim} wide)"
    else:
        from edge.assets import is_package_model, package_model_dir
        from edge.features.text import load_text_encoder

        if not profile.text.weights:
            raise InputError(f"profile {profile.name!r}: [text] weights is empty; set it to a local directory or "
                             "hub id, or build with --random-weights")
        weights = profile.text.weights
        bundle = load_text_encoder(package_model_dir(weights) if is_package_model(weights) else weights)
        model, tokenizer, source = bundle.model, bundle.tokenizer, weights
    tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    tokenizer_json = out / TOKENIZER_DIR / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise InputError(f"the tokenizer of {source} has no fast (tokenizer.json) form, which the run path needs; "
                         "use a model with a fast tokenizer")
    # the run path lays out [CLS] ... [SEP] [PAD] itself; a saved tokenizer that pads or truncates on its own (some
    # packaged ones pad every text to 128 ids) would feed its pads in as words
    run_tokenizer = lazy_import("tokenizers", purpose="the run path's tokenizer").Tokenizer.from_file(str(tokenizer_json))
    run_tokenizer.no_padding()
    run_tokenizer.no_truncation()
    run_tokenizer.save(str(tokenizer_json))
    report = export_text_encoder(model, out / "text.fp32.onnx", length=profile.text.tokens)
    return report, {"source": source, "tokenizer": TOKENIZER_DIR}


def _copied_text(profile: Profile, out: Path):
    """A text encoder shipped as ONNX (starter-zh's character BERT): the file, checked and copied, and the
    ``tokenizer.json`` beside it (same folder, ``asset:`` or path), saved without padding or truncation."""
    t = profile.text
    report = copy_onnx(t.weights, out / "text.fp32.onnx", name="text encoder",
                       inputs={n: ("batch", t.tokens) for n in ("input_ids", "attention_mask", "token_type_ids")},
                       outputs={"hidden": ("batch", t.tokens, t.dim)})
    folder, _, _ = str(t.weights).rpartition("/")
    ref = f"{folder}/tokenizer.json" if folder else "tokenizer.json"
    from edge.assets import resolve

    source = Path(resolve(ref))
    if not source.is_file():
        raise InputError(f"text encoder {t.weights!r}: no tokenizer.json beside it ({source}); an ONNX text encoder "
                         "ships with its tokenizer in the same folder")
    tokenizer = lazy_import("tokenizers", purpose="the run path's tokenizer").Tokenizer.from_file(str(source))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    (out / TOKENIZER_DIR).mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / TOKENIZER_DIR / "tokenizer.json"))
    return report, {"source": t.weights, "tokenizer": TOKENIZER_DIR}


def _audio(profile: Profile, out: Path, random_weights: bool):
    from edge.build.export import export_audio_encoder

    if _is_onnx(profile.audio.weights):
        a = profile.audio
        report = copy_onnx(profile.audio.weights, out / "audio.fp32.onnx", name="audio",
                           inputs={"waveform": ("batch", a.block_samples)}, outputs={"hidden": ("batch", None, a.dim)})
        # an ONNX encoder carries its own input normalisation (the starter's log-mel front end is in the graph)
        return report, {"source": profile.audio.weights, "do_normalize": False}
    if random_weights:
        transformers = lazy_import("transformers", purpose="the wav2vec2 audio encoder")
        a = _arch(profile.audio.dim)
        config = transformers.Wav2Vec2Config(hidden_size=profile.audio.dim, num_hidden_layers=a["layers"],
                                             num_attention_heads=a["heads"], intermediate_size=a["ff"])
        torch = lazy_import("torch")
        torch.manual_seed(0)
        model = transformers.Wav2Vec2Model(config).eval()
        do_normalize, source = True, f"random wav2vec2 ({a['layers']} layers, {profile.audio.dim} wide)"
    else:
        from edge.features.audio import load_audio_encoder

        if not profile.audio.weights:
            raise InputError(f"profile {profile.name!r}: [audio] weights is empty; set it to a local directory or "
                             "hub id, or build with --random-weights")
        bundle = load_audio_encoder(profile.audio.weights)
        model, do_normalize, source = bundle.model, bundle.do_normalize, bundle.source
    report = export_audio_encoder(model, out / "audio.fp32.onnx", samples=profile.audio.block_samples)
    return report, {"source": source, "do_normalize": bool(do_normalize)}


def _resnet(profile: Profile, out: Path, random_weights: bool):
    from edge.build.export import export_resnet18
    from edge.features.resnet import load_resnet18

    if _is_onnx(profile.vision.weights):
        v = profile.vision
        report = copy_onnx(v.weights, out / "resnet18.fp32.onnx", name="face encoder",
                           inputs={"faces": ("batch", 3, v.face_size, v.face_size)}, outputs={"features": ("batch", v.dim)})
        return report, {"source": v.weights}
    weights = None if random_weights else (profile.vision.weights or None)
    model = load_resnet18(weights).eval()
    report = export_resnet18(model, out / "resnet18.fp32.onnx")
    return report, {"source": weights or "random ResNet18"}


def _lfmim(profile: Profile, out: Path, random_weights: bool):
    torch = lazy_import("torch", purpose="exporting LFMIM")
    from edge.build.export import export_onnx
    from edge.model.lfmim import LFMIM
    from edge.model.loading import input_specs, load_model

    if profile.checkpoint and not random_weights:
        from edge.assets import resolve

        model, ckpt = load_model(resolve(profile.checkpoint))
        specs = input_specs(ckpt.variant, ckpt.config)
        want = {"text": profile.lfmim.text, "audio": profile.lfmim.audio, "vision": profile.lfmim.vision}
        if specs != want:
            raise InputError(f"{profile.checkpoint}: the checkpoint expects features {specs}, but profile "
                             f"{profile.name!r} produces {want}; use a checkpoint trained on this profile's features")
        source = str(profile.checkpoint)
        calibration = ckpt.meta.get("calibration")  # per-head calibration (edge-eval --calibrate): the run path applies it
    else:
        torch.manual_seed(0)
        model, source, calibration = LFMIM(profile.lfmim).eval(), "random LFMIM", None
        with torch.no_grad():  # a trained model is confident; random heads give near ties that any noise flips,
            for head in (model.text.head, model.audio.head, model.vision.head, model.multi.head):
                head.mlp[-1].weight.mul_(RANDOM_HEAD_GAIN)  # so spread the logits like a trained model's
        specs = {"text": profile.lfmim.text, "audio": profile.lfmim.audio, "vision": profile.lfmim.vision}
    gen = torch.Generator().manual_seed(0)
    example = [torch.randn(2, s.length, s.dim, generator=gen) for s in specs.values()]
    names = ["text", "audio", "vision"]
    report = export_onnx(model, example, out / "lfmim.fp32.onnx", input_names=names, output_names=["t", "a", "v", "m"],
                         dynamic_axes={n: {0: "batch"} for n in [*names, "t", "a", "v", "m"]}, name="lfmim")
    return report, {"source": source, **({"calibration": calibration} if calibration else {})}


def _is_onnx(weights: str) -> bool:
    return str(weights).endswith(".onnx")


def _mtcnn(profile: Profile, out: Path, random_weights: bool):
    from edge.features.mtcnn_export import export_mtcnn
    from edge.features.mtcnn_nets import find_mtcnn_weights

    try:
        folder = find_mtcnn_weights(profile.vision.detector_weights or None)
    except InputError:
        if not random_weights:
            raise
        folder = _random_mtcnn_weights(out / "mtcnn-random")
        log.warning("MTCNN weights not found; using random ones (faces will not be detected)")
    paths = {name: path.replace(out / f"{name}.fp32.onnx") for name, path in export_mtcnn(folder, out).items()}
    return paths, {"source": str(folder)}


def _random_mtcnn_weights(folder: Path) -> Path:
    torch = lazy_import("torch")
    from edge.features.mtcnn_nets import ONet, PNet, RNet, WEIGHT_FILES

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name, net in (("pnet", PNet()), ("rnet", RNet()), ("onet", ONet())):
        torch.save(net.state_dict(), folder / WEIGHT_FILES[name])
    return folder


#: network group -> exporter(profile, out_dir, random_weights) -> (report(s), details)
EXPORTERS: dict[str, Callable[[Profile, Path, bool], tuple[Any, dict[str, Any]]]] = {
    "mtcnn": _mtcnn,
    "resnet18": _resnet,
    "text": _text,
    "audio": _audio,
    "lfmim": _lfmim,
}
