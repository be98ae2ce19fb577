"""Which precision each network gets, per target, and why (torch-free; shared by edge-build and the first run).

The policy names the precision a build *tries* for a network; the build then keeps, per network, the fastest variant
that passes the fidelity gate on the machine it runs on (:mod:`edge.prepare.select`), so a policy entry is a
starting point measured on one machine, never a promise about another.

CPU INT8 forms never saturate on any ONNX Runtime kernel: the weights are 7-bit (int8 in [-64, 64], ONNX Runtime's
``reduce_range``).  Without VNNI, x86's U8S8 kernels (AVX2 ``vpmaddubsw``, AVX-512 BW) add *pairs* of u8 x s8
products in 16 bits with saturation: 2 x 255 x 127 = 64770 overflows int16, 2 x 255 x 64 = 32640 fits.  VNNI, AMX
and ARM64's dot-product kernels accumulate in 32 bits, where 7-bit weights cost a little resolution and nothing else.
Measured on a 2-core AVX2 machine without VNNI (issue 9): O-Net cosine 0.9749 with 8-bit weights, 0.9983 with 7-bit;
the starter face encoder 0.9753 vs 0.9991.  ``tests/test_quantize.py`` checks the range on every CPU build, so a
machine with VNNI also catches a regression that would only show without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge._lazy import lazy_import
from edge.errors import InputError

if TYPE_CHECKING:
    from edge.profile import Profile

CONV_OPS: tuple[str, ...] = ("Conv", "Gemm", "MatMul")
MATMUL_OPS: tuple[str, ...] = ("MatMul",)
#: The int8 weight range of every CPU form (7 bits: see the module docstring).
CPU_WEIGHT_RANGE: tuple[int, int] = (-64, 64)


@dataclass(frozen=True)
class NetworkPolicy:
    """Precision of one network per target, the ops INT8 covers, and why.

    ``cpu`` is ``"int8"`` (static Q/DQ, U8S8), ``"int8-dynamic"`` (:func:`quantize_dynamic_matmul`) or ``"fp32"``;
    ``gpu`` is ``"int8"`` (static Q/DQ, S8S8) or ``"fp16"``.
    """

    cpu: str
    gpu: str
    op_types: tuple[str, ...]
    reason: str
    #: Dynamic INT8 only: per-channel weight scales, and nodes left in FP32 (regular expressions searched in names).
    per_channel: bool = False
    exclude: tuple[str, ...] = ()
    #: FP16 variants: nodes kept in FP32 (regular expressions searched in names), e.g. a log-mel front end whose
    #: power spectrum overflows and whose log floor underflows in half precision.
    fp16_keep: tuple[str, ...] = ()

    def excluded_nodes(self, model_path: str | Path) -> list[str]:
        """Names of the nodes of ``model_path`` that :attr:`exclude` keeps in FP32 (dynamic INT8)."""
        return _matching_nodes(model_path, self.exclude)

    def fp16_kept_nodes(self, model_path: str | Path) -> list[str]:
        """Names of the nodes of ``model_path`` that :attr:`fp16_keep` keeps in FP32 in the FP16 variant."""
        return _matching_nodes(model_path, self.fp16_keep)


def _matching_nodes(model_path: str | Path, patterns: tuple[str, ...]) -> list[str]:
    if not patterns:
        return []
    onnx = lazy_import("onnx", purpose="quantization")
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if any(re.search(pattern, n.name) for pattern in patterns)]


_CONV_REASON = (
    "convolutional: INT8 pays most on convolutions (ResNet18 8.9 -> 3.5 ms on a 2-core x86 with U8S8 Q/DQ); Conv, "
    "Gemm and MatMul are quantized, per-channel weights; TensorRT builds the S8S8 form as INT8 convolutions"
)
_MTCNN_SMALL = (
    "tiny convolutional net: FP32 on the CPU, where Q/DQ overhead outweighs INT8 kernels at this size (measured: "
    "P-Net 1.44 ms FP32 vs 1.84 ms INT8, R-Net 0.10 vs 0.11 ms, batch 1, 2-core x86); INT8 S8S8 for TensorRT"
)
#: Per-network defaults (keys are the network names used by the exporters and the build).
PRECISION_POLICY: dict[str, NetworkPolicy] = {
    "resnet18": NetworkPolicy("int8", "int8", CONV_OPS, _CONV_REASON),
    # P-Net and R-Net are so small (29 kB and 0.4 MB of weights) that Q/DQ overhead outweighs the INT8 kernels on
    # ONNX Runtime's CPU: measured idle on a 2-core x86, batch 1, P-Net FP32 1.44 ms vs INT8 1.84 ms, R-Net
    # 0.10 vs 0.11 ms (O-Net 0.56 vs 0.50 ms still gains).  So FP32 on the CPU; INT8 on GPUs, where TensorRT fuses it.
    "pnet": NetworkPolicy("fp32", "int8", CONV_OPS, _MTCNN_SMALL + " (MTCNN P-Net)"),
    "rnet": NetworkPolicy("fp32", "int8", CONV_OPS, _MTCNN_SMALL + " (MTCNN R-Net)"),
    "onet": NetworkPolicy("int8", "int8", CONV_OPS, _CONV_REASON + " (MTCNN O-Net)"),
    "bert": NetworkPolicy(
        "int8-dynamic", "fp16", MATMUL_OPS,
        "transformer: dynamic INT8 on MatMul only on the CPU (the projections and FFN hold nearly all the FLOPs; "
        "LayerNorm, Softmax, GELU and the embeddings stay FP32; dynamic beat static Q/DQ for wav2vec2 and LFMIM, "
        "not yet measured on BERT-base); FP16 on GPUs because post-training INT8 of BERT-base gains "
        "little over FP16 there and has cost accuracy in published examples",
    ),
    "wav2vec2": NetworkPolicy(
        "int8-dynamic", "fp16", MATMUL_OPS,
        "transformer with a convolutional feature encoder: dynamic INT8 on MatMul on the CPU, the conv feature "
        "encoder stays FP32.  Measured (wav2vec2-base random weights, 4 s RAVDESS speech, ORT 1.32, 2 threads on a "
        "busy 2-core x86, so ratios only): dynamic MatMul 0.60x FP32 time, cosine 0.998 mean / 0.986 min; static "
        "U8S8 MatMul-only 1.31x FP32 time (slower), cosine 0.994; static U8S8 Conv+MatMul 0.73x but cosine 0.755 "
        "(the first conv sees the raw waveform and feeds a GroupNorm): fails the gate.  FP16 on GPUs",
    ),
    "lfmim": NetworkPolicy(
        "int8-dynamic", "fp16", MATMUL_OPS,
        "small transformer fusion model: MatMul-only INT8 on the CPU, dynamic because ONNX Runtime runs it fastest "
        "(paper size, random weights, batch 1, 2-core x86: dynamic 0.59x the FP32 time, static U8S8 Q/DQ 0.91x; "
        "fused-head agreement 1.0 for both); the Conv1d input projections, LayerNorm and Softmax stay FP32.  FP16 on "
        "GPUs, where the model takes a fraction of a millisecond and INT8 would only risk the fused head's agreement",
    ),
    "lfmim-small": NetworkPolicy(
        "fp32", "fp16", MATMUL_OPS,
        "a small LFMIM (the starter's: d 96, 3 layers, 1.0 M parameters): FP32 on the CPU.  Measured on a 2-core x86: "
        "FP32 1.8 ms vs dynamic INT8 1.3 ms per estimate (batch 1), about 1 ms per second at 2 Hz, while INT8 "
        "flipped 2 of 128 held-out fused decisions (agreement 0.984, under the 0.99 gate).  FP16 on GPUs",
    ),
    "minilm": NetworkPolicy(
        "fp32", "fp16", MATMUL_OPS,
        "all-MiniLM-L6-v2 (the starter's text encoder, 32 tokens): FP32 on the CPU.  Its best INT8 form passes the "
        "feature gate but costs the text head 0.62 points on the GoEmotions-Ekman test through the run path "
        "(63.26 -> 62.64 %, scripts/compare_precisions.py, 2-core AMD EPYC with AVX-512 VNNI, December 2026), over "
        "the 0.5-point budget, to save 1.3 ms per transcript change (4.7 vs 3.4 ms, 2 threads): the text encoder "
        "runs only when the transcript changes, so FP32 costs the loop nearly nothing.  The INT8 form measured "
        "(the ops and exclusions below): dynamic INT8 on MatMul with per-channel weights, "
        "the six FFN output projections kept FP32 (their inputs carry the outliers).  Measured on 64 GoEmotions dev "
        "texts, 1 thread, 2-core x86: per-tensor 0.44x FP32 time but mean token cosine 0.947; per-channel 0.45x, "
        "0.989 (under the 0.99 gate); per-channel without the FFN outputs 0.64x, 0.994.  With 7-bit weights on a 2-core "
        "AVX-512 VNNI x86: 7.9 ms vs 12.8 ms FP32 (1 thread), cosine 0.993; on an AVX2 machine without VNNI the "
        "same form gives 0.9855-0.987 (issue 9), so the gate keeps FP32 there.  FP16 on GPUs",
        per_channel=True, exclude=(r"layer\.\d+/output/dense/MatMul$",),
    ),
    "char-bert": NetworkPolicy(
        "fp32", "fp16", MATMUL_OPS,
        "starter-zh's character-level BERT (2 layers, 128 wide, 64 tokens, 0.7 M parameters): FP32 on the CPU, where "
        "dynamic INT8 gains little at this size (measured, batch 1, 1 thread, busy 2-core x86: p50 0.42 ms FP32 vs "
        "0.37 ms INT8, token cosine 0.99998); FP16 on GPUs",
    ),
    "whisper-base-l1": NetworkPolicy(
        "fp32", "fp16", MATMUL_OPS,
        "a candidate audio encoder (not shipped), the front of Whisper base (log-mel in the graph, two convolutions, one "
        "transformer layer, 4.1 M parameters, 1 s blocks): FP32 on the CPU, where dynamic INT8 on MatMul gains little "
        "(measured, 1 thread, 2-core AMD EPYC with AVX2 busy training: p50 7.9 ms FP32 vs 7.1 ms INT8 per block, "
        "frame cosine 0.998) and the first Conv is the DFT that must stay exact: under 1 % of a core at real time; "
        "FP16 on GPUs",
    ),
    "whisper-base-l1-proj": NetworkPolicy(
        "fp32", "fp16", MATMUL_OPS,
        "the starter's audio encoder (since 2026-12-04): Whisper base's front (log-mel in the graph, two "
        "convolutions, one transformer layer) and a trained 512-256-128 frame projection, 4.3 M parameters, 1 s "
        "blocks: FP32 on the CPU, like "
        "whisper-base-l1 (dynamic INT8 on MatMul gains little there and the first Conv is the exact DFT); measured "
        "p50 10.2 ms per block on 1 thread of a busy 2-core AMD EPYC (AVX2), 1 % of a core at real time; FP16 on GPUs "
        "with the log-mel front end in FP32 (all of it in FP16: frame cosine 0.39 against FP32, the power spectrum "
        "overflows and the 1e-10 log floor underflows in half precision)",
        fp16_keep=(r"^/front/mel/",),
    ),
    "logmel-cnn": NetworkPolicy(
        "fp32", "fp16", CONV_OPS,
        "the log-mel CNN audio encoder (starter-zh's; the starter's until 2026-12-04; 170k parameters, 1 s "
        "blocks): FP32 on the CPU, where INT8 gains "
        "nothing at this size (measured 0.55 ms FP32 vs 0.56 ms INT8 per block, 1 thread, 2-core x86) and its first "
        "Conv is the DFT that must stay exact; FP16 on GPUs",
    ),
}


def policy_for(network: str) -> NetworkPolicy:
    """The :data:`PRECISION_POLICY` entry of ``network``; an :class:`InputError` lists the known names."""
    try:
        return PRECISION_POLICY[network]
    except KeyError:
        raise InputError(
            f"no precision policy for network {network!r}; known networks: {sorted(PRECISION_POLICY)}; "
            "pass op_types explicitly to quantize another network"
        ) from None


def policy_name(network: str, profile: "Profile") -> str:
    """The :data:`PRECISION_POLICY` key of a network: the encoder kind for text and audio, a small LFMIM (d < 128,
    the starter's) apart from the paper-sized one, else the network's name."""
    if network == "lfmim" and profile.lfmim.d_model < 128:
        return "lfmim-small"
    return {"text": profile.text.encoder, "audio": profile.audio.encoder}.get(network, network)


def chosen_precision(network: str, profile: "Profile", precision: str, target: str) -> str:
    """fp32 / fp16 builds use that precision everywhere; int8 follows the per-network policy of the target."""
    if precision != "int8":
        return precision
    policy = policy_for(policy_name(network, profile))
    return policy.cpu if target == "cpu" else policy.gpu
