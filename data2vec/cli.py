"""The `data2vec` command (placeholder until the training engine lands: it prints help and runs a smoke test)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="data2vec", description="data2vec from scratch: pretrain, fine-tune and probe.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="a tiny smoke run of the core on random data")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "demo":
        import torch

        from .backbone import build_backbone
        from .config import vision_preset

        model = build_backbone(vision_preset("tiny"))
        out = model(torch.randn(2, 3, 32, 32))
        out.square().mean().backward()
        print(f"demo: tiny vision encoder forward/backward ok, output {tuple(out.shape)}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
