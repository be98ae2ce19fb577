"""edge-extract: labelled clips -> a feature store, through the run path's preprocessing and runners.

Every clip goes through exactly what the live loop runs (a build's runners opened with ``open_engines`` and
:class:`edge.features.extractors.Extractors`), so the features ``edge-train`` learns from equal the features the
deployed model sees.  Extraction resumes: clips already in the store are skipped, so an interrupted run is
simply run again.  A clip that cannot be read is logged and listed in ``OUT/extract-errors.jsonl`` (one JSON
object a line) and the other clips go on; ``OUT/extract-clips.jsonl`` records every written clip (streams found,
faces found, seconds).  Exit status: 0 when every clip is in the store, 1 when some failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TextIO

from edge.cli._common import run_main, setup_logging
from edge.errors import DataError, EdgeError
from edge.labels import CLASSES, VOCABULARIES

log = logging.getLogger("edge")

ERRORS_FILE = "extract-errors.jsonl"
CLIPS_FILE = "extract-clips.jsonl"
#: Samples per shard: a killed run (not Ctrl-C, which flushes) loses at most this many clips minus one.
SHARD_SIZE = 64


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-extract",
        description="Extract text, audio and vision features of labelled clips into a feature store with the "
                    "run path's preprocessing and a build's runners (so training features equal deployment "
                    "features). The manifest is a CSV with a 'path' column (a video with sound, an audio file or "
                    "a silent video) and optional 'id', 'split', 'transcript' and labels ('label_text', "
                    "'label_audio', 'label_vision', 'label_multimodal', or one 'label' for all four; empty = -1). "
                    "The transcript is the text modality (empty: the tokenizer's empty sequence); live speech "
                    "recognition arrives with the live loop. Re-running continues an interrupted extraction.",
        epilog="Example: edge-build --profile paper --precision fp32 && "
               "edge-extract --manifest clips.csv --out runs/store --profile paper",
    )
    p.add_argument("--manifest", required=True, help="clip manifest (CSV)")
    p.add_argument("--out", required=True, help="feature store folder (created, or continued when it exists)")
    p.add_argument("--profile", default="paper", help="shipped profile name or TOML file (default: paper)")
    p.add_argument("--target", default="cpu", choices=("cpu", "gpu"), help="which build to use (default: cpu)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--engines-root", default="engines",
                       help="folder of builds; the build is ROOT/<profile>/<target> (default: engines)")
    where.add_argument("--engines", default=None, metavar="DIR", help="the build folder itself")
    p.add_argument("--vocabulary", default="canonical", choices=sorted(VOCABULARIES),
                   help="label names of the manifest (default: canonical)")
    p.add_argument("--media-root", default=None, help="folder relative media paths start at (default: the "
                                                       "manifest's folder)")
    p.add_argument("--split-column", default="split", help="manifest column naming each clip's split "
                                                           "(default: split; absent or empty: train)")
    p.add_argument("--shard-size", type=int, default=SHARD_SIZE,
                   help=f"clips per store shard; a killed run loses at most the unflushed ones (default: {SHARD_SIZE})")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per network")
    p.add_argument("--check", action="store_true", help="only validate the manifest (files exist, labels map) "
                                                        "and print what would be done")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


def _stored_ids(out: Path) -> dict[str, set[str]]:
    """Ids already in the store at ``out`` per split (empty when there is no store yet)."""
    from edge.train.store import MANIFEST, FeatureStore

    if not (out / MANIFEST).is_file():
        return {}
    store = FeatureStore(out)
    stored = {}
    for name in store.splits:
        try:
            stored[name] = set(store.split(name).ids)
        except DataError:  # a split listed without shards
            stored[name] = set()
    return stored


def _check(args: argparse.Namespace, clips: list, profile: Any) -> int:
    """--check: print what would be done; 1 when media files are missing."""
    from edge.train.clips import missing_media

    out = Path(args.out)
    stored = _stored_ids(out)
    skip = [c for c in clips if c.id in stored.get(c.split, ())]
    missing = missing_media(clips)
    splits = Counter(c.split for c in clips)
    fused = Counter(CLASSES[c.labels[3]] if c.labels[3] >= 0 else "(none)" for c in clips)
    print(f"{args.manifest}: {len(clips)} clips ({', '.join(f'{s}: {n}' for s, n in sorted(splits.items()))}); "
          f"multimodal labels: {', '.join(f'{k} {v}' for k, v in sorted(fused.items()))}")
    print(f"would extract {len(clips) - len(skip)} clips with profile {profile.name!r} into {out}"
          + (f"; {len(skip)} already stored would be skipped" if skip else ""))
    for clip in missing:
        print(f"missing media: {clip.path} ({clip.source})")
    print("manifest OK" if not missing else f"{len(missing)} media files are missing")
    return 1 if missing else 0


def _write_line(fh: TextIO, record: dict[str, Any]) -> None:
    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    fh.flush()


class _Tally:
    """Counts and timings of one run, for the progress bar and the summary."""

    def __init__(self) -> None:
        self.written = self.skipped = self.failed = 0
        self.seconds = 0.0
        self.faces: list[float] = []  # faces found per clip with video
        self.sampled: list[int] = []

    def postfix(self) -> dict[str, int]:
        return {"written": self.written, "skipped": self.skipped, "failed": self.failed}

    def summary(self, out: Path) -> str:
        lines = [f"edge-extract: {self.written} clips written, {self.skipped} skipped (already in the store), "
                 f"{self.failed} failed; store: {out}"]
        if self.faces:
            mean = sum(self.faces) / len(self.faces)
            lines.append(f"faces found in {mean:.1f} of {max(self.sampled)} sampled frames per clip on average "
                         f"({len(self.faces)} clips with video)")
        if self.written:
            lines.append(f"{self.seconds / self.written:.2f} s per clip ({self.seconds:.1f} s in all)")
        if self.failed:
            lines.append(f"failed clips are listed in {out / ERRORS_FILE}")
        return "\n".join(lines)


def _extract_all(args: argparse.Namespace, clips: list, profile: Any) -> _Tally:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from edge.features.extractors import Extractors
    from edge.runtime.engines import open_engines
    from edge.train.clips import timed_extract
    from edge.train.store_writer import FeatureStoreWriter

    out = Path(args.out)
    tally = _Tally()
    with open_engines(profile, target=args.target, root=args.engines_root, directory=args.engines,
                      threads=args.threads) as engines, \
            FeatureStoreWriter(out, profile.lfmim, classes=profile.classes, shard_size=args.shard_size,
                               resume=True) as writer, \
            open(out / ERRORS_FILE, "w", encoding="utf-8") as errors, \
            open(out / CLIPS_FILE, "a", encoding="utf-8") as written, \
            (nullcontext() if args.no_progress or args.quiet else logging_redirect_tqdm()):
        extractors = Extractors(engines)
        bar = tqdm(clips, desc="extract", unit="clip", disable=args.no_progress or args.quiet)
        for clip in bar:
            if writer.has(clip.split, clip.id):
                tally.skipped += 1
                bar.set_postfix(tally.postfix(), refresh=False)
                continue
            try:
                features, seconds = timed_extract(extractors, clip)
                writer.add(clip.split, clip.id, features.text, features.audio, features.vision, clip.labels)
            except (EdgeError, OSError) as exc:
                _fail(errors, clip, exc, tally)
            except Exception as exc:  # noqa: BLE001 - one bad clip must not stop thousands; logged as a bug
                log.debug("unexpected error on %s", clip.path, exc_info=True)
                _fail(errors, clip, exc, tally, bug=True)
            else:
                tally.written += 1
                tally.seconds += seconds
                if features.has_video:
                    tally.faces.append(features.faces)
                    tally.sampled.append(features.sampled)
                if not (features.has_audio and features.has_video):
                    log.info("%s: no %s stream; its %s features are zeros", clip.id,
                             "audio" if not features.has_audio else "video",
                             "audio" if not features.has_audio else "vision")
                _write_line(written, {"id": clip.id, "split": clip.split, "path": str(clip.path),
                                      "has_audio": features.has_audio, "has_video": features.has_video,
                                      "faces": features.faces, "sampled_frames": features.sampled,
                                      "video_frames": features.frames,
                                      "audio_seconds": round(features.audio_seconds, 3),
                                      "labels": list(clip.labels), "seconds": round(seconds, 3)})
            bar.set_postfix(tally.postfix(), refresh=False)
        bar.close()
    return tally


def _fail(errors: TextIO, clip: Any, exc: Exception, tally: _Tally, *, bug: bool = False) -> None:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if bug:
        message = f"unexpected {type(exc).__name__} (a bug; please report it): {message}"
    log.error("%s (%s): %s", clip.id, clip.source, message)
    _write_line(errors, {"id": clip.id, "path": str(clip.path), "split": clip.split, "line": clip.source,
                         "error": type(exc).__name__, "message": message})
    tally.failed += 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet)

    def body() -> int:
        from edge.errors import InputError
        from edge.profile import load_profile
        from edge.train.clips import read_clip_manifest

        if args.shard_size < 1:
            raise InputError(f"--shard-size must be at least 1, got {args.shard_size}")
        if args.threads is not None and args.threads < 1:
            raise InputError(f"--threads must be at least 1, got {args.threads}")
        profile = load_profile(args.profile)
        clips = read_clip_manifest(args.manifest, vocabulary=args.vocabulary, media_root=args.media_root,
                                   split_column=args.split_column)
        if args.check:
            return _check(args, clips, profile)
        tally = _extract_all(args, clips, profile)
        print(tally.summary(Path(args.out)))
        return 1 if tally.failed else 0

    return run_main("edge-extract", body)


if __name__ == "__main__":
    raise SystemExit(main())
