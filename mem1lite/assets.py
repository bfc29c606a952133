"""data/tiny: the shared tokenizer (QA world + WebShop-lite text) and the untrained tiny config.

The one module that joins the tokenizer, the model config and both domains' text, so that
model.py and tokenizer.py need neither domain's generator (`mem1 tokenizer`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tokenizers import Tokenizer

from .files import commit_folder, new_folder, writing
from .model import TINY_DIR, load_tokenizer, tiny_qwen2_config
from .tokenizer import check_name_parts, extend_bpe, qa_texts, train_tokenizer
from .webshop import load_catalogue
from .webshop_teacher import corpus_texts

ASSET_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json")
ASSET_FILES += ("special_tokens_map.json",)
"""what the tiny assets' folder holds (a folder holding more is not replaced)"""


def build_tiny_assets(world, out: str | Path = TINY_DIR, force: bool = False, catalogue=None) -> Path:
    """Train the tokenizer on `world`, extend it with WebShop-lite text (`catalogue`, default the
    shipped data/webshop; tokenizer.py details 6-7: QA encodings unchanged), and save it with the
    untrained tiny config into `out`."""
    out = Path(out)
    if (out / "config.json").exists() and not force:
        raise FileExistsError(f"{out} already holds a tokenizer and config; pass --force to rebuild them")
    others = sorted(p.name for p in out.iterdir() if p.name not in ASSET_FILES) if out.is_dir() else []
    if others:  # the folder is replaced whole: never over files that are not the assets
        raise FileExistsError(
            f"{out} holds other files than the tiny assets ({', '.join(others[:3])}); give another --out"
        )
    catalogue = catalogue if catalogue is not None else load_catalogue()
    tokenizer = train_tokenizer(world)
    final, out = out, new_folder(out)  # written whole beside it, then swapped in (files.commit_folder)
    try:
        with writing(final):
            _write_assets(tokenizer, world, catalogue, out)
        commit_folder(out, final, "config.json")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return final


def _write_assets(tokenizer, world, catalogue, out: Path) -> None:
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
        raise ValueError(f"{len(missing)} name parts are not single tokens, e.g. {missing[:5]}")
    tiny_qwen2_config(tokenizer).save_pretrained(out)  # config.json again, last: the folder's marker
    out.chmod(0o755)
