"""Write the raw Whisper-base front (edge.starter.whisper_audio) as an audio encoder and probe it (not shipped: the
starter ships it with a trained projection, scripts/train_starter_whisper_audio.py).

    python scripts/make_starter_whisper_audio.py                   # Whisper base from its registry packages
    python scripts/make_starter_whisper_audio.py --model DIR       # any faster-whisper (CTranslate2) model folder

No training: the encoder is the front of Whisper's own (log-mel, two convolutions, the first ``--layers``
transformer layers), frozen.  Writes to ``--out``:

- ``encoder.onnx``: ``waveform`` float32 (batch, 16000) -> ``hidden`` (batch, 49, 512), checked against PyTorch;
- ``probe.json`` / ``probe.md``: how much emotion a linear read-out finds in its frames.  Each RAVDESS clip goes
  through the run path's 1 s blocks (ONNX Runtime), its frames are pooled to mean and standard deviation, and an
  L2-regularised logistic regression learns the 7 classes (calm = neutral): a three-fold actor cross-validation
  inside actors 1-18 (folds 17-18, 15-16, 13-14; the choice of ``--layers`` was made on it), then trained on
  actors 1-16, reported on 17-18 (validation) and once on 19-20 (test).  LFMIM's audio head, not this probe, is
  what the run path uses; the probe says what the frames hold.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from edge.build.export import export_onnx  # noqa: E402
from edge.fileio import write_text_atomic  # noqa: E402
from edge.features.audio_pre import num_frames  # noqa: E402
from edge.starter.whisper_audio import ENCODER_NAME, WhisperAudioEncoder, describe, load_encoder_weights  # noqa: E402

log = logging.getLogger("edge")

BLOCK = 16_000
FOLDS = ((17, 18), (15, 16), (13, 14))
WINDOW = 4 * BLOCK


def resolve(model: str) -> Path:
    from edge.asr.whisper_models import resolve_model

    source = resolve_model(model)
    if source.path is None:
        raise SystemExit(f"--model {model!r} is a hub name; this script reads a local faster-whisper folder or the "
                         "registry package (pip install 'lfmim-edge[whisper]')")
    return Path(source.path)


def pooled_features(session, clips: list[np.ndarray], threads: int) -> np.ndarray:
    """(clips, 2 * dim): mean and standard deviation of each clip's run-path frames (its first 4 s, centred cut)."""
    from train_starter_audio import run_path_blocks

    out = []
    for x in tqdm(clips, desc="encoding clips", unit="clip", mininterval=2.0):
        if x.size > WINDOW:
            x = x[(x.size - WINDOW) // 2:][:WINDOW]
        blocks, lengths = run_path_blocks(x)
        hidden = session.run(["hidden"], {"waveform": blocks})[0]
        frames = np.concatenate([h[:num_frames(int(n))] for h, n in zip(hidden, lengths)])
        out.append(np.concatenate([frames.mean(0), frames.std(0)]))
    return np.asarray(out, np.float32)


def fit_probe(x: np.ndarray, y: np.ndarray, weight_decay: float):
    """Standardised features -> multinomial logistic regression (L-BFGS); returns a predict-logits function."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt, yt = torch.tensor((x - mu) / sd), torch.tensor(y)
    w = torch.zeros(x.shape[1], 7, requires_grad=True)
    b = torch.zeros(7, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + weight_decay * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda z: (torch.tensor((z - mu) / sd) @ w + b).detach().numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="faster-whisper model folder or package:NAME (default: the packaged "
                                               "Whisper base)")
    p.add_argument("--layers", type=int, default=1, help="Whisper encoder layers kept (default 1)")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "cache")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "starter" / "audio-whisper")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="probe's L2 penalty (default 1e-3)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-probe", action="store_true", help="only write encoder.onnx")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    started = time.time()
    model_dir = resolve(args.model)
    encoder = WhisperAudioEncoder(load_encoder_weights(model_dir), args.layers, positions=num_frames(BLOCK) + 1).eval()
    args.out.mkdir(parents=True, exist_ok=True)
    wave = torch.randn(2, BLOCK, generator=torch.Generator().manual_seed(0)) * 0.1
    report = export_onnx(encoder, [wave], args.out / "encoder.onnx", input_names=["waveform"], output_names=["hidden"],
                         dynamic_axes={"waveform": {0: "batch"}, "hidden": {0: "batch"}}, name=ENCODER_NAME,
                         atol=1e-3)
    info = {"model": str(model_dir), **describe(encoder), "onnx": report.to_dict(),
            "size_bytes": (args.out / "encoder.onnx").stat().st_size}
    log.info("wrote %s (%d parameters, %.1f MB)", args.out / "encoder.onnx", info["parameters"], info["size_bytes"] / 1e6)
    if not args.no_probe:
        import onnxruntime as ort
        from train_starter_audio import load_ravdess

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(args.out / "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
        rav = load_ravdess(args.data / "ravdess-speech", args.cache)
        off = rav["offsets"]
        clips = [rav["pcm"][off[i]:off[i + 1]].astype(np.float32) / 32768.0 for i in range(len(rav["labels"]))]
        x, y, actors = pooled_features(session, clips, args.threads), rav["labels"], rav["actors"]
        folds = {}
        for fold in FOLDS:
            val = np.isin(actors, fold)
            tr = (actors <= 18) & ~val
            predict = fit_probe(x[tr], y[tr], args.weight_decay)
            folds[f"{fold[0]}-{fold[1]}"] = float((predict(x[val]).argmax(1) == y[val]).mean())
        predict = fit_probe(x[actors <= 16], y[actors <= 16], args.weight_decay)
        val, test = np.isin(actors, (17, 18)), np.isin(actors, (19, 20))
        info["probe"] = {"folds": folds, "fold_mean": float(np.mean(list(folds.values()))),
                         "valid_17_18": float((predict(x[val]).argmax(1) == y[val]).mean()),
                         "test_19_20": float((predict(x[test]).argmax(1) == y[test]).mean()),
                         "weight_decay": args.weight_decay, "clips": int(len(y))}
    info["seconds"] = round(time.time() - started, 1)
    info["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    write_text_atomic(args.out / "probe.json", json.dumps(info, indent=2) + "\n")
    if "probe" in info:
        pr = info["probe"]
        md = [f"# {ENCODER_NAME}: Whisper base's first {info['layers']} layer(s), linear probe", "",
              "| actors held out | accuracy |", "|---|---|"]
        md += [f"| {k} (fold) | {v:.1%} |" for k, v in pr["folds"].items()]
        md += [f"| fold mean | {pr['fold_mean']:.1%} |", f"| 17-18 (valid, trained on 1-16) | {pr['valid_17_18']:.1%} |",
               f"| 19-20 (test, once) | {pr['test_19_20']:.1%} |", ""]
        write_text_atomic(args.out / "probe.md", "\n".join(md))
        print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
