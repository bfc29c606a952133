"""A byte-level BPE tokenizer trained on the world's text and the protocol, saved as a HF tokenizer.

1. Byte-level, like Qwen's: any string (invalid bytes included) round-trips through ids.
2. The protocol tags (`<think>`, `</search>`...) and the chat markers are special tokens: one id
   each, never split, never produced by merges.
3. Every name part (`Gevorn`, `Talis`, `Bank`) is a single token when it follows a space, which is
   how names appear in passages, questions, queries and answers. The trainer is shown each part
   often enough that BPE merges it whole; `check_name_parts` verifies it. A model trained with it
   writes names by copying those tokens, so it cannot play a world of other names:
   `require_name_parts` refuses that before any episode.
4. The pad token (`<|pad|>`) is not EOS (`<|endoftext|>`), so padding never looks like an ending.
5. A Qwen-style chat template (`<|im_start|>user ... <|im_end|>`), so prompts are built the same way
   for the tiny model and for a real Qwen2.5 checkpoint.

Both domains share the tokenizer: it is trained on the QA world as above, then extended with merges
learned on the WebShop-lite store's text (`extend_bpe`, details 6-7), which leaves every QA encoding
and every old id exactly as it was.
"""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .protocol import INSTRUCTION, TAG_TOKENS, QAEnvironment, format_error_observation, observation
from .retrieval import PoolRetrievers
from .teacher import teacher_response
from .world import RELATIONS, World, make_tasks

PAD, EOS, IM_START, IM_END = "<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, EOS, IM_START, IM_END, *TAG_TOKENS]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DEFAULT_VOCAB_SIZE = 5000


def _training_text(world: World, name_part_repeats: int) -> Iterator[str]:
    for doc in world.documents:
        yield f"Doc 1(Title: {doc.title}) {doc.text}"
    for split in world.questions:
        for q in world.questions[split][:2000]:
            yield f"{split}. {q.text}"
    # The protocol's own words, often enough to become whole tokens.
    protocol = [
        INSTRUCTION,
        "Questions:\n1. Who is 2. What is",
        observation("Doc 1(Title: x) y", 5) + format_error_observation("no <search> or <answer>", 3),
        "<think> answers: none. question: none. now: none.</think>",
        " now: the " + " of the ".join(RELATIONS) + ".",
    ]
    for _ in range(500):
        yield from protocol
    # [3] each part, after a space, often enough for BPE to merge it into one token.
    for part in world.parts.all_parts():
        yield (" " + part) * name_part_repeats
    yield " ".join(str(i) for i in range(40))


