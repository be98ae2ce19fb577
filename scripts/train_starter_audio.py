"""Train the starter profile's audio encoder (edge.starter.audio_model) on RAVDESS speech, speaker-independently.

    python scripts/train_starter_audio.py                      # actors 01-16 train, 17-18 validation, 19-20 test
    python scripts/train_starter_audio.py --train-actors 5-20 --val-actors 3-4 --test-actors 1-2 \
        --out runs/starter/audio-split2                        # a second split, for robustness
    python scripts/train_starter_audio.py --esd --speeds 0.9 1.1 --reverbs 2   # + ESD 0020, speed and reverberation

With ``--esd`` the 1,000 clips of ESD speaker 0020 (``../shared/data/esd-0020``, five emotions) join the training
set (never validation or test: one speaker).  ``--speeds`` adds speed-perturbed copies of every training clip
(resampled, so tempo and pitch change together, as in Kaldi's speed perturbation) and ``--reverbs`` copies
convolved with synthetic room impulse responses (exponentially decaying noise, RT60 0.15-0.7 s, seeded); each
training crop is drawn from one of a clip's versions.

Reads ``../shared/data/ravdess-speech`` (labels.csv: file, emotion, intensity, actor, sex; calm counts as neutral)
with :func:`edge.media.read_audio` and caches the decoded 16 kHz waveforms as one int16 ``.npz`` under
``runs/cache/`` (git-ignored; never copy the data into the repository).  Trains on random 1 s crops (the run
path's block) with gain, noise, time-shift and SpecAugment; evaluates clip accuracy the way the run path sees a clip:
consecutive 1 s blocks, zero-padded tail, only the frames that cover real audio, the head's logits averaged over
the blocks.  Keeps the best validation epoch; writes to ``--out``:

- ``best.safetensors`` / ``best.json``: encoder (``encoder.*``) and head (``head.*``) weights and their config;
- ``encoder.onnx``: ``waveform`` float32 (batch, 16000) -> ``hidden`` (batch, 49, dim), parity-checked;
  ``encoder.int8.onnx`` (ONNX Runtime dynamic INT8 on the CNN's Conv layers; the DFT stays FP32) unless ``--no-int8``;
- ``report-val/``, ``report-test/``: report.json, report.md, confusion_a.png (edge.train.reports);
- ``summary.json`` / ``summary.md``: accuracies (PyTorch and ONNX Runtime), sizes, split, command, timing.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.build.export import export_onnx  # noqa: E402
from edge.features.audio_pre import num_frames  # noqa: E402
from edge.labels import CLASSES, to_index  # noqa: E402
from edge.media import read_audio  # noqa: E402
from edge.model.checkpoint import save_checkpoint  # noqa: E402
from edge.fileio import write_text_atomic  # noqa: E402
from edge.starter.audio_model import (  # noqa: E402
    ENCODER_NAME, LOG_OFFSET, N_MELS, SAMPLE_RATE, AudioEmotionHead, EncoderConfig, LogMel, LogMelEncoder,
    count_parameters, frame_mask, hann_window, mel_matrix,
)
from edge.train.metrics import classification_metrics  # noqa: E402
from edge.train.reports import write_eval_report  # noqa: E402

log = logging.getLogger("edge")

#: The run path's block: 1 s at 16 kHz.
BLOCK = SAMPLE_RATE
#: Frames of one block (49) and the time shift of a training crop: it may start this many frames (20 ms each)
#: before the clip.
FRAMES = num_frames(BLOCK)
MAX_LEAD_FRAMES = 12
#: Share of training crops centred on a speech frame (mel power within 30 dB of the clip's loudest frame); the
#: others start anywhere, so silent blocks are seen too.
VOICED_CROPS = 0.8
VOICED_RATIO = 1e-3
#: Expected mel power of unit-variance white noise: sum of the Hann window's squares (150) times each band's weights.
NOISE_BAND = (hann_window() ** 2).sum() * mel_matrix().sum(axis=1)
CACHE_VERSION = 1


def parse_actors(text: str) -> list[int]:
    """'1-16' or '17,18' or '1-4,9' -> sorted actor numbers."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    if not out:
        raise SystemExit(f"no actors in {text!r}")
    return sorted(out)


# -------------------------------------------------------------------------------------------------- data


