"""Train the starter profile's vision encoder (edge.starter.vision_model) on FER2013 within a wall-time budget.

    python scripts/train_starter_vision.py                         # 30 min budget, runs/starter/vision/
    python scripts/train_starter_vision.py --minutes 120           # longer budget, same command otherwise
    python scripts/train_starter_vision.py --epochs 40 --minutes 0 # a fixed epoch schedule, no time limit
    python scripts/train_starter_vision.py --init-onnx edge/assets/starter/vision.fp32.onnx --lr 0.02 --minutes 60
                                                                   # continue training the shipped encoder

Reads ``../shared/data/fer2013/{train,publictest}.npz`` (never copy them into the repository).  Holds out 10 % of
train (seeded, stratified) for validation, trains encoder + linear head with SGD (Nesterov momentum) and a one-cycle
schedule (linear warm-up, cosine decay), label smoothing, and augmentation done in torch on whole batches: random
scale / rotation / translation (one affine warp per face, the framing differences between FER2013's loose crops and
the run path's aligned faces), horizontal flips, brightness / contrast / gamma, random erasing.

By default the schedule runs on wall time: the learning rate follows the fraction of ``--minutes`` spent, so it
anneals to zero exactly when the budget ends, whatever the machine's speed (not bit-reproducible; ``--epochs``
gives a step-based schedule).  A checkpoint (``last.pt``: weights, optimiser, epoch, time spent) is written
atomically after every epoch and read back on restart (``--fresh`` ignores it).  The best validation epoch is kept.
Writes to ``--out``:

- ``best.safetensors`` / ``best.json``: encoder (``encoder.*``) and head (``head.*``) weights and their config;
- ``encoder.onnx``: ``faces`` float32 (batch, 3, S, S) ImageNet-normalised RGB -> ``features`` (batch, dim);
- ``report-val/``, ``report-test/``, ``report-test-flip/``: report.json, report.md, confusion_v.png;
- ``summary.json`` / ``summary.md``: accuracies (PyTorch and ONNX Runtime through the run path's preprocessing),
  sizes, epoch times, command.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.build.export import export_onnx  # noqa: E402
from edge.features.vision_pre import normalize_faces  # noqa: E402
from edge.labels import CLASSES  # noqa: E402
from edge.model.checkpoint import save_checkpoint  # noqa: E402
from edge.fileio import atomic_path, write_text_atomic  # noqa: E402
from edge.starter.vision_model import (  # noqa: E402
    ENCODER_NAME, TRAIN_SIZE, EncoderConfig, ExpressionHead, FaceExpressionEncoder, count_parameters, load_trained,
)
from edge.train.reports import write_eval_report  # noqa: E402

log = logging.getLogger("edge")

#: Fraction of the schedule spent warming the learning rate up.
WARMUP = 0.15
#: Augmentation ranges: scale factor, rotation in degrees, translation as a fraction of the side.
SCALE = (0.85, 1.2)
ROTATE_DEG = 12.0
SHIFT = 0.08
EVAL_BATCH = 512


# ---------------------------------------------------------------------------------------------------- data


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise SystemExit(f"{path} not found; pass --data pointing at the shared fer2013 folder")
    with np.load(path) as d:
        classes = [str(c) for c in d["classes"]]
        if tuple(classes) != CLASSES:
            raise SystemExit(f"{path}: classes {classes} are not the canonical {list(CLASSES)}")
        return d["images"], d["labels"].astype(np.int64)


def split_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded (train_idx, val_idx)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in range(len(CLASSES)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(fraction * len(idx)))
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def to_unit(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, 48, 48) -> float32 (N, 1, 48, 48) in [0, 1], channels-last."""
    x = torch.as_tensor(images).to(torch.float32).unsqueeze(1) / 255.0
    return x.contiguous(memory_format=torch.channels_last)


