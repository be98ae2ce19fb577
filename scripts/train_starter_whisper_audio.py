#!/usr/bin/env python
"""Train a frame projection on Whisper base's frozen front: the starter's audio encoder (shipped since 2026-12-04).

    python scripts/train_starter_whisper_audio.py                       # RAVDESS 1-16 (+ --esd) train, 17-18 select
    python scripts/train_starter_whisper_audio.py --esd --speeds 0.9 1.1 --hidden 256 --out runs/starter/audio-wp

The encoder is :class:`edge.starter.whisper_audio.WhisperProjectedEncoder`: Whisper base's log-mel, convolutions and
first ``--layers`` layer(s), frozen, then a trained per-frame projection from 512 to ``--dim`` (LayerNorm, then a
linear map or, with ``--hidden``, a GELU MLP).  LFMIM trained on the raw 512-wide frames overfits the 16 training
actors; the projection is trained on emotion first, with augmentation, so LFMIM reads ``--dim`` frames that carry it.

Training data: every training clip (RAVDESS ``--train-actors``, with ``--esd`` ESD speaker 0020 too) in each of its
versions (itself and one per ``--speeds`` factor), placed ``--offsets`` times after a random lead of silence, with a
random gain (-12..+6 dB) and half the time white noise (-75..-35 dBFS) over the whole stream, then cut into the run
path's consecutive 1 s blocks.  The frozen front encodes each block once (cached under ``--cache``, keyed by the
model and these settings); training draws blocks with the clip's label, masks a random span of up to
``--time-mask`` frames (SpecAugment's time masking) and drops input channels (``--input-dropout``).  The head is the
log-mel CNN's (:class:`edge.starter.audio_model.AudioEmotionHead`): attention pooling, then linear.

Evaluation as the run path sees a clip (``train_starter_audio.clip_logits``): consecutive 1 s blocks, zero-padded
tail, the frames over real audio, logits averaged over the blocks.  The best epoch on ``--val-actors`` is kept; the
test actors are scored only with ``--report-test`` (once, for the candidate chosen on validation).  Writes to
``--out``: ``encoder.onnx`` (``waveform`` (B, 16000) -> ``hidden`` (B, 49, dim), checked against PyTorch),
``best.safetensors`` (projection and head), ``summary.json`` / ``summary.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from edge.build.export import export_onnx  # noqa: E402
from edge.features.audio_pre import num_frames  # noqa: E402
from edge.fileio import write_text_atomic  # noqa: E402
from edge.labels import CLASSES  # noqa: E402
from edge.model.checkpoint import save_checkpoint  # noqa: E402
from edge.starter.audio_model import AudioEmotionHead, frame_mask  # noqa: E402
from edge.starter.whisper_audio import (  # noqa: E402
    PROJECTED_NAME, FrameProjection, WhisperAudioEncoder, WhisperProjectedEncoder, count_parameters,
    load_encoder_weights,
)

log = logging.getLogger("edge")
BLOCK = 16_000
FRAMES = num_frames(BLOCK)


def augmented_blocks(waves: list[np.ndarray], labels: np.ndarray, *, speeds: list[float], offsets: int,
                     rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Every clip version placed ``offsets`` times in a stream of whole 1 s blocks: (blocks per placement, labels)."""
    from train_starter_audio import speed_perturb

    streams, out_labels = [], []
    for x, y in zip(waves, labels):
        for version in [x, *(speed_perturb(x, f) for f in speeds)]:
            for _ in range(offsets):
                lead = int(rng.integers(0, BLOCK))
                n = math.ceil((lead + version.size) / BLOCK) * BLOCK
                stream = np.zeros(n, np.float32)
                stream[lead:lead + version.size] = version * 10.0 ** (rng.uniform(-12.0, 6.0) / 20.0)
                if rng.random() < 0.5:
                    stream += rng.standard_normal(n).astype(np.float32) * 10.0 ** (rng.uniform(-75.0, -35.0) / 20.0)
                streams.append(np.clip(stream, -1.0, 1.0).reshape(-1, BLOCK))
                out_labels.append(y)
    return streams, np.asarray(out_labels, np.int64)