def load_ravdess(data: Path, cache_dir: Path) -> dict[str, np.ndarray]:
    """Decoded clips as {"pcm": int16 concat, "offsets": (N+1,), "labels", "actors", "files"}; cached as one .npz."""
    table = data / "labels.csv"
    if not table.is_file():
        raise SystemExit(f"{table} not found: pass --data pointing at the ravdess-speech folder of ../shared/data")
    with table.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cache = cache_dir / f"ravdess16k-v{CACHE_VERSION}-{len(rows)}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            log.info("read the decoded clips from %s", cache)
            return {k: z[k] for k in z.files}
    pcm, offsets, labels, actors, files = [], [0], [], [], []
    for row in tqdm(rows, desc="decoding RAVDESS", unit="clip"):
        x, _ = read_audio(data / row["file"], sample_rate=SAMPLE_RATE)
        pcm.append(np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16))  # 16-bit source: exact
        offsets.append(offsets[-1] + x.size)
        labels.append(to_index(row["emotion"], "ravdess", source=f"{table} {row['file']}"))
        actors.append(int(row["actor"]))
        files.append(row["file"])
    out = {"pcm": np.concatenate(pcm), "offsets": np.asarray(offsets, np.int64), "labels": np.asarray(labels, np.int64),
           "actors": np.asarray(actors, np.int64), "files": np.asarray(files)}
    cache_dir.mkdir(parents=True, exist_ok=True)
    part = cache.with_name(cache.name + ".part.npz")
    np.savez(part, **out)
    part.replace(cache)
    log.info("cached %d decoded clips in %s", len(rows), cache)
    return out


#: ESD's speaker in the merged clip tables (RAVDESS actors are 1-24).
ESD_ACTOR = 100


def load_esd(data: Path, cache_dir: Path, progress: bool = True) -> dict[str, np.ndarray]:
    """ESD speaker 0020 decoded like :func:`load_ravdess` (actor :data:`ESD_ACTOR`); cached as one .npz."""
    table = data / "labels.csv"
    if not table.is_file():
        raise SystemExit(f"{table} not found: pass --esd-data pointing at the esd-0020 folder of ../shared/data")
    with table.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cache = cache_dir / f"esd0020-16k-v{CACHE_VERSION}-{len(rows)}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    pcm, offsets, labels = [], [0], []
    for row in tqdm(rows, desc="decoding ESD 0020", unit="clip", disable=not progress):
        x, _ = read_audio(data / row["file"], sample_rate=SAMPLE_RATE)
        pcm.append(np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16))
        offsets.append(offsets[-1] + x.size)
        labels.append(to_index(row["emotion"], "canonical", source=f"{table} {row['file']}"))
    out = {"pcm": np.concatenate(pcm), "offsets": np.asarray(offsets, np.int64), "labels": np.asarray(labels, np.int64),
           "actors": np.full(len(rows), ESD_ACTOR, np.int64), "files": np.asarray([r["file"] for r in rows])}
    cache_dir.mkdir(parents=True, exist_ok=True)
    part = cache.with_name(cache.name + ".part.npz")
    np.savez(part, **out)
    part.replace(cache)
    return out


class Clips:
    """The clips of some actors as float32 waveforms with labels."""

    def __init__(self, data: dict[str, np.ndarray], actors: list[int]) -> None:
        pick = np.flatnonzero(np.isin(data["actors"], actors))
        if pick.size == 0:
            raise SystemExit(f"no clips for actors {actors}")
        off = data["offsets"]
        self.waves = [data["pcm"][off[i]:off[i + 1]].astype(np.float32) / 32768.0 for i in pick]
        self.labels = data["labels"][pick]
        self.files = data["files"][pick]

    def __len__(self) -> int:
        return len(self.waves)

    def extend(self, other: "Clips") -> None:
        self.waves = self.waves + other.waves
        self.labels = np.concatenate([self.labels, other.labels])
        self.files = np.concatenate([self.files, other.files])


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (linear-interpolation resampling: tempo and pitch change together)."""
    n = int(round(x.size / factor))
    return np.interp(np.arange(n) * factor, np.arange(x.size), x).astype(np.float32)


def reverberate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` convolved with a synthetic room impulse response: a direct path plus exponentially decaying Gaussian
    noise with a random RT60 of 0.15-0.7 s and direct-to-reverberant ratio; peak level kept."""
    rt60 = rng.uniform(0.15, 0.7)
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    tail = rng.standard_normal(t.size) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    rir = tail * 10.0 ** (rng.uniform(-12.0, 0.0) / 20.0) / np.sqrt((tail ** 2).sum())
    rir[0] = 1.0
    size = 1 << int(np.ceil(np.log2(x.size + rir.size)))  # FFT convolution (direct is 10^9 operations a clip)
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(rir, size), size)[: x.size]
    peak = np.abs(y).max()
    return (y * (np.abs(x).max() / peak if peak > 0 else 1.0)).astype(np.float32)


