"""data/tiny: the shared tokenizer (QA world + WebShop-lite text) and the untrained tiny config.

The one module that joins the tokenizer, the model config and both domains' text, so that
model.py and tokenizer.py need neither domain's generator (`mem1 tokenizer`).
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from .model import TINY_DIR, load_tokenizer, tiny_qwen2_config
from .tokenizer import check_name_parts, extend_bpe, qa_texts, train_tokenizer
from .webshop import load_catalogue
from .webshop_teacher import corpus_texts


def build_tiny_assets(world, out: str | Path = TINY_DIR, force: bool = False, catalogue=None) -> Path:
    """Train the tokenizer on `world`, extend it with WebShop-lite text (`catalogue`, default the
    shipped data/webshop; tokenizer.py details 6-7: QA encodings unchanged), and save it with the
    untrained tiny config into `out`."""
    out = Path(out)
    if (out / "config.json").exists() and not force:
        raise FileExistsError(f"{out} already holds a tokenizer and config; pass --force to rebuild them")
    catalogue = catalogue if catalogue is not None else load_catalogue()
    tokenizer = train_tokenizer(world)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    tiny_qwen2_config(tokenizer).save_pretrained(out)  # config.json makes the loaded class Qwen2's
    path = out / "tokenizer.json"
    extended, _ = extend_bpe(
        json.loads(path.read_text()), load_tokenizer(out), corpus_texts(catalogue), qa_texts(world)
    )
    Tokenizer.from_str(json.dumps(extended)).save(str(path))
    tokenizer = load_tokenizer(out)
    missing = check_name_parts(tokenizer, world.parts.all_parts())
    if missing:
        raise RuntimeError(f"{len(missing)} name parts are not single tokens, e.g. {missing[:5]}")
    tiny_qwen2_config(tokenizer).save_pretrained(out)
    return out