def train_tokenizer(world: World, vocab_size: int = DEFAULT_VOCAB_SIZE, name_part_repeats: int = 100):
    """Train the tokenizer on `world` and wrap it as a `PreTrainedTokenizerFast`."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(world, name_part_repeats), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END, *TAG_TOKENS],
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def split_name_parts(tokenizer, parts: Iterable[str]) -> dict[str, list[int]]:
    """The name parts that are NOT one token after a space, each with the ids it is cut into (empty:
    every part is one token). One batched call to the tokenizer's Rust encoder, which is what
    `tokenizer.encode` runs: ~20 ms for the shipped world's 1,928 parts."""
    parts = list(dict.fromkeys(parts))
    texts = [" " + p for p in parts]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        ids = [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    else:  # a slow (Python) tokenizer
        ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    return {p: seq for p, seq in zip(parts, ids) if len(seq) != 1}


def check_name_parts(tokenizer, parts: list[str]) -> list[str]:
    """The name parts that are NOT one token after a space (should be empty)."""
    return list(split_name_parts(tokenizer, parts))


class NamePartsError(ValueError):
    """A trained model cannot write a world's names (one line; the CLI prints it and exits 2)."""


def require_name_parts(tokenizer, parts: Iterable[str], policy: str, world_dir: str | Path | None) -> None:
    """Refuse, before any episode, to play a trained model on a world whose name parts are not single
    tokens of the model's tokenizer (NamePartsError, one line with the commands that fix it).

    The tiny model is trained with every name part one token [3] and writes a name by copying
    those tokens whole, so a world of another seed, whose parts its tokenizer cuts in pieces, scores
    0 with format errors at every turn. Only a tokenizer `mem1 tokenizer` made (the protocol's tags
    are single special tokens [2]) is checked: a real Qwen's tokenizer never held names whole.
    """
    if not set(TAG_TOKENS) <= set(tokenizer.all_special_tokens):
        return
    parts = list(dict.fromkeys(parts))
    split = split_name_parts(tokenizer, parts)
    if not split:
        return
    part, ids = next(iter(split.items()))
    pieces = " ".join(repr(t) for t in (tokenizer.decode([i]).strip() for i in ids) if t)
    world = _shown(world_dir) if world_dir is not None else "the world"
    stem = Path(world_dir).resolve().name if world_dir is not None else ""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "world"
    tok, sft = f"runs/{stem}-tokenizer", f"runs/{stem}-sft"
    q = shlex.quote(world) if world_dir is not None else "FOLDER"  # a world made in memory: save it first
    raise NamePartsError(
        f"{len(split):,} of {len(parts):,} name parts of {world} are not single tokens of {policy}'s "
        f"tokenizer (e.g. {part!r} -> {pieces}): it was made for another world, and the model writes "
        "each name part as one token, so it cannot write these names; train a tokenizer and a model "
        f"on this world: `mem1 tokenizer --world {q} --out {tok}`, then `mem1 sft --preset n16 "
        f"--model {tok} --data {q} --out {sft}` (about 2 h), and evaluate `--policy {sft}`"
    )


def _shown(path: str | Path) -> str:
    """A path as a user would type it: relative to the working directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd())) or "."
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# A second domain: extend the vocabulary without changing how the QA text encodes


def qa_texts(world: World, tasks: int = 20) -> Iterator[str]:
    """The QA text whose encoding an extension must keep: documents, every question, the protocol,
    and whole teacher episodes in the chat template (prompts at N = 1..4, 8, 16, responses, passages,
    format errors), the way rollouts and SFT data put them together."""
    for doc in world.documents:
        yield f"Doc 1(Title: {doc.title}) {doc.text}"
    for split in world.questions:
        for q in world.questions[split]:
            yield q.text
    yield from _training_text(world, 1)
    retrievers = PoolRetrievers(world)
    for split in world.questions:
        for n in (1, 2, 3, 4, 8, 16):
            for task in make_tasks(world, split, n, tasks, seed=0):
                env = QAEnvironment.from_task(task, retrievers[split])
                head = f"{IM_START}user\n{env.prompt()}{IM_END}\n{IM_START}assistant\n"
                yield head
                last = ""
                while not env.done:
                    response = teacher_response(head + last)
                    last = response + (env.step(response).observation or "")
                    yield last
    yield format_error_observation("no <search> or <answer>", 3) + "<|endoftext|><|pad|>"


_SPECIAL = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
_AFTER_NEWLINES = re.compile(r"(?<=\n)(?=[^\n])")


def _pieces(text: str) -> list[str]:
    """The text between special tokens (which the tokenizer cuts out before pre-tokenising), cut
    again after each run of newlines: no pre-token crosses such a point, so pre-tokenising the
    pieces one by one gives exactly the pre-tokens of the whole text."""
    return [p for seg in _SPECIAL.split(text) for p in _AFTER_NEWLINES.split(seg)]


def extend_bpe(
    tokenizer_json: dict,
    runtime,
    texts: Iterable[str],
    protected: Iterable[str],
    max_new_tokens: int = 1000,
    min_count: int = 20,
) -> tuple[dict, int]:
    """Append BPE merges learned on `texts` to a tokenizer, keeping the encoding of `protected` texts.

    6. Continued BPE: `texts` are cut into words by the tokenizer's *runtime* pre-tokenizer
       (`runtime` is the loaded tokenizer: transformers' Qwen2 class splits digits and words its own
       way), each word starts from its current segmentation, and the most frequent adjacent pair is
       merged, again and again (ties broken by the pair's text, so the result is deterministic),
       until `max_new_tokens` new tokens exist or the best pair occurs fewer than `min_count` times.
    7. Old ids never move: new tokens get the next free ids and new merges rank after all old ones.
       BPE applies merges in rank order, so a new merge can change a word's encoding only if its
       pair is adjacent in that word's old (final) segmentation. Pairs adjacent in any `protected`
       word are never merged: the protected texts encode to exactly the same ids as before.

    Returns the new tokenizer JSON and the number of tokens added.
    """
    pre, model = runtime.backend_tokenizer.pre_tokenizer, runtime.backend_tokenizer.model

    def words(stream: Iterable[str]) -> Counter:
        pieces = Counter(piece for text in stream for piece in _pieces(text) if piece)
        out: Counter = Counter()
        for piece, n in pieces.items():  # each distinct piece once: pages and notes repeat a lot
            for w, _ in pre.pre_tokenize_str(piece):
                out[w] += n
        return out

    def segment(word: str) -> list[str]:
        return [t.value for t in model.tokenize(word)]

    blocked: set[tuple[str, str]] = set()
    for word in words(protected):
        seg = segment(word)
        blocked.update(zip(seg, seg[1:]))
    counts = words(texts)
    segs = {w: segment(w) for w in counts}
    pair_counts: Counter = Counter()
    where: dict[tuple[str, str], set[str]] = {}
    for w, seg in segs.items():
        for pair in zip(seg, seg[1:]):
            pair_counts[pair] += counts[w]
            where.setdefault(pair, set()).add(w)
    vocab = dict(tokenizer_json["model"]["vocab"])
    merges = [list(m) for m in tokenizer_json["model"]["merges"]]
    next_id = max(vocab.values()) + 1
    added = 0
    while added < max_new_tokens:
        candidates = [(c, p) for p, c in pair_counts.items() if c >= min_count and p not in blocked]
        if not candidates:
            break
        _, best = min(candidates, key=lambda cp: (-cp[0], cp[1]))
        merged = best[0] + best[1]
        merges.append([best[0], best[1]])
        if merged not in vocab:
            vocab[merged] = next_id
            next_id += 1
            added += 1
        for w in sorted(where.pop(best, ())):
            old = segs[w]
            for pair in zip(old, old[1:]):
                pair_counts[pair] -= counts[w]
            new, i = [], 0
            while i < len(old):
                if i + 1 < len(old) and (old[i], old[i + 1]) == best:
                    new.append(merged)
                    i += 2
                else:
                    new.append(old[i])
                    i += 1
            segs[w] = new
            for pair in zip(new, new[1:]):
                pair_counts[pair] += counts[w]
                where.setdefault(pair, set()).add(w)
        pair_counts = Counter({p: c for p, c in pair_counts.items() if c > 0})
    out = json.loads(json.dumps(tokenizer_json))
    out["model"]["vocab"] = vocab
    out["model"]["merges"] = merges
    return out, added