def clip_versions(clips: Clips, speeds: list[float], reverbs: int, seed: int) -> list[list[np.ndarray]]:
    """Each training clip's versions: itself, one per speed factor, ``reverbs`` reverberated copies."""
    rng = np.random.default_rng(seed + 17)
    out = []
    for x in tqdm(clips.waves, desc="augmented versions", leave=False):
        out.append([x] + [speed_perturb(x, f) for f in speeds] + [reverberate(x, rng) for _ in range(reverbs)])
    return out


def mel_powers(waves: list[np.ndarray]) -> list[np.ndarray]:
    """Each waveform's (N_MELS, frames) mel power from the encoder's own fixed front-end (computed once).

    The frames of a 1 s block that starts at a multiple of the 20 ms hop are exactly the clip's frames there, so
    training on slices of these equals training on blocks (and gain and noise act on power directly)."""
    front = LogMel()
    with torch.no_grad():
        return [front.power(torch.from_numpy(x)[None])[0].numpy() for x in tqdm(waves, desc="mel", leave=False)]


def random_crops(powers: list[list[np.ndarray]], index: np.ndarray, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N_MELS, FRAMES) augmented log-mel of random 1 s crops and the (B, FRAMES) mask of real frames.

    Augmentation: time shift (a crop may start up to MAX_LEAD_FRAMES before the clip, or run past its end: zero
    power there, as the run path's zero-padded tail), gain -12..+6 dB, and half the time white noise at -75..-35 dBFS
    (its expected mel power, with a +-50 % random fluctuation per frame and band).  ``powers[i]`` holds clip i's
    versions (itself, speed-perturbed, reverberated); each crop picks one at random."""
    out = np.zeros((index.size, N_MELS, FRAMES), np.float32)
    valid = np.zeros(index.size, np.int64)
    for row, i in enumerate(index):
        p = powers[i][int(rng.integers(len(powers[i])))]
        voiced = np.flatnonzero(p.sum(axis=0) > p.sum(axis=0).max() * VOICED_RATIO)
        if rng.random() < VOICED_CROPS and voiced.size:  # centred on speech, jittered
            start = int(rng.choice(voiced)) - FRAMES // 2 + int(rng.integers(-MAX_LEAD_FRAMES, MAX_LEAD_FRAMES + 1))
            start = max(-MAX_LEAD_FRAMES, start)
        else:
            start = int(rng.integers(-MAX_LEAD_FRAMES, max(1, p.shape[1] - FRAMES // 2)))
        lead = max(0, -start)
        seg = p[:, max(0, start):max(0, start) + FRAMES - lead]
        out[row, :, lead:lead + seg.shape[1]] = seg
        valid[row] = lead + seg.shape[1]
        out[row] *= 10.0 ** (rng.uniform(-12.0, 6.0) / 10.0)
        if rng.random() < 0.5:
            sigma2 = 10.0 ** (rng.uniform(-75.0, -35.0) / 10.0)
            n = valid[row]
            out[row, :, :n] += (NOISE_BAND[:, None] * sigma2 * rng.uniform(0.5, 1.5, (N_MELS, n))).astype(np.float32)
    mask = np.arange(FRAMES)[None, :] < valid[:, None]
    return torch.log(torch.from_numpy(out) + LOG_OFFSET), torch.from_numpy(mask)


def run_path_blocks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A clip as the run path feeds it: consecutive 1 s blocks, zero-padded tail; blocks with no frame dropped."""
    blocks, lengths = [], []
    for i in range(0, x.size, BLOCK):
        chunk = x[i:i + BLOCK]
        if num_frames(chunk.size) == 0:
            continue
        padded = np.zeros(BLOCK, np.float32)
        padded[:chunk.size] = chunk
        blocks.append(padded)
        lengths.append(chunk.size)
    return np.stack(blocks), np.asarray(lengths, np.int64)


def clip_blocks(waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every clip's run-path blocks stacked: (blocks (N, BLOCK), real lengths (N,), owning clip index (N,))."""
    blocks, lengths, owner = [], [], []
    for c, x in enumerate(waves):
        b, n = run_path_blocks(x)
        blocks.append(b)
        lengths.append(n)
        owner += [c] * len(b)
    return np.concatenate(blocks), np.concatenate(lengths), np.asarray(owner, np.int64)


@torch.no_grad()
def clip_logits(encode, head: AudioEmotionHead, clips: Clips, *, batch: int = 256) -> np.ndarray:
    """(clips, classes) logits: the head's logits averaged over each clip's run-path blocks.

    ``encode`` maps a (B, BLOCK) float32 numpy array to (B, frames, dim) hidden (PyTorch or ONNX Runtime).
    """
    head.eval()
    blocks_np, lengths_np, owner_np = clip_blocks(clips.waves)
    logits = []
    for i in range(0, len(blocks_np), batch):
        hidden = torch.as_tensor(encode(blocks_np[i:i + batch]))
        mask = frame_mask(torch.from_numpy(lengths_np[i:i + batch]), hidden.shape[1])
        logits.append(head(hidden, mask).numpy())
    block_logits = np.concatenate(logits)
    out = np.zeros((len(clips), block_logits.shape[1]), np.float64)
    np.add.at(out, owner_np, block_logits)
    return out / np.bincount(owner_np, minlength=len(clips))[:, None]


def torch_encoder(encoder: LogMelEncoder):
    def encode(x: np.ndarray) -> np.ndarray:
        encoder.eval()
        with torch.no_grad():
            return encoder(torch.from_numpy(x)).numpy()
    return encode


def ort_encoder(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: session.run(["hidden"], {"waveform": x})[0]


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


# -------------------------------------------------------------------------------------------------- training


def train(args: argparse.Namespace, train_set: Clips, val_set: Clips) -> tuple[dict, dict, list[dict]]:
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    cfg = EncoderConfig(dim=args.dim, channels=tuple(args.channels), temporal_blocks=args.temporal_blocks)
    encoder, head = LogMelEncoder(config=cfg), AudioEmotionHead(args.dim, len(CLASSES))
    encoder.spec_augment = True
    params = [*encoder.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) * args.crops_per_clip / args.batch)
    total = steps_per_epoch * args.epochs
    warmup = steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    versions = clip_versions(train_set, args.speeds, args.reverbs, args.seed)
    flat = mel_powers([v for vs in versions for v in vs])
    per = len(versions[0]) if versions else 1
    powers = [flat[i * per:(i + 1) * per] for i in range(len(versions))]
    best: tuple[float, float] = (-1.0, -math.inf)
    best_state: dict = {}
    both = nn.ModuleDict({"encoder": encoder, "head": head})
    # Exponential moving average of the weights (and BatchNorm statistics), evaluated and kept instead of the raw
    # weights with --ema: on 120 validation clips the raw weights' accuracy jumps by 5-10 points between epochs.
    ema = ({k: v.detach().clone() for k, v in both.state_dict().items()} if args.ema else None)
    shadow = copy.deepcopy(both) if args.ema else both
    history = []
    start = time.perf_counter()
    bar = tqdm(range(1, args.epochs + 1), desc="epochs", unit="epoch")
    for epoch in bar:
        encoder.train()
        head.train()
        order = rng.permutation(np.tile(np.arange(len(train_set)), args.crops_per_clip))
        losses = []
        for s in tqdm(range(steps_per_epoch), desc=f"epoch {epoch}", unit="step", leave=False):
            idx = order[s * args.batch:(s + 1) * args.batch]
            logmel, mask = random_crops(powers, idx, rng)
            y = torch.from_numpy(train_set.labels[idx])
            loss = loss_fn(head(encoder.encode_logmel(logmel), mask), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            losses.append(float(loss))
            if ema is not None:
                with torch.no_grad():
                    for k, v in both.state_dict().items():
                        if v.dtype.is_floating_point:
                            ema[k].mul_(args.ema).add_(v.detach(), alpha=1.0 - args.ema)
                        else:
                            ema[k].copy_(v)
        if epoch < args.eval_from and epoch < args.epochs:
            history.append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                            "seconds": round(time.perf_counter() - start, 1)})
            bar.set_postfix(loss=f"{np.mean(losses):.3f}")
            continue
        if ema is not None:
            shadow.load_state_dict(ema)
        val_logits = clip_logits(torch_encoder(shadow["encoder"]), shadow["head"], val_set)
        val_acc = accuracy(val_logits, val_set.labels)
        val_loss = float(nn.functional.cross_entropy(torch.from_numpy(val_logits).float(),
                                                     torch.from_numpy(val_set.labels)))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_acc": val_acc, "val_loss": val_loss,
                        "seconds": round(time.perf_counter() - start, 1)})
        if (val_acc, -val_loss) > best:
            best = (val_acc, -val_loss)
            best_state = {"encoder": {k: v.clone() for k, v in shadow["encoder"].state_dict().items()},
                          "head": {k: v.clone() for k, v in shadow["head"].state_dict().items()}, "epoch": epoch}
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val=f"{val_acc:.3f}", best=f"{best[0]:.3f}")
        log.info("epoch %d: train loss %.4f, val acc %.4f, val loss %.4f", epoch, np.mean(losses), val_acc, val_loss)
        if args.time_budget and time.perf_counter() - start > args.time_budget * 60:
            log.warning("time budget of %.1f min reached after epoch %d", args.time_budget, epoch)
            break
    encoder.load_state_dict(best_state["encoder"])
    head.load_state_dict(best_state["head"])
    encoder.spec_augment = False
    return {"encoder": encoder, "head": head, "config": cfg}, best_state, history


