"""Export a transformers Whisper checkpoint to ONNX for the numpy / ONNX Runtime recogniser (build path; torch).

:func:`export_whisper` writes into ``out_dir``:

- ``encoder.onnx``: ``input_features`` float32 (batch, n_mels, 3000) -> ``encoder_hidden_states``
  (batch, 1500, d_model);
- ``decoder_init.onnx``: ``input_ids`` int64 (batch, new_tokens) and ``encoder_hidden_states`` -> ``logits``
  (batch, new_tokens, vocab), the self-attention cache ``present_key_{i}`` / ``present_value_{i}``
  (batch, heads, new_tokens, head_dim) and the cross-attention cache ``cross_key_{i}`` / ``cross_value_{i}``
  (batch, heads, 1500, head_dim) for every decoder layer ``i``;
- ``decoder_with_past.onnx``: ``input_ids`` (batch, new_tokens), ``past_key_{i}`` / ``past_value_{i}``
  (batch, heads, past_len, head_dim) and the cross cache -> ``logits`` and the grown ``present_key_{i}`` /
  ``present_value_{i}`` (batch, heads, past_len + new_tokens, head_dim);
- ``tokenizer.json``, ``mel_filters.npy`` (n_freqs, n_mels) and ``whisper.json`` (special token ids, shapes, parity
  figures, file hashes: see :mod:`edge.stream.whisper`, which reads them).

The decoder graphs come from :class:`DecoderInit` / :class:`DecoderWithPast`, small wrappers that run the checkpoint's
own decoder layers (their weights and layer norms) with the cache as plain tensors instead of transformers' cache
objects.  Every file is checked against the transformers model in ONNX Runtime at export time (:data:`TOLERANCES`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge._lazy import lazy_import
from edge.build.export import DEFAULT_OPSET, ExportReport, ParityError, check_parity, export_onnx
from edge.runtime.manifest import package_versions
from edge.fileio import sha256_file
from edge.errors import InputError
from edge.features.text import load_pretrained
from edge.fileio import write_text_atomic
from edge.stream import whisper as spec

torch = lazy_import("torch", purpose="exporting Whisper")
nn = torch.nn

log = logging.getLogger("edge")

#: Parity tolerances (absolute, relative): |onnx - torch| <= atol + rtol * |torch|, FP32 ONNX Runtime 1.32 CPU vs
#: PyTorch 2.13 eager, at batches 1 and 3 (and, for the decoders, at a second prompt / past length).  Measured on the
#: tests' tiny random Whisper (d_model 64, weights std 0.3): encoder 1.0e-5, decoder_init 6.7e-6, decoder_with_past
#: 4.8e-6.  The relative term leaves room for trained models' larger logits.
TOLERANCES: dict[str, tuple[float, float]] = {
    "whisper-encoder": (1e-4, 1e-4),
    "whisper-decoder-init": (1e-4, 1e-4),
    "whisper-decoder-with-past": (1e-4, 1e-4),
}


# ------------------------------------------------------------------------------------------------- torch wrappers


class Encoder(nn.Module):
    """``input_features`` (batch, n_mels, 3000) -> the encoder's last hidden state (batch, 1500, d_model)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.encoder = model.model.encoder

    def forward(self, input_features: "torch.Tensor") -> "torch.Tensor":
        return self.encoder(input_features, return_dict=True).last_hidden_state