def augment(x: torch.Tensor, gen: torch.Generator, erase: float = 0.5) -> torch.Tensor:
    """Random affine (scale, rotation, shift, flip), photometric jitter and random erasing on grey (B, 1, H, W)."""
    b = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    scale = uniform(*SCALE)
    angle = uniform(-ROTATE_DEG, ROTATE_DEG) * (math.pi / 180.0)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    tx, ty = uniform(-SHIFT, SHIFT) * 2.0, uniform(-SHIFT, SHIFT) * 2.0
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # photometric: contrast around the face mean, brightness, gamma
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = uniform(0.6, 1.4).view(b, 1, 1, 1)
    bright = uniform(-0.15, 0.15).view(b, 1, 1, 1)
    out = ((out - mean) * contrast + mean + bright).clamp(0.0, 1.0)
    gamma = torch.exp(uniform(-0.3, 0.3)).view(b, 1, 1, 1)
    out = out.clamp_min(1e-4) ** gamma
    # random erasing: one rectangle of 4-25 % of the area, filled with noise, on a fraction of the batch
    h, w = x.shape[-2:]
    area = uniform(0.04, 0.25)
    ratio = torch.exp(uniform(math.log(0.5), math.log(2.0)))
    eh = (torch.sqrt(area * ratio) * h).clamp(1, h - 1).long()
    ew = (torch.sqrt(area / ratio) * w).clamp(1, w - 1).long()
    y0 = (torch.rand(b, generator=gen) * (h - eh)).long()
    x0 = (torch.rand(b, generator=gen) * (w - ew)).long()
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    box = ((rows >= y0.view(b, 1, 1)) & (rows < (y0 + eh).view(b, 1, 1))
           & (cols >= x0.view(b, 1, 1)) & (cols < (x0 + ew).view(b, 1, 1)))
    box &= (torch.rand(b, generator=gen) < erase).view(b, 1, 1)
    noise = torch.rand(x.shape, generator=gen)
    out = torch.where(box.unsqueeze(1), noise, out)
    return out.contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------------------ schedule


def lr_at(progress: float, peak: float) -> float:
    """One-cycle: linear warm-up to ``peak`` over WARMUP, then cosine to ~0 at progress 1."""
    p = min(max(progress, 0.0), 1.0)
    if p < WARMUP:
        return peak * (0.04 + 0.96 * p / WARMUP)
    return peak * 0.5 * (1.0 + math.cos(math.pi * (p - WARMUP) / (1.0 - WARMUP)))


# -------------------------------------------------------------------------------------------------- eval


@torch.no_grad()
def logits_of(encoder: FaceExpressionEncoder, head: ExpressionHead, images: np.ndarray, *, flip: bool) -> np.ndarray:
    encoder.eval()
    head.eval()
    out = []
    for i in range(0, len(images), EVAL_BATCH):
        x = to_unit(images[i:i + EVAL_BATCH])
        z = head(encoder.features_from_grey(x))
        if flip:
            z = 0.5 * (z + head(encoder.features_from_grey(torch.flip(x, dims=[3]))))
        out.append(z.numpy())
    return np.concatenate(out)


