"""The pipeline's names, each spelled once: agents, layouts, token kinds (docs/DESIGN.md, glossary).

Plain data with no imports, so that the `mem1` command can offer them as choices without
importing torch (`mem1 --help` stays fast).
"""

AGENTS = ("mem1", "full", "truncate")
"""what an agent keeps of the episode each turn (rollout.py): the last turn, everything, the last K tokens"""

LAYOUTS = ("per_turn", "packed", "packed_dense", "stitched")
"""how a masked trajectory is laid out for one forward pass (masks.py)"""
EXACT_LAYOUTS = ("per_turn", "packed", "packed_dense")
DEFAULT_LAYOUT = "packed"
"""the training default: exact, and the fastest layout measured by `mem1 bench masks` (1 thread,
4 mem1 teacher trajectories, LoRA + value head, forward + backward, median of 5): 1.83x the
policy tokens/s of `per_turn` at N = 2 and 1.91x at N = 8, with 29-37% less peak memory;
`packed_dense` was 1.15x / 0.67x and `stitched` 1.34x / 0.80x"""

KIND_LETTERS = {
    "prompt": "p",
    "state": "s",
    "action": "a",
    "info": "i",
    "answer": "A",
    "error": "e",
    "other": "o",
}
"""a token's kind -> the letter a trajectory record stores for it"""
PAD_KIND = "."
"""the kind letter of padding in a layout"""
KIND_LABELS = {
    "p": "prompt",
    "s": "internal state",
    "a": "action",
    "i": "information",
    "A": "answer",
    "e": "format error",
    "o": "other",
    PAD_KIND: "padding",
}
"""a kind letter -> what pictures and the inspector call it"""
KIND_COLORS = {
    "p": "#8c8c8c",
    "s": "#4c72b0",
    "a": "#55a868",
    "A": "#c44e52",
    "i": "#dd8452",
    "e": "#8172b3",
    "o": "#937860",
    PAD_KIND: "#ffffff",
}
"""a kind letter -> its colour in every picture (plots.plot_mask, the inspector)"""