# -------------------------------------------------------------------------------------------------- outputs


def export(encoder: LogMelEncoder, out: Path, *, int8: bool) -> dict:
    encoder.eval()
    wave = torch.randn(2, BLOCK, generator=torch.Generator().manual_seed(0)) * 0.1
    report = export_onnx(encoder, [wave], out / "encoder.onnx", input_names=["waveform"], output_names=["hidden"],
                         dynamic_axes={"waveform": {0: "batch"}, "hidden": {0: "batch"}}, name=ENCODER_NAME)
    info = {"onnx": report.to_dict()}
    (out / "encoder.int8.onnx").unlink(missing_ok=True)  # never leave a stale INT8 file beside new weights
    if int8:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        graph = onnx.load(str(out / "encoder.onnx")).graph
        convs = [n.name for n in graph.node if n.op_type == "Conv"]
        path = out / "encoder.int8.onnx"
        # The first Conv is the fixed DFT: its log-power needs float precision, so it stays FP32.
        quantize_dynamic(str(out / "encoder.onnx"), str(path), op_types_to_quantize=["Conv", "MatMul"],
                         weight_type=QuantType.QUInt8, nodes_to_exclude=convs[:1])
        info["int8"] = {"path": str(path), "size_bytes": path.stat().st_size, "excluded": convs[:1]}
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ravdess-speech")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "starter" / "audio")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "cache")
    p.add_argument("--train-actors", default="1-16")
    p.add_argument("--val-actors", default="17-18")
    p.add_argument("--test-actors", default="19-20")
    p.add_argument("--esd", action="store_true", help="add ESD speaker 0020's 1,000 clips to the training set")
    p.add_argument("--esd-data", type=Path, default=ROOT.parent / "shared" / "data" / "esd-0020")
    p.add_argument("--speeds", type=float, nargs="*", default=[], help="speed-perturbed copies (e.g. 0.9 1.1)")
    p.add_argument("--reverbs", type=int, default=0, help="reverberated copies of every training clip")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--eval-from", type=int, default=10, help="first epoch evaluated on the validation actors")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--crops-per-clip", type=int, default=1, help="random 1 s crops of every training clip per epoch")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--channels", type=int, nargs=2, default=[16, 32], help="widths of the two 2-D conv stages")
    p.add_argument("--temporal-blocks", type=int, default=3, help="dilated residual Conv1d blocks")
    p.add_argument("--ema", type=float, default=0.0,
                   help="keep an exponential moving average of the weights with this decay per step (e.g. 0.99) "
                        "and select and ship it; 0 = the raw weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine)")
    p.add_argument("--time-budget", type=float, default=0.0, help="stop after the epoch that passes this many minutes")
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--no-int8", action="store_true")
    args = p.parse_args(argv)
    if not 0.0 <= args.ema < 1.0:
        p.error(f"--ema {args.ema}: expected a decay in [0, 1), e.g. 0.99 (0 keeps the raw weights)")
    if min(args.channels) < 1 or args.temporal_blocks < 0:
        p.error(f"--channels {args.channels} --temporal-blocks {args.temporal_blocks}: expected positive widths and "
                "at least 0 blocks")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    split = {"train": parse_actors(args.train_actors), "val": parse_actors(args.val_actors),
             "test": parse_actors(args.test_actors)}
    if set(split["train"]) & (set(split["val"]) | set(split["test"])) or set(split["val"]) & set(split["test"]):
        raise SystemExit(f"actor sets overlap: {split}")
    data = load_ravdess(args.data, args.cache)
    sets = {k: Clips(data, v) for k, v in split.items()}
    if args.esd:
        sets["train"].extend(Clips(load_esd(args.esd_data, args.cache), [ESD_ACTOR]))
    log.info("clips: %s", {k: len(v) for k, v in sets.items()})

    started = time.perf_counter()
    model, best, history = train(args, sets["train"], sets["val"])
    encoder, head, cfg = model["encoder"], model["head"], model["config"]
    seconds = time.perf_counter() - started

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    state = {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()},
             **{f"head.{k}": v for k, v in head.state_dict().items()}}
    results: dict = {}
    for name in ("val", "test"):
        logits = clip_logits(torch_encoder(encoder), head, sets[name])
        pred = logits.argmax(1)
        results[name] = {"accuracy": accuracy(logits, sets[name].labels), "n": len(sets[name]),
                         "metrics": classification_metrics(sets[name].labels, pred, CLASSES)}
        write_eval_report({"a": (sets[name].labels, pred)}, CLASSES, out / f"report-{name}",
                          title=f"Starter audio encoder ({ENCODER_NAME}), RAVDESS {name} actors {split[name]}")
    meta = {"epoch": best["epoch"], "split": split, "val_accuracy": results["val"]["accuracy"],
            "test_accuracy": results["test"]["accuracy"],
            "data": "RAVDESS speech (CC BY-NC-SA 4.0), calm -> neutral"
                    + ("; ESD speaker 0020 (research use, non-commercial)" if args.esd else ""),
            "args": {k: str(v) for k, v in vars(args).items()}}
    save_checkpoint(out / "best.safetensors", state, {**cfg.to_dict(), "classes": list(CLASSES)},
                    variant="starter-audio", meta=meta)

    summary = {"encoder": ENCODER_NAME, "config": cfg.to_dict(), "split": split, "best_epoch": best["epoch"],
               "train_seconds": round(seconds, 1), "epochs_run": len(history),
               "parameters": {"encoder": count_parameters(encoder), "head": count_parameters(head)},
               "frames_per_block": num_frames(BLOCK),
               "pytorch": {k: {"accuracy": v["accuracy"], "macro_f1": v["metrics"]["overall"]["macro_f1"],
                               "n": v["n"]} for k, v in results.items()},
               "history": history, "command": " ".join(["python", *sys.argv])}
    if not args.no_export:
        summary["export"] = export(encoder, out, int8=not args.no_int8)
        for kind, path in (("onnx", out / "encoder.onnx"), ("int8", out / "encoder.int8.onnx")):
            if path.is_file():
                enc = ort_encoder(path, args.threads)
                summary[f"onnxruntime_{kind}"] = {
                    name: {"accuracy": accuracy(clip_logits(enc, head, sets[name]), sets[name].labels)}
                    for name in ("val", "test")}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    lines = [f"# Starter audio encoder ({ENCODER_NAME}) on RAVDESS", "",
             f"Split by actor: train {split['train']}, validation {split['val']}, test {split['test']}; "
             f"best epoch {best['epoch']} of {len(history)} ({seconds / 60:.1f} min on {args.threads} threads).", "",
             "| run | validation accuracy | test accuracy |", "|---|---|---|"]
    for key in ("pytorch", "onnxruntime_onnx", "onnxruntime_int8"):
        if key in summary:
            r = summary[key]
            lines.append(f"| {key} | {100 * r['val']['accuracy']:.1f} % | {100 * r['test']['accuracy']:.1f} % |")
    lines += ["", f"Parameters: encoder {summary['parameters']['encoder']:,}, head {summary['parameters']['head']:,}.",
              f"Command: `{summary['command']}`", ""]
    write_text_atomic(out / "summary.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
