"""HuggingFace-format checkpoints in and out, and our own checkpoint format (docs/design.md section 7).

A HuggingFace folder is what `save_pretrained` writes: `config.json` plus `model.safetensors` (or
`pytorch_model.bin`, or a sharded `*.index.json`). `load_pretrained(folder)` builds our backbone
(`TextTransformer` / `VisionTransformer`) with the architecture the config describes, copies every weight
into it and returns a `PretrainedModel` that is called like the `transformers` model; `export_hf` writes the
same layout back. Nothing here touches the network, and `transformers` itself is not needed (it is only the
reference in the tests).

The modules, read in this order:
  names.py        the families and the name tables (our key <-> HuggingFace key), shared by import and export
  files.py        reading a folder: config.json, weights (single or sharded), tokenizer files
  pretrained.py   `PretrainedModel` (what every loader returns) and the import's `ImportReport`
  hf_import.py    HuggingFace folder -> `PretrainedModel` (`load_hf`)
  hf_export.py    our encoder -> HuggingFace folder (`export_hf`)
  own_format.py   our own format (`save_backbone` / `load_own`), also the folders `pretrain` / `finetune` write
  locate.py       which folder a path means and in which format (`locate_checkpoint`, `load_pretrained`)

Differences from `transformers`: q/k/v are one fused projection (the import concatenates them), and an
attention mask is our bool `padding_mask` (True = pad).
"""

from .files import copy_tokenizer_files, find_tokenizer_dir
from .hf_export import export_hf
from .hf_import import load_hf
from .locate import load_backbone, load_pretrained, locate_checkpoint
from .names import FAMILIES
from .own_format import load_own, save_backbone
from .pretrained import ImportReport, PretrainedModel

__all__ = [
    "FAMILIES", "ImportReport", "PretrainedModel", "copy_tokenizer_files", "export_hf", "find_tokenizer_dir",
    "load_backbone", "load_hf", "load_own", "load_pretrained", "locate_checkpoint", "save_backbone",
]
