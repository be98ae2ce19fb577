"""edge-export-whisper: a transformers Whisper checkpoint -> ONNX encoder + KV-cache decoders for `edge-run --asr whisper`."""

from __future__ import annotations

import argparse
import json

from edge.cli._common import run_main, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-export-whisper",
        description="Export a Whisper checkpoint (a local directory saved with save_pretrained, or a hub id when "
                    "online) to ONNX: the encoder, a decoder for the prompt and a decoder with a KV cache, each "
                    "parity-checked against PyTorch, plus the tokenizer, mel filters and special tokens. Greedy "
                    "decoding then runs in numpy on ONNX Runtime (no torch): edge-run --asr whisper --asr-model OUT.",
        epilog="Example: edge-export-whisper openai/whisper-small engines/whisper-small && "
               "edge-run --camera 0 --asr whisper --asr-model engines/whisper-small --language zh",
    )
    p.add_argument("model", help="Whisper checkpoint: local directory or hub id")
    p.add_argument("out", help="folder to write")
    p.add_argument("--max-target-positions", type=int, default=None,
                   help="cap on prompt + generated tokens (default: the checkpoint's)")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet)

    def body() -> int:
        from edge.build.whisper_export import export_whisper

        meta = export_whisper(args.model, args.out, max_target_positions=args.max_target_positions)
        print(json.dumps({"written": args.out, "files": sorted(meta.get("files", {}))}, ensure_ascii=False))
        return 0

    return run_main("edge-export-whisper", body)


if __name__ == "__main__":
    raise SystemExit(main())