@torch.no_grad()
def encode_blocks(front: WhisperAudioEncoder, blocks: np.ndarray, *, batch: int = 64, desc: str = "encoding",
                  progress: bool = True) -> np.ndarray:
    """(N, 16000) float32 -> (N, FRAMES, width) float16 frames of the frozen front."""
    out = []
    for i in tqdm(range(0, len(blocks), batch), desc=desc, unit="batch", disable=not progress, mininterval=2.0):
        out.append(front(torch.from_numpy(blocks[i:i + batch])).numpy().astype(np.float16))
    return np.concatenate(out)


def cached_frames(path: Path, make) -> dict[str, np.ndarray]:
    if path.is_file():
        with np.load(path) as z:
            log.info("cached frames %s", path.name)
            return {k: z[k] for k in z.files}
    data = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, path)
    return data


def train_frames(front, clips, args, key: str) -> dict[str, np.ndarray]:
    def make():
        rng = np.random.default_rng(args.seed)
        streams, labels = augmented_blocks(clips.waves, clips.labels, speeds=args.speeds, offsets=args.offsets,
                                           rng=rng)
        owner = np.concatenate([np.full(len(s), i) for i, s in enumerate(streams)])
        frames = encode_blocks(front, np.concatenate(streams), desc="train blocks", progress=not args.no_progress)
        return {"frames": frames, "labels": labels[owner]}
    return cached_frames(args.cache / f"whisper-frames-train-{key}.npz", make)


def eval_frames(front, clips, args, name: str, key: str) -> dict[str, np.ndarray]:
    """A clip's run-path blocks (train_starter_audio.clip_blocks): frames, real lengths, owning clip."""
    from train_starter_audio import clip_blocks

    def make():
        blocks, lengths, owner = clip_blocks(clips.waves)
        return {"frames": encode_blocks(front, blocks, desc=f"{name} blocks", progress=not args.no_progress),
                "lengths": lengths, "owner": owner}
    return cached_frames(args.cache / f"whisper-frames-{name}-{key}.npz", make)


@torch.no_grad()
def clip_logits(projection: FrameProjection, head: AudioEmotionHead, ev: dict[str, np.ndarray], n_clips: int,
                batch: int = 512) -> np.ndarray:
    projection.eval()
    head.eval()
    logits = []
    for i in range(0, len(ev["frames"]), batch):
        hidden = projection(torch.from_numpy(ev["frames"][i:i + batch].astype(np.float32)))
        mask = frame_mask(torch.from_numpy(ev["lengths"][i:i + batch]), hidden.shape[1])
        logits.append(head(hidden, mask).numpy())
    block = np.concatenate(logits)
    out = np.zeros((n_clips, block.shape[1]))
    np.add.at(out, ev["owner"], block)
    return out / np.bincount(ev["owner"], minlength=n_clips)[:, None]


def train(args, frames: dict[str, np.ndarray], val: dict[str, np.ndarray], val_labels: np.ndarray, width: int):
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    projection = FrameProjection(width, args.dim, args.hidden, dropout=args.input_dropout)
    head = AudioEmotionHead(args.dim, len(CLASSES))
    params = [*projection.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    n = len(frames["labels"])
    steps = math.ceil(n / args.batch)
    total = steps * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / steps) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    best, best_state, history = (-1.0, -math.inf), {}, []
    start = time.perf_counter()
    bar = tqdm(range(1, args.epochs + 1), desc="epochs", unit="epoch", disable=args.no_progress)
    for epoch in bar:
        projection.train()
        head.train()
        order = rng.permutation(n)
        losses = []
        for s in range(steps):
            idx = np.sort(order[s * args.batch:(s + 1) * args.batch])
            x = torch.from_numpy(frames["frames"][idx].astype(np.float32))
            if args.time_mask:
                span = rng.integers(0, args.time_mask + 1, len(idx))
                first = rng.integers(0, FRAMES, len(idx))
                t = torch.arange(FRAMES)[None, :]
                cut = (t >= torch.from_numpy(first)[:, None]) & (t < torch.from_numpy(first + span)[:, None])
                x = x.masked_fill(cut[..., None], 0.0)
            loss = loss_fn(head(projection(x)), torch.from_numpy(frames["labels"][idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        logits = clip_logits(projection, head, val, len(val_labels))
        acc = float((logits.argmax(1) == val_labels).mean())
        vloss = float(nn.functional.cross_entropy(torch.from_numpy(logits).float(), torch.from_numpy(val_labels)))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_acc": acc, "val_loss": vloss,
                        "seconds": round(time.perf_counter() - start, 1)})
        if (acc, -vloss) > best:
            best = (acc, -vloss)
            best_state = {"projection": {k: v.clone() for k, v in projection.state_dict().items()},
                          "head": {k: v.clone() for k, v in head.state_dict().items()}, "epoch": epoch}
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val=f"{acc:.3f}", best=f"{best[0]:.3f}")
        log.info("epoch %d: train loss %.4f, val acc %.4f, val loss %.4f", epoch, np.mean(losses), acc, vloss)
    projection.load_state_dict(best_state["projection"])
    head.load_state_dict(best_state["head"])
    return projection.eval(), head.eval(), best_state["epoch"], history


