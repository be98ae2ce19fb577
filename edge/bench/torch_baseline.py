"""The PyTorch eager FP32 baseline: each network of a build rebuilt as a torch module, as the build made it.

The modules come from the same places as in :mod:`edge.build.sources` (its private helpers are reused, nothing
there is changed): the profile's weights, or with the build's ``random_weights`` flag the same architectures with
random weights (the BERT vocabulary sized from the build's tokenizer). The baseline's speed does not depend on the
weights' values, only on the architecture, which the profile fixes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.profile import Profile

log = logging.getLogger("edge")


def _mtcnn(name: str, profile: Profile, manifest: Mapping[str, Any], random: bool) -> Any:
    from edge.features.mtcnn_nets import NETS, WEIGHT_FILES, load_mtcnn_nets

    recorded = Path(str(manifest["networks"].get(name, {}).get("source", "")))
    if recorded.is_dir() and all((recorded / f).is_file() for f in WEIGHT_FILES.values()):
        return load_mtcnn_nets(recorded)[name]
    try:
        return load_mtcnn_nets(profile.vision.detector_weights or None)[name]
    except InputError:
        if not random:
            raise
    torch = lazy_import("torch")
    torch.manual_seed(0)
    return NETS[name]().eval()


def _onnx_only(weights: str) -> bool:
    """The profile ships this network as ONNX (the starter's trained encoders): the baseline is the same
    architecture in PyTorch with seeded random weights (its speed does not depend on the weights)."""
    return str(weights).endswith(".onnx")


def _resnet18(profile: Profile, random: bool) -> Any:
    from edge.features.resnet import load_resnet18

    if _onnx_only(profile.vision.weights):
        torch = lazy_import("torch")
        from edge.starter.vision_model import EncoderConfig, FaceExpressionEncoder

        torch.manual_seed(0)
        return FaceExpressionEncoder(EncoderConfig(face_size=profile.vision.face_size))
    return load_resnet18(None if random else (profile.vision.weights or None))


def _text(profile: Profile, random: bool, vocab: int | None) -> Any:
    from edge.build.sources import _arch
    from edge.features.text import TextEncoder, load_text_encoder

    if not random:
        from edge.assets import is_package_model, package_model_dir

        weights = profile.text.weights
        return TextEncoder(load_text_encoder(package_model_dir(weights) if is_package_model(weights) else weights).model)
    transformers = lazy_import("transformers", purpose="the BERT baseline")
    torch = lazy_import("torch")
    if vocab is None:
        raise InputError("the build has no tokenizer/tokenizer.json to size the random BERT's vocabulary; rebuild it")
    a = _arch(profile.text.dim)
    config = transformers.BertConfig(vocab_size=vocab, hidden_size=profile.text.dim, num_hidden_layers=a["layers"],
                                     num_attention_heads=a["heads"], intermediate_size=a["ff"],
                                     max_position_embeddings=max(512, profile.text.tokens))
    torch.manual_seed(0)
    return TextEncoder(transformers.BertModel(config, add_pooling_layer=False))


def _audio(profile: Profile, random: bool) -> Any:
    from edge.build.sources import _arch
    from edge.features.audio import AudioEncoder, load_audio_encoder

    if _onnx_only(profile.audio.weights):
        torch = lazy_import("torch")
        from edge.starter.audio_model import LogMelEncoder

        torch.manual_seed(0)
        return LogMelEncoder(dim=profile.audio.dim)
    if not random:
        return AudioEncoder(load_audio_encoder(profile.audio.weights).model)
    transformers = lazy_import("transformers", purpose="the wav2vec2 baseline")
    torch = lazy_import("torch")
    a = _arch(profile.audio.dim)
    config = transformers.Wav2Vec2Config(hidden_size=profile.audio.dim, num_hidden_layers=a["layers"],
                                         num_attention_heads=a["heads"], intermediate_size=a["ff"])
    torch.manual_seed(0)
    return AudioEncoder(transformers.Wav2Vec2Model(config))


def _lfmim(profile: Profile, random: bool) -> Any:
    from edge.model.lfmim import LFMIM
    from edge.model.loading import load_model

    if profile.checkpoint and not random:
        from edge.assets import resolve

        return load_model(resolve(profile.checkpoint))[0]
    torch = lazy_import("torch")
    torch.manual_seed(0)
    return LFMIM(profile.lfmim)


def torch_module(network: str, profile: Profile, manifest: Mapping[str, Any], *, vocab: int | None = None) -> Any:
    """The eval-mode FP32 torch module the build exported as ``network``."""
    random = bool(manifest.get("random_weights", False))
    if network in ("pnet", "rnet", "onet"):
        module = _mtcnn(network, profile, manifest, random)
    elif network == "resnet18":
        module = _resnet18(profile, random)
    elif network == "text":
        module = _text(profile, random, vocab)
    elif network == "audio":
        module = _audio(profile, random)
    elif network == "lfmim":
        module = _lfmim(profile, random)
    else:
        raise InputError(f"no PyTorch baseline for network {network!r}; known: pnet, rnet, onet, resnet18, text, "
                         "audio, lfmim")
    return module.float().eval()


class TorchEager:
    """Runs a torch module eagerly under ``torch.inference_mode()`` on numpy feeds given in the graph's input order."""

    def __init__(self, module: Any, input_names: Sequence[str], *, device: str = "cpu") -> None:
        self.torch = lazy_import("torch", purpose="the PyTorch baseline")
        self.module = module.to(device)
        self.names = list(input_names)
        self.device = device

    def prepare(self, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        return [self.torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self.names]

    def __call__(self, inputs: Sequence[Any]) -> Any:
        with self.torch.inference_mode():
            out = self.module(*inputs)
        if self.device != "cpu":
            self.torch.cuda.synchronize()
        return out