class _Decoder(nn.Module):
    """The checkpoint's decoder run layer by layer with an explicit key/value cache (plain tensors).

    Follows transformers' eager Whisper decoder: queries scaled before the product, an additive causal mask of the
    dtype's minimum, pre-norm residual blocks, the final layer norm and the (tied) output projection.
    """

    def __init__(self, model: Any, max_positions: int) -> None:
        super().__init__()
        decoder = model.model.decoder
        self.embed_tokens = decoder.embed_tokens
        self.positions = nn.Parameter(decoder.embed_positions.weight[:max_positions].detach().clone(),
                                      requires_grad=False)
        self.layers = decoder.layers
        self.layer_norm = decoder.layer_norm
        self.proj_out = model.proj_out
        self.heads = int(model.config.decoder_attention_heads)
        self.head_dim = int(model.config.d_model) // self.heads

    def _split(self, x: "torch.Tensor") -> "torch.Tensor":
        """(batch, time, d_model) -> (batch, heads, time, head_dim)."""
        return x.view(x.shape[0], -1, self.heads, self.head_dim).transpose(1, 2)

    def cross_cache(self, encoder_hidden_states: "torch.Tensor") -> list["torch.Tensor"]:
        """Keys and values of every layer's cross-attention: [k0, v0, k1, v1, ...]."""
        cache = []
        for layer in self.layers:
            attn = layer.encoder_attn
            cache += [self._split(attn.k_proj(encoder_hidden_states)), self._split(attn.v_proj(encoder_hidden_states))]
        return cache

    @staticmethod
    def _attend(attn: Any, q_in: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", split: Any,
                mask: "torch.Tensor | None") -> "torch.Tensor":
        q = split(attn.q_proj(q_in) * attn.scaling)
        scores = torch.matmul(q, k.transpose(2, 3))
        if mask is not None:
            scores = scores + mask
        out = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2)
        return attn.out_proj(out.reshape(out.shape[0], out.shape[1], -1))

    def run(self, input_ids: "torch.Tensor", past: list["torch.Tensor"] | None,
            cross: list["torch.Tensor"]) -> list["torch.Tensor"]:
        """logits and the new self-attention cache [logits, k0, v0, k1, v1, ...]."""
        new = input_ids.shape[1]
        past_len = past[0].shape[2] if past else 0
        total = past_len + new
        position_ids = torch.arange(new, device=input_ids.device) + past_len
        hidden = self.embed_tokens(input_ids) + nn.functional.embedding(position_ids, self.positions)
        rows = torch.arange(new, device=input_ids.device).unsqueeze(1) + past_len
        cols = torch.arange(total, device=input_ids.device).unsqueeze(0)
        mask = torch.zeros(new, total, dtype=hidden.dtype, device=hidden.device)
        mask = mask.masked_fill(cols > rows, torch.finfo(hidden.dtype).min)
        presents: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            residual = hidden
            h = layer.self_attn_layer_norm(hidden)
            attn = layer.self_attn
            k, v = self._split(attn.k_proj(h)), self._split(attn.v_proj(h))
            if past:
                k = torch.cat([past[2 * i], k], dim=2)
                v = torch.cat([past[2 * i + 1], v], dim=2)
            presents += [k, v]
            hidden = residual + self._attend(attn, h, k, v, self._split, mask)
            residual = hidden
            h = layer.encoder_attn_layer_norm(hidden)
            hidden = residual + self._attend(layer.encoder_attn, h, cross[2 * i], cross[2 * i + 1], self._split, None)
            residual = hidden
            h = layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden)))
            hidden = residual + layer.fc2(h)
        logits = self.proj_out(self.layer_norm(hidden))
        return [logits, *presents]


class DecoderInit(_Decoder):
    """(input_ids, encoder_hidden_states) -> (logits, present k/v per layer, cross k/v per layer)."""

    def forward(self, input_ids: "torch.Tensor", encoder_hidden_states: "torch.Tensor") -> tuple["torch.Tensor", ...]:
        cross = self.cross_cache(encoder_hidden_states)
        return (*self.run(input_ids, None, cross), *cross)


class DecoderWithPast(_Decoder):
    """(input_ids, past k/v per layer, cross k/v per layer) -> (logits, present k/v per layer)."""

    def forward(self, input_ids: "torch.Tensor", *caches: "torch.Tensor") -> tuple["torch.Tensor", ...]:
        n = 2 * len(self.layers)
        return tuple(self.run(input_ids, list(caches[:n]), list(caches[n:])))


# ------------------------------------------------------------------------------------------------------- loading


