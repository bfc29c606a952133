"""A byte-level BPE tokenizer trained on the world's text and the protocol, saved as a HF tokenizer.

1. Byte-level, like Qwen's: any string (invalid bytes included) round-trips through ids.
2. The protocol tags (`<think>`, `</search>`...) and the chat markers are special tokens: one id
   each, never split, never produced by merges.
3. Every name part (`Gevorn`, `Talis`, `Bank`) is a single token when it follows a space, which is
   how names appear in passages, questions, queries and answers. The trainer is shown each part
   often enough that BPE merges it whole; `check_name_parts` verifies it.
4. The pad token (`<|pad|>`) is not EOS (`<|endoftext|>`), so padding never looks like an ending.
5. A Qwen-style chat template (`<|im_start|>user ... <|im_end|>`), so prompts are built the same way
   for the tiny model and for a real Qwen2.5 checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator

from .protocol import INSTRUCTION, TAG_TOKENS, format_error_observation, observation
from .world import RELATIONS, World

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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
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


def check_name_parts(tokenizer, parts: list[str]) -> list[str]:
    """The name parts that are NOT one token after a space (should be empty)."""
    return [p for p in parts if len(tokenizer.encode(" " + p, add_special_tokens=False)) != 1]