def main(argv: list[str] | None = None) -> int:
    import train_starter_audio as A
    from make_starter_whisper_audio import resolve

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="faster-whisper model folder or package:NAME (default: the packaged "
                                               "Whisper base)")
    p.add_argument("--layers", type=int, default=1, help="Whisper encoder layers kept, frozen (default 1)")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ravdess-speech")
    p.add_argument("--esd", action="store_true", help="add ESD speaker 0020's 1,000 clips to the training set")
    p.add_argument("--esd-data", type=Path, default=ROOT.parent / "shared" / "data" / "esd-0020")
    p.add_argument("--train-actors", default="1-16")
    p.add_argument("--val-actors", default="17-18")
    p.add_argument("--test-actors", default="19-20")
    p.add_argument("--speeds", type=float, nargs="*", default=[0.9, 1.1], help="speed-perturbed copies")
    p.add_argument("--offsets", type=int, default=2, help="random placements of every clip version in the stream")
    p.add_argument("--dim", type=int, default=128, help="frame width LFMIM reads (default 128)")
    p.add_argument("--hidden", type=int, default=0, help="MLP hidden width of the projection (0: linear)")
    p.add_argument("--input-dropout", type=float, default=0.2)
    p.add_argument("--time-mask", type=int, default=10, help="longest masked span of frames (0: none)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report-test", action="store_true", help="score the test actors too (once, for the candidate)")
    p.add_argument("--score", type=Path, default=None, metavar="DIR",
                   help="train nothing: score DIR's encoder.onnx + best.safetensors head on --val-actors and "
                        "--test-actors through ONNX Runtime (the run path's blocks), into DIR/score.json")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "cache")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "starter" / "audio-whisper-proj")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.dim < 1 or args.hidden < 0 or args.offsets < 1 or not 0.0 <= args.input_dropout < 1.0:
        p.error("expected --dim >= 1, --hidden >= 0, --offsets >= 1 and --input-dropout in [0, 1)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    if args.score is not None:
        return score(args)
    started = time.perf_counter()
    model_dir = resolve(args.model)
    front = WhisperAudioEncoder(load_encoder_weights(model_dir), args.layers, positions=FRAMES + 1).eval()
    split = {k: A.parse_actors(getattr(args, f"{k}_actors")) for k in ("train", "val", "test")}
    if set(split["train"]) & (set(split["val"]) | set(split["test"])) or set(split["val"]) & set(split["test"]):
        raise SystemExit(f"actor sets overlap: {split}")
    data = A.load_ravdess(args.data, args.cache)
    sets = {k: A.Clips(data, v) for k, v in split.items()}
    if args.esd:
        sets["train"].extend(A.Clips(A.load_esd(args.esd_data, args.cache, progress=not args.no_progress),
                                     [A.ESD_ACTOR]))
    weights_key = hashlib.sha256((model_dir / "model.bin").read_bytes()[:1 << 20]).hexdigest()[:12]
    base = f"{weights_key}-l{args.layers}"
    train_key = hashlib.sha256(json.dumps([base, split["train"], args.esd, args.speeds, args.offsets, args.seed,
                                           len(sets["train"])]).encode()).hexdigest()[:12]
    frames = train_frames(front, sets["train"], args, train_key)
    log.info("train: %d clips -> %d blocks", len(sets["train"]), len(frames["labels"]))
    evals = {k: eval_frames(front, sets[k], args, f"{k}{split[k][0]}-{split[k][-1]}", base)
             for k in (("val", "test") if args.report_test else ("val",))}
    projection, head, epoch, history = train(args, frames, evals["val"], sets["val"].labels, front.dim)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    encoder = WhisperProjectedEncoder(front, projection).eval()
    wave = torch.randn(2, BLOCK, generator=torch.Generator().manual_seed(0)) * 0.1
    report = export_onnx(encoder, [wave], out / "encoder.onnx", input_names=["waveform"], output_names=["hidden"],
                         dynamic_axes={"waveform": {0: "batch"}, "hidden": {0: "batch"}}, name=PROJECTED_NAME,
                         atol=1e-3)
    results = {}
    for k, ev in evals.items():
        logits = clip_logits(projection, head, ev, len(sets[k]))
        results[k] = {"accuracy": float((logits.argmax(1) == sets[k].labels).mean()), "clips": len(sets[k])}
    ort_acc = A.accuracy(A.clip_logits(A.ort_encoder(out / "encoder.onnx", args.threads), head, sets["val"]),
                         sets["val"].labels)
    config = {"encoder": PROJECTED_NAME, "layers": args.layers, "width": front.dim, "dim": args.dim,
              "hidden": args.hidden, "classes": list(CLASSES)}
    state = {**{f"projection.{k}": v for k, v in projection.state_dict().items()},
             **{f"head.{k}": v for k, v in head.state_dict().items()}}
    meta = {"epoch": epoch, "split": split, "results": results,
            "data": "RAVDESS speech (CC BY-NC-SA 4.0), calm -> neutral"
                    + ("; ESD speaker 0020 (research use, non-commercial)" if args.esd else ""),
            "whisper": str(model_dir), "args": {k: str(v) for k, v in vars(args).items()}}
    save_checkpoint(out / "best.safetensors", state, config, variant="starter-audio-whisper", meta=meta)
    summary = {**config, "best_epoch": epoch, "split": split, "train_blocks": int(len(frames["labels"])),
               "pytorch": results, "onnxruntime_val_accuracy": ort_acc, "onnx": report.to_dict(),
               "parameters": {"front": count_parameters(front), "projection": count_parameters(projection),
                              "head": count_parameters(head)},
               "size_bytes": (out / "encoder.onnx").stat().st_size, "history": history,
               "seconds": round(time.perf_counter() - started, 1),
               "command": " ".join(["python", Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    lines = [f"# {PROJECTED_NAME}: Whisper base front + trained projection, RAVDESS", "",
             f"Train actors {split['train']}" + (" + ESD 0020" if args.esd else "")
             + f", best epoch {epoch} on validation actors {split['val']}.", "",
             "| actors | accuracy |", "|---|---|"]
    lines += [f"| {k} {split[k][0]}-{split[k][-1]} | {v['accuracy']:.1%} |" for k, v in results.items()]
    lines += [f"| val, ONNX Runtime | {ort_acc:.1%} |", "", f"Command: `{summary['command']}`", ""]
    write_text_atomic(out / "summary.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


def score(args) -> int:
    """``--score DIR``: the trained encoder (ONNX Runtime) and head on the validation and test actors."""
    import train_starter_audio as A

    from edge.model.checkpoint import load_checkpoint

    onnx_path, ckpt_path = args.score / "encoder.onnx", args.score / "best.safetensors"
    for path in (onnx_path, ckpt_path):
        if not path.is_file():
            raise SystemExit(f"{path} not found: --score takes a folder this script wrote (encoder.onnx, best.safetensors)")
    ckpt = load_checkpoint(ckpt_path)
    if ckpt.variant != "starter-audio-whisper":
        raise SystemExit(f"{ckpt_path} is a {ckpt.variant!r} checkpoint, not this script's (starter-audio-whisper)")
    head = AudioEmotionHead(int(ckpt.config["dim"]), len(CLASSES))
    head.load_state_dict({k[len("head."):]: v for k, v in ckpt.state.items() if k.startswith("head.")})
    data = A.load_ravdess(args.data, args.cache)
    encode = A.ort_encoder(onnx_path, args.threads)
    out = {"encoder": str(onnx_path), "selected_epoch": ckpt.meta.get("epoch"), "trained_on": ckpt.meta.get("split")}
    for name in ("val", "test"):
        actors = A.parse_actors(getattr(args, f"{name}_actors"))
        clips = A.Clips(data, actors)
        out[name] = {"actors": actors, "clips": len(clips),
                     "accuracy": A.accuracy(A.clip_logits(encode, head, clips), clips.labels)}
    write_text_atomic(args.score / "score.json", json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