def load_whisper(name_or_path: str | Path) -> tuple[Any, Any, Any]:
    """(model in eval mode with eager attention, tokenizer, feature extractor) from a local directory or a hub id."""
    transformers = lazy_import("transformers", purpose="loading Whisper")
    model = load_pretrained("Whisper model", name_or_path, transformers.WhisperForConditionalGeneration.from_pretrained,
                            attn_implementation="eager")
    tokenizer = load_pretrained("Whisper tokenizer", name_or_path, transformers.AutoTokenizer.from_pretrained)
    features = load_pretrained("Whisper feature extractor", name_or_path,
                               transformers.WhisperFeatureExtractor.from_pretrained)
    return model.eval(), tokenizer, features


def _token_id(tokenizer: Any, token: str) -> int | None:
    tid = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token_id", None)
    return None if tid is None or (tid == unk and token != tokenizer.unk_token) else int(tid)


def special_tokens(model: Any, tokenizer: Any) -> dict[str, Any]:
    """The ids the decoding loop needs, from the generation config, else from the tokenizer's vocabulary."""
    gen = model.generation_config
    ids = {name: _token_id(tokenizer, f"<|{name}|>") for name in
           ("startoftranscript", "endoftext", "notimestamps", "translate", "transcribe")}
    sot = getattr(gen, "decoder_start_token_id", None) or ids["startoftranscript"]
    eot = gen.eos_token_id if isinstance(getattr(gen, "eos_token_id", None), int) else ids["endoftext"]
    no_ts = getattr(gen, "no_timestamps_token_id", None) or ids["notimestamps"]
    lang_to_id = dict(getattr(gen, "lang_to_id", None) or {})
    task_to_id = dict(getattr(gen, "task_to_id", None) or {})
    if not task_to_id:
        task_to_id = {t: ids[t] for t in ("transcribe", "translate") if ids[t] is not None}
    missing = [n for n, v in (("<|startoftranscript|>", sot), ("<|endoftext|>", eot)) if v is None]
    if missing:
        raise InputError(f"this Whisper checkpoint's tokenizer lacks {missing}; it is not a Whisper tokenizer")
    return {
        "startoftranscript": int(sot),
        "endoftext": int(eot),
        "notimestamps": None if no_ts is None else int(no_ts),
        "languages": {k.strip("<|>"): int(v) for k, v in lang_to_id.items()},
        "tasks": {k: int(v) for k, v in task_to_id.items()},
        "suppress_tokens": [int(t) for t in (getattr(gen, "suppress_tokens", None) or [])],
        "begin_suppress_tokens": [int(t) for t in (getattr(gen, "begin_suppress_tokens", None) or [])],
        "is_multilingual": bool(getattr(gen, "is_multilingual", bool(lang_to_id))),
    }


# ------------------------------------------------------------------------------------------------------- export


def _interleaved(layers: int, prefix: str) -> list[str]:
    """[prefix_key_0, prefix_value_0, prefix_key_1, ...]: the order the wrappers take and return caches."""
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


def _extra_parity(module: Any, path: Path, inputs: list[Any], **kwargs: Any) -> list[Any]:
    """A parity check at other sequence lengths; removes ``path`` when it fails."""
    try:
        return check_parity(module, path, inputs, **kwargs)
    except ParityError:
        path.unlink(missing_ok=True)
        raise


def _export_encoder(model: Any, out: Path, mel: Any, opset: int) -> tuple[ExportReport, Any]:
    encoder = Encoder(model).eval()
    atol, rtol = TOLERANCES["whisper-encoder"]
    report = export_onnx(encoder, [mel], out / spec.ENCODER_FILE, input_names=["input_features"],
                         output_names=["encoder_hidden_states"], opset=opset, atol=atol, rtol=rtol,
                         dynamic_axes={"input_features": {0: "batch"}, "encoder_hidden_states": {0: "batch"}},
                         name="whisper-encoder")
    with torch.no_grad():
        return report, encoder(mel)


