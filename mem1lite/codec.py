"""Text <-> ids for the rollout loop, through the Rust tokenizer where transformers adds nothing.

    encode, decode = codec(tokenizer)
    ids = encode("<think> ...")          # == tokenizer.encode(text, add_special_tokens=False)
    text = decode(ids)                   # == tokenizer.decode(ids, skip_special_tokens=False)

transformers' fast-tokenizer `encode` and `decode` validate their inputs, build a `BatchEncoding`
and check every id in Python before and after calling the Rust tokenizer. For the short texts of
a rollout turn that wrapper costs more than the tokenizing: playing the scripted teacher spent about
a tenth of its time in it (#22). Where the wrapper cannot change the result (a Rust backend, no
clean-up of spaces on decode, special tokens not split on encode), the backend is called directly;
anything else (a slow tokenizer, clean-up) keeps transformers' calls. tests/test_codec.py checks
both give the same ids and texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def codec(tokenizer) -> tuple[Callable[[str], list[int]], Callable[[Sequence[int]], str]]:
    """(encode, decode) with `tokenizer`'s results: no special tokens added, none skipped."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    plain = (
        backend is not None
        and not getattr(tokenizer, "clean_up_tokenization_spaces", False)
        and not getattr(tokenizer, "split_special_tokens", False)
        and not getattr(backend, "encode_special_tokens", False)
    )
    if not plain:
        return (
            lambda text: tokenizer.encode(text, add_special_tokens=False),
            lambda ids: tokenizer.decode(list(ids), skip_special_tokens=False),
        )
    return (
        lambda text: backend.encode(text, add_special_tokens=False).ids,
        lambda ids: backend.decode(list(ids), skip_special_tokens=False),
    )
