"""A data store: a folder of files plus manifest.json holding their sha256, written whole.

The QA world (world.py) and the WebShop-lite catalogue (webshop.py) are both stored this way: a few
parquet files written with `datasets`, and a manifest with the store's version, its config, counts
and each file's sha256. The same seed gives the same bytes, and a missing or damaged file is one
line (`DataError`) naming it and the command that rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from .files import commit_folder, new_folder, writing

# datasets and pyarrow are imported where they are used: world.py (and so the `mem1` command,
# whose --help must stay fast) needs this module's DataError without paying ~1 s for them.


class DataError(RuntimeError):
    """A data file is missing, unreadable or not what its manifest says (message is one line)."""


KINDS: dict[str, tuple[str, tuple[str, ...]]] = {}
"""what -> (its name in words, its files): every kind of store (world.py and webshop.py register
theirs), so that a folder of another kind is called what it is, not 'corrupted'"""


def register_kind(what: str, name: str, files: tuple[str, ...]) -> None:
    KINDS[what] = (name, files)


def _other_kind(path: Path, what: str, names) -> str | None:
    """The name of the other kind of store whose files `path` holds (or its manifest lists)."""
    from . import webshop, world  # noqa: F401  (each registers its kind on import)

    for other, (name, files) in KINDS.items():
        if other != what and set(files) <= (set(names) | {f.name for f in path.iterdir()}):
            return name
    return None


def _wrong_kind(path: Path, what: str, names=()) -> DataError | None:
    other = _other_kind(path, what, names)
    if other is None:
        return None
    name = KINDS.get(what, (what,))[0]
    return DataError(f"{path} is a {other}, not a {name}: give the {name}'s folder (or the other --env)")


def sha256_file(path: str | Path) -> str:
    """The file's sha256, read in 1 MiB chunks (checkpoints run to hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_store(
    out: str | Path,
    write: Callable[[Path], None],
    manifest: dict,
    files: tuple[str, ...],
    what: str,
    force: bool,
) -> Path:
    """Write a store to `out` atomically: `write(tmp)` fills a new folder beside it, the manifest
    (`manifest` plus the sha256 of `files`) goes last, then files.commit_folder swaps it in whole."""
    import datasets

    datasets.disable_progress_bars()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} already holds a {what}; pass --force to overwrite it")
    tmp = new_folder(out)
    try:
        with writing(out):  # a full disk or a file size limit: one line naming the store
            write(tmp)
            manifest = manifest | {"sha256": {name: sha256_file(tmp / name) for name in files}}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            tmp.chmod(0o755)
        if out.exists() and not (out / "manifest.json").is_file():
            shutil.rmtree(out)  # --force over a folder that is no store: nothing to keep while swapping
        commit_folder(tmp, out, "manifest.json")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_parquet(rows: list[dict], path: Path) -> None:
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(path))


def open_store(
    path: Path, files: tuple[str, ...], version: int, what: str, rebuild: str, verify: bool, config
):
    """Check a store written by `save_store` and return (manifest, config): the manifest must be an
    object of the code's `version`, `config(manifest["config"])` must succeed (it raises KeyError or
    TypeError otherwise), and every file must be there with the manifest's sha256 (when `verify`)."""
    manifest_path = path / "manifest.json"
    if path.exists() and not path.is_dir():
        raise DataError(f"{path} is not a folder; build the {what} with `{rebuild}`")
    if not manifest_path.is_file():
        wrong = _wrong_kind(path, what) if path.is_dir() else None
        raise wrong or DataError(f"{manifest_path} is missing; build the {what} with `{rebuild}`")
    try:
        manifest = json.loads(manifest_path.read_text())
        if not isinstance(manifest, dict):
            raise TypeError("the manifest is not an object")
        expected = manifest["sha256"]
        if not isinstance(expected, dict):
            raise TypeError("sha256 is not a table of files")
        wrong = _wrong_kind(path, what, expected)
        if wrong is not None and not set(files) <= set(expected):
            raise wrong
        counts = manifest.get("counts", {})
        if not isinstance(counts, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values()
        ):
            raise TypeError(f"counts is not a table of whole numbers: {str(counts)[:80]}")
        cfg = config(manifest["config"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        why = f"{type(exc).__name__}: {exc}" if isinstance(exc, (KeyError, TypeError)) else "not JSON"
        raise DataError(f"{manifest_path} is corrupted ({why}); rebuild it with `{rebuild}`") from exc
    if manifest.get("version") != version:
        raise DataError(
            f"{manifest_path} has {what} version {manifest.get('version')}, this code reads "
            f"{version}; rebuild it with `{rebuild}`"
        )
    for name in files:
        f = path / name
        if not f.is_file():
            raise DataError(f"{f} is missing; rebuild it with `{rebuild}`")
        if verify and sha256_file(f) != expected.get(name):
            raise DataError(
                f"{f} is corrupted (sha256 differs from the manifest); rebuild it with `{rebuild}`"
            )
    return manifest, cfg


def check_counts(path: Path, manifest: dict, actual: dict[str, int], rebuild: str) -> None:
    """The rows read are the rows the manifest counts (its counts are not covered by the files'
    sha256: an edited manifest is caught here)."""
    recorded = manifest.get("counts", {})
    wrong = [
        f"{k}: {recorded[k]} recorded, {v} read"
        for k, v in actual.items()
        if k in recorded and recorded[k] != v
    ]
    if wrong:
        raise DataError(
            f"{path / 'manifest.json'} does not match its files ({'; '.join(wrong[:3])}); "
            f"rebuild it with `{rebuild}`"
        )


def read_parquet(path: Path, rebuild: str) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises many types for a damaged file
        raise DataError(f"{path} is unreadable ({type(exc).__name__}); rebuild it with `{rebuild}`") from exc