def _export_decoders(model: Any, out: Path, hidden: Any, prompt: Any, max_positions: int,
                     opset: int) -> list[ExportReport]:
    layers = int(model.config.decoder_layers)
    present, cross = _interleaved(layers, "present"), _interleaved(layers, "cross")
    past = _interleaved(layers, "past")
    batch = {0: "batch"}
    init = DecoderInit(model, max_positions).eval()
    atol, rtol = TOLERANCES["whisper-decoder-init"]
    kw_init = dict(name="whisper-decoder-init", input_names=["input_ids", "encoder_hidden_states"],
                   output_names=["logits", *present, *cross], atol=atol, rtol=rtol)
    init_report = export_onnx(
        init, [prompt, hidden], out / spec.DECODER_INIT_FILE, opset=opset,
        dynamic_axes={"input_ids": {0: "batch", 1: "new_tokens"}, "encoder_hidden_states": batch,
                      "logits": {0: "batch", 1: "new_tokens"}, **{n: {0: "batch", 2: "new_tokens"} for n in present},
                      **{n: batch for n in cross}},
        **kw_init)
    _extra_parity(init, init_report.path, [prompt[:, :1], hidden], **kw_init)  # the language-detection step

    with torch.no_grad():
        caches = init(prompt, hidden)[1:]
    self_cache, cross_cache = list(caches[:2 * layers]), list(caches[2 * layers:])
    step = prompt[:, -1:]
    with_past = DecoderWithPast(model, max_positions).eval()
    atol, rtol = TOLERANCES["whisper-decoder-with-past"]
    kw_past = dict(name="whisper-decoder-with-past", input_names=["input_ids", *past, *cross],
                   output_names=["logits", *present], atol=atol, rtol=rtol)
    past_report = export_onnx(
        with_past, [step, *self_cache, *cross_cache], out / spec.DECODER_WITH_PAST_FILE, opset=opset,
        dynamic_axes={"input_ids": {0: "batch", 1: "new_tokens"}, "logits": {0: "batch", 1: "new_tokens"},
                      **{n: {0: "batch", 2: "past_len"} for n in past}, **{n: batch for n in cross},
                      **{n: {0: "batch", 2: "total_len"} for n in present}},
        **kw_past)
    # another past length and several new tokens at once (the causal mask over a cache)
    shorter = [c[:, :, :1] for c in self_cache]
    _extra_parity(with_past, past_report.path, [prompt[:, 1:], *shorter, *cross_cache], **kw_past)
    return [init_report, past_report]


def _check_positions(model: Any, max_target_positions: int | None) -> int:
    limit = int(model.config.max_target_positions)
    if max_target_positions is None:
        return limit
    if not isinstance(max_target_positions, int) or not 4 < max_target_positions <= limit:
        raise InputError(f"max_target_positions must be an integer in 5..{limit} (this checkpoint's limit), "
                         f"got {max_target_positions!r}")
    return max_target_positions


def _save_assets(out: Path, tokenizer: Any, features: Any) -> dict[str, str]:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise InputError(f"the Whisper tokenizer ({type(tokenizer).__name__}) has no fast (tokenizers) backend; "
                         "save the checkpoint with a fast tokenizer (tokenizer.json)")
    backend.save(str(out / spec.TOKENIZER_FILE))
    np.save(out / spec.MEL_FILTERS_FILE, np.asarray(features.mel_filters, dtype=np.float32))
    return {name: sha256_file(out / name) for name in (spec.TOKENIZER_FILE, spec.MEL_FILTERS_FILE)}


def _check_features(features: Any, model: Any) -> None:
    expected = {"sampling_rate": spec.SAMPLE_RATE, "n_fft": spec.N_FFT, "hop_length": spec.HOP_LENGTH,
                "n_samples": spec.N_SAMPLES, "feature_size": int(model.config.num_mel_bins)}
    wrong = {k: getattr(features, k, None) for k, v in expected.items() if getattr(features, k, None) != v}
    if wrong:
        raise InputError(f"this Whisper feature extractor has {wrong}; the numpy front end supports only {expected}")


