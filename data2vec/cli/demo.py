"""`data2vec demo` (placeholder until the engine lands: a smoke run of the core on random data)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="a short tour on the CPU (placeholder: a smoke run of the core)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..backbone import build_backbone
    from ..config import vision_preset

    model = build_backbone(vision_preset("tiny"))
    out = model(torch.randn(2, 3, 32, 32))
    out.square().mean().backward()
    print(f"demo: tiny vision encoder forward/backward ok, output {tuple(out.shape)}")
    return 0