def grey_to_rgb_faces(images: np.ndarray, size: int) -> np.ndarray:
    """FER grey (N, 48, 48) uint8 -> what the run path feeds: uint8 RGB (N, size, size, 3) resized bilinearly."""
    rgb = np.repeat(images[..., None], 3, axis=-1)
    if size == images.shape[1]:
        return rgb
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def onnx_features(path: Path, images: np.ndarray, size: int, threads: int, *, mirror: bool = False,
                  batch: int = 256) -> np.ndarray:
    """``features`` of the ONNX face encoder at ``path`` for FER grey faces, through the run path's preprocessing
    (RGB uint8 -> normalize_faces -> ONNX Runtime); ``mirror``: of the faces' mirror images."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feats = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        if mirror:
            x = np.ascontiguousarray(x[:, :, ::-1])
        faces = normalize_faces(grey_to_rgb_faces(x, size), size=size)
        feats.append(session.run(["features"], {"faces": faces})[0])
    return np.concatenate(feats)


def onnx_accuracy(path: Path, head: ExpressionHead, images: np.ndarray, labels: np.ndarray, size: int,
                  threads: int) -> float:
    """Public-test accuracy through the run path: RGB uint8 -> normalize_faces -> ONNX Runtime -> head."""
    feats = onnx_features(path, images, size, threads)
    with torch.no_grad():
        logits = head.eval()(torch.from_numpy(feats)).numpy()
    return float((logits.argmax(1) == labels).mean())


# ------------------------------------------------------------------------------------------------- train


def save_last(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = load_npz(Path(args.data) / "train.npz")
    test_images, test_labels = load_npz(Path(args.data) / "publictest.npz")
    tr_idx, va_idx = split_validation(labels, args.val_fraction, args.split_seed)
    if args.limit:
        tr_idx, va_idx = tr_idx[: args.limit], va_idx[: max(args.limit // 8, 64)]
        test_images, test_labels = test_images[: max(args.limit // 8, 64)], test_labels[: max(args.limit // 8, 64)]
    train_x = torch.from_numpy(images[tr_idx])
    train_y = torch.from_numpy(labels[tr_idx])
    val_images, val_labels = images[va_idx], labels[va_idx]
    log.info("FER2013: %d train, %d validation, %d public test", len(tr_idx), len(va_idx), len(test_labels))

    config = EncoderConfig(face_size=args.face_size, stem_stride=args.stem_stride, first_stride=args.first_stride,
                           widths=tuple(args.widths), layers=tuple(args.layers))
    encoder = FaceExpressionEncoder(config).to(memory_format=torch.channels_last)
    head = ExpressionHead(config.dim, len(CLASSES), dropout=args.dropout)
    decay = [p for n, p in [*encoder.named_parameters(), *head.named_parameters()] if p.ndim > 1]
    no_decay = [p for n, p in [*encoder.named_parameters(), *head.named_parameters()] if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if args.init_onnx and (args.fresh or not (out / "last.pt").is_file()):
        from edge.starter.vision_warm import fit_head, warm_start

        warm_start(encoder, args.init_onnx, to_unit(train_x[:2048]))
        with torch.no_grad():
            encoder.eval()
            feats = torch.cat([encoder.features_from_grey(to_unit(train_x[i:i + EVAL_BATCH]))
                               for i in range(0, len(train_x), EVAL_BATCH)])
        head = fit_head(feats, train_y, len(CLASSES), dropout=args.dropout)
        warm_acc = float((logits_of(encoder, head, val_images, flip=False).argmax(1) == val_labels).mean())
        log.info("warm start from %s: validation accuracy %.4f with a linear head fitted on the frozen features",
                 args.init_onnx, warm_acc)
        decay = [p for n, p in [*encoder.named_parameters(), *head.named_parameters()] if p.ndim > 1]
        no_decay = [p for n, p in [*encoder.named_parameters(), *head.named_parameters()] if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True)
    budget_s = args.minutes * 60.0
    steps_per_epoch = len(tr_idx) // args.batch
    state = {"epoch": 0, "spent_s": 0.0, "best_acc": -1.0, "best_epoch": 0, "history": []}
    last = out / "last.pt"
    if last.is_file() and not args.fresh:
        saved = torch.load(last, map_location="cpu", weights_only=True)
        if saved["config"] != config.to_dict():
            raise SystemExit(f"{last} was written with config {saved['config']}; pass --fresh or the same flags")
        encoder.load_state_dict(saved["encoder"])
        head.load_state_dict(saved["head"])
        opt.load_state_dict(saved["optimizer"])
        state = {k: saved[k] for k in state}
        log.info("resumed from %s after epoch %d (%.1f min spent)", last, state["epoch"], state["spent_s"] / 60)

    def progress(epoch: int, step: int, spent: float) -> float:
        if args.epochs:
            return (epoch * steps_per_epoch + step) / (args.epochs * steps_per_epoch)
        return spent / budget_s

    def out_of_time(spent: float) -> bool:
        return budget_s > 0 and spent >= budget_s

    while not out_of_time(state["spent_s"]) and not (args.epochs and state["epoch"] >= args.epochs):
        epoch = state["epoch"]
        gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        order = torch.randperm(len(tr_idx), generator=gen)
        encoder.train()
        head.train()
        start, t0 = state["spent_s"], time.perf_counter()
        seen, correct, total_loss, step = 0, 0, 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}", disable=args.no_progress, leave=False)
        for step in bar:
            spent = start + time.perf_counter() - t0
            if out_of_time(spent):
                break
            lr = lr_at(progress(epoch, step, spent), args.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[step * args.batch:(step + 1) * args.batch]
            x = augment(to_unit(train_x[idx]), gen)
            y = train_y[idx]
            logits = head(encoder.features_from_grey(x))
            loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            total_loss += float(loss.detach()) * len(y)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}", lr=f"{lr:.4f}")
        bar.close()
        train_s = time.perf_counter() - t0
        val_acc = float((logits_of(encoder, head, val_images, flip=False).argmax(1) == val_labels).mean())
        state["spent_s"] = start + time.perf_counter() - t0
        state["epoch"] = epoch + 1
        record = {"epoch": epoch + 1, "steps": seen // args.batch, "train_loss": total_loss / max(seen, 1),
                  "train_acc": correct / max(seen, 1), "val_acc": val_acc, "train_s": round(train_s, 1),
                  "lr_end": lr_at(progress(epoch, step, state["spent_s"]), args.lr)}
        state["history"].append(record)
        log.info("epoch %d: %d steps in %.0f s, train loss %.3f acc %.3f, val acc %.4f", epoch + 1, record["steps"],
                 train_s, record["train_loss"], record["train_acc"], val_acc)
        if val_acc > state["best_acc"]:
            state["best_acc"], state["best_epoch"] = val_acc, epoch + 1
            weights = {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()},
                       **{f"head.{k}": v for k, v in head.state_dict().items()}}
            save_checkpoint(out / "best.safetensors", weights, {"encoder": ENCODER_NAME, **config.to_dict(),
                            "num_classes": len(CLASSES), "classes": list(CLASSES)}, variant="starter-vision",
                            meta={"epoch": epoch + 1, "val_acc": val_acc})
        save_last(last, {"config": config.to_dict(), "encoder": encoder.state_dict(), "head": head.state_dict(),
                         "optimizer": opt.state_dict(), **state})
    finish(args, out, config, state, val_images, val_labels, test_images, test_labels)


def finish(args: argparse.Namespace, out: Path, config: EncoderConfig, state: dict, val_images: np.ndarray,
           val_labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray) -> None:
    encoder, head = load_trained(str(out / "best.safetensors"))
    results = {}
    for name, imgs, labs, flip in [("val", val_images, val_labels, False), ("val-flip", val_images, val_labels, True),
                                   ("test", test_images, test_labels, False),
                                   ("test-flip", test_images, test_labels, True)]:
        pred = logits_of(encoder, head, imgs, flip=flip).argmax(1)
        results[name] = float((pred == labs).mean())
        if name != "val-flip":
            split = "public test" if "test" in name else "validation"
            title = f"Starter vision encoder ({ENCODER_NAME}) on FER2013 {split}"
            write_eval_report({"v": (labs, pred)}, CLASSES, out / f"report-{name}",
                              title=title + (" with flip TTA" if flip else ""))
    S = config.face_size
    example = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(0))
    report = export_onnx(encoder, [example], out / "encoder.onnx", input_names=["faces"], output_names=["features"],
                         dynamic_axes={"faces": {0: "batch"}, "features": {0: "batch"}}, name="resnet18")
    results["test-onnx"] = onnx_accuracy(out / "encoder.onnx", head, test_images, test_labels, S, args.threads)
    full = max((h["steps"] for h in state["history"]), default=0)
    epoch_times = [h["train_s"] for h in state["history"] if h["steps"] == full]  # complete epochs only
    summary = {
        "encoder": ENCODER_NAME, "config": config.to_dict(), "dim": config.dim, "face_size": S,
        "parameters_encoder": count_parameters(encoder), "parameters_head": count_parameters(head),
        "onnx_bytes": report.size_bytes, "onnx_max_abs_diff": report.max_abs_diff,
        "epochs": state["epoch"], "best_epoch": state["best_epoch"], "minutes_spent": round(state["spent_s"] / 60, 2),
        "epoch_seconds": epoch_times, "accuracy": results, "history": state["history"],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "threads": args.threads,
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# Starter vision encoder `{ENCODER_NAME}` (FER2013)", "",
        f"- command: `{summary['command']}`",
        f"- encoder: {summary['parameters_encoder']:,} parameters, ONNX {report.size_bytes:,} bytes, input faces "
        f"(batch, 3, {S}, {S}) -> features (batch, {config.dim}); parity max abs diff {report.max_abs_diff:.2g}",
        f"- trained {state['epoch']} epochs in {summary['minutes_spent']} min ({args.threads} threads); "
        f"best validation epoch {state['best_epoch']}",
        f"- validation accuracy {100 * results['val']:.2f} % (flip TTA {100 * results['val-flip']:.2f} %)",
        f"- public test accuracy {100 * results['test']:.2f} % (flip TTA {100 * results['test-flip']:.2f} %); "
        f"ONNX Runtime through normalize_faces: {100 * results['test-onnx']:.2f} %",
        "", "| epoch | steps | s | train loss | train acc | val acc |", "|---:|---:|---:|---:|---:|---:|",
    ]
    for h in state["history"]:
        lines.append(f"| {h['epoch']} | {h['steps']} | {h['train_s']:.0f} | {h['train_loss']:.3f} | "
                     f"{100 * h['train_acc']:.2f} | {100 * h['val_acc']:.2f} |")
    write_text_atomic(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "fer2013"),
                   help="folder with train.npz and publictest.npz")
    p.add_argument("--out", default=str(ROOT / "runs" / "starter" / "vision"))
    p.add_argument("--minutes", type=float, default=30.0, help="wall-time budget of training (0: none; needs --epochs)")
    p.add_argument("--epochs", type=int, default=0, help="fixed number of epochs (step-based schedule); 0: time-based")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate (SGD, Nesterov momentum 0.9)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--face-size", type=int, default=TRAIN_SIZE, help="S of the exported input faces (48 or 64)")
    p.add_argument("--stem-stride", type=int, default=2)
    p.add_argument("--first-stride", type=int, default=1)
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--layers", type=int, nargs="+", default=[1, 1, 1, 1],
                   help="BasicBlocks per stage ([1 1 1 1]: ResNet-10 layout, what 30 min on 2 shared cores allows; "
                        "[2 2 2 2]: ResNet-18 layout, about twice the compute)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and augmentation")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the held-out tenth (keep 0: the composite store and the calibration read that split)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads; on a machine already busy with other jobs 1 can be several times faster")
    p.add_argument("--limit", type=int, default=0, help="use only this many training faces (smoke tests)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing last.pt")
    p.add_argument("--init-onnx", default=None,
                   help="start from this exported encoder (e.g. the shipped vision.fp32.onnx) with a linear head "
                        "fitted on its frozen features, instead of from random weights (same --widths/--layers)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.minutes <= 0 and not args.epochs:
        p.error("--minutes 0 needs --epochs")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    train(args)


if __name__ == "__main__":
    main()