def _example_prompt(tokens: dict[str, Any]) -> list[int]:
    """A decoding prefix to trace and check with: <|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>."""
    prefix = [tokens["startoftranscript"], *list(tokens["languages"].values())[:1]]
    prefix += [tokens["tasks"]["transcribe"]] if "transcribe" in tokens["tasks"] else []
    prefix += [tokens["notimestamps"]] if tokens["notimestamps"] is not None else []
    return prefix if len(prefix) >= 2 else prefix * 2  # the with-past check needs a past of at least one token


def export_whisper(name_or_path: str | Path, out_dir: str | Path, *, max_target_positions: int | None = None,
                   opset: int = DEFAULT_OPSET, seed: int = 0) -> dict[str, Any]:
    """Export a Whisper checkpoint (local directory or hub id) to ``out_dir``; returns the ``whisper.json`` content.

    ``max_target_positions`` caps the decoder's length (prompt + generated tokens), which also trims its position
    table; default: the checkpoint's own limit (448 for OpenAI's models).  Raises :class:`InputError` for a missing
    directory or an unreachable hub id, and :class:`~edge.build.export.ParityError` when ONNX Runtime disagrees with
    PyTorch beyond :data:`TOLERANCES`.
    """
    start = time.perf_counter()
    model, tokenizer, features = load_whisper(name_or_path)
    _check_features(features, model)
    positions = _check_positions(model, max_target_positions)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokens = special_tokens(model, tokenizer)

    gen = torch.Generator().manual_seed(seed)
    mel = torch.randn(1, int(model.config.num_mel_bins), spec.N_FRAMES, generator=gen) * 0.5
    prompt = torch.tensor([_example_prompt(tokens)], dtype=torch.long)
    encoder_report, hidden = _export_encoder(model, out, mel, opset)
    reports = [encoder_report, *_export_decoders(model, out, hidden, prompt, positions, opset)]

    hashes = _save_assets(out, tokenizer, features)
    cfg = model.config
    meta = {
        "format": spec.FORMAT,
        "source": str(name_or_path),
        "n_mels": int(cfg.num_mel_bins),
        "n_audio_ctx": int(cfg.max_source_positions),
        "d_model": int(cfg.d_model),
        "decoder_layers": int(cfg.decoder_layers),
        "decoder_heads": int(cfg.decoder_attention_heads),
        "vocab_size": int(cfg.vocab_size),
        "max_target_positions": positions,
        "tokens": tokens,
        "files": {**{r.path.name: sha256_file(r.path) for r in reports}, **hashes},
        "onnx": {r.name: r.to_dict() for r in reports},
        "versions": package_versions(),
        "export_seconds": round(time.perf_counter() - start, 3),
    }
    write_text_atomic(out / spec.META_FILE, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    log.info("Whisper %s exported to %s in %.1f s (max |onnx - torch|: %s)", name_or_path, out,
             meta["export_seconds"], ", ".join(f"{r.name} {r.max_abs_diff:.2g}" for r in reports))
    return meta


def whisper_encoder_profiles(n_mels: int = 80, batch: int = 1) -> dict[str, tuple[tuple[int, ...], ...]]:
    """TensorRT (min, opt, max) shapes for ``encoder.onnx``: a fixed (batch, n_mels, 3000) log-mel input.

    Pass to :func:`edge.build.tensorrt_engine.build_engine` (``profiles=whisper_encoder_profiles(meta["n_mels"])``)
    to build ``encoder.plan`` beside the ONNX files; the decoders stay on ONNX Runtime.
    """
    if n_mels < 1 or batch < 1:
        raise InputError(f"n_mels and batch must be positive, got {n_mels}, {batch}")
    shape = (batch, n_mels, spec.N_FRAMES)
    return {"input_features": (shape, shape, shape)}


__all__ = ["DecoderInit", "DecoderWithPast", "Encoder", "TOLERANCES", "export_whisper", "load_whisper",
           "special_tokens", "whisper_encoder_profiles"]
