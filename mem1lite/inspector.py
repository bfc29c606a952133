"""The trajectory inspector: step through an episode and see exactly what the model saw.

    from mem1lite.inspector import Inspector
    Inspector.from_paths("data/examples")          # in JupyterLab: every *.jsonl of a folder, or files

    mem1 inspect runs/x.jsonl --episode 3 --html out.html [--turn J] [--layout packed]

It reads `rollout.Trajectory` records (any agent, policy or environment: it uses nothing past the
record's own fields) and shows, for one turn: the context the model was fed and the response it
wrote, token by token, coloured by kind and marked where the loss applies; the context length of
every turn with the peak marked; the row of the training mask of a selected token (what that token
may attend to in a layout of masks.py); and the same task played by the other agent beside it.

Two layers. The rendering is pure functions from records to HTML strings (`turn_view`,
`render_turn`, `render_length_chart`, `mask_row_of`, `render_mask_row`, `render_compare`,
`render_episode_html`), tested without a browser; `Inspector` is a thin ipywidgets shell that calls
them when a control changes; `export_html` writes the static page of one episode (`mem1 inspect`).

Details (the code repeats the numbers):

1. Token text is the tokenizer's text of each recorded id, decoded one id at a time and cached:
   never a decoded-then-retokenised string. A byte-level token that is half a UTF-8 character
   shows as U+FFFD.
2. Kinds: the prompt is `p`, observations `i` and a response carries its recorded `output_kinds`
   (rollout.KIND_LETTERS); a context's kinds come from `masks.span_kinds`, so copies of an earlier
   response keep their state / action / answer colours.
3. Loss: a token is in the loss iff it is one of this turn's own response tokens (masks.py [9]).
   Everything in the context, including the copy of the previous response, is loss-masked.
4. Long contexts: a pane draws at most `max_tokens` tokens: the head, a window around the selected
   token, and the tail; each gap is one marker saying how many tokens it hides and where. Drawing
   costs the same for 300 or 30,000 tokens, so the widget stays responsive.
5. Mask rows come from `masks.build_layout` and `masks.mask_row`, nothing re-derived: the layout is
   built on a *proxy* of the trajectory whose ids are origin codes (piece offset + index), so every
   key of a layout row names the token it holds. Equal ids at equal places give equal layouts, so
   the proxy has the real trajectory's blocks and masks (two pieces with identical ids could only
   make the real layout share one more block). A plain causal stage (`visible` None: `per_turn`,
   the prompt stage of `packed`) gets its row without materialising (R, L, L): keys up to the query.
6. Cost guard: a layout whose visibility matrices would exceed `MASK_BUDGET` cells is built on the
   episode's turns up to the selected one; if that is still too big (a long `full` trajectory in
   `packed_dense` or `stitched`: quadratic), the row shown is `per_turn`'s, which is what the exact
   layouts compute for that token, and the pane says so.
7. Side by side: the partner of an episode is the record with the same `task_id` under the other
   agent (mem1 <-> full, else any other agent), the same policy preferred. Both charts share one
   y-axis, so the flat mem1 curve and the growing full one are comparable at a glance.
"""

from __future__ import annotations

import base64
import bisect
import html
import io
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .files import write_text
from .masks import DEFAULT_LAYOUT, KIND_COLORS, LAYOUTS, build_layout, mask_row, packed_blocks, span_kinds
from .rollout import KIND_LETTERS, PROMPT, LoadReport, Trajectory, read_jsonl

MAX_TOKENS = 1200
"""tokens a pane draws at most (head + window around the selection + tail) [4]"""
MASK_BUDGET = 48_000_000
"""largest visibility matrix (cells) built for a mask row: 48 MB of bool, ~1 s in packed_dense [6]"""
KIND_LABELS = {
    "p": "prompt",
    "s": "internal state",
    "a": "action",
    "i": "information",
    "A": "answer",
    "e": "format error",
    "o": "other",
}
COMPARE_AGENTS = {"mem1": "full", "full": "mem1"}


class InspectorError(ValueError):
    """Input the inspector cannot show (no such file, an episode out of range); one line."""


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class Collection:
    """Trajectories to inspect, where each came from, and what could not be loaded."""

    trajectories: list[Trajectory]
    sources: list[str]
    """per trajectory, its file name (or 'memory')"""
    warnings: list[str]
    """'file:line: why' per bad line, and 'path: why' per unreadable source"""


def load_trajectories(sources, strict_files: bool = False) -> Collection:
    """Load from jsonl files, folders (their *.jsonl, sorted), LoadReports or Trajectory objects.

    A malformed line becomes a warning naming its file and line; the rest loads. A missing file is
    a warning too, or an `InspectorError` when `strict_files`.
    """
    if isinstance(sources, (str, os.PathLike, Trajectory, LoadReport)):
        sources = [sources]
    trajs, names, warnings = [], [], []
    for src in sources:
        if isinstance(src, Trajectory):
            trajs.append(src)
            names.append("memory")
            continue
        if isinstance(src, LoadReport):
            trajs += src.trajectories
            names += ["memory"] * len(src.trajectories)
            warnings += src.errors
            continue
        path = Path(src)
        files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
        for f in files:
            if not f.is_file():
                msg = f"{f}: no such file"
                if strict_files:
                    raise InspectorError(msg)
                warnings.append(msg)
                continue
            report = read_jsonl(f)
            trajs += report.trajectories
            names += [f.name] * len(report.trajectories)
            warnings += report.errors
    return Collection(trajs, names, warnings)


def filter_episodes(
    trajs: Sequence[Trajectory],
    agent: str | None = None,
    objectives: int | None = None,
    reward: tuple[float, float] | None = None,
) -> list[int]:
    """Indices of the trajectories matching every filter given (None: no filter)."""
    out = []
    for i, t in enumerate(trajs):
        if agent is not None and t.agent != agent:
            continue
        if objectives is not None and t.objectives != objectives:
            continue
        if reward is not None and not (reward[0] - 1e-9 <= t.reward <= reward[1] + 1e-9):
            continue
        out.append(i)
    return out


def find_partner(traj: Trajectory, pool: Iterable[Trajectory]) -> Trajectory | None:
    """[7] The same task under the other agent (mem1 <-> full), the same policy preferred."""
    want = COMPARE_AGENTS.get(traj.agent)
    candidates = [t for t in pool if t is not traj and t.task_id == traj.task_id and t.agent != traj.agent]
    if not candidates:
        return None

    def rank(t):
        return (t.agent != want, t.policy != traj.policy)

    return min(candidates, key=rank)


# ---------------------------------------------------------------------------------------------
# Token text


class TokenText:
    """[1] id -> display text, through a tokenizer, one id at a time, cached."""

    def __init__(self, tokenizer=None):
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            from .model import TINY_DIR, load_tokenizer

            tokenizer = load_tokenizer(tokenizer or TINY_DIR)
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            try:
                text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            except Exception:  # an id outside this tokenizer's vocabulary: show the id
                text = f"⟨{token_id}⟩"
            self._cache[token_id] = text
        return text


def as_token_text(tokenizer) -> Callable[[int], str]:
    """A TokenText, or any callable id -> str passed through."""
    if isinstance(tokenizer, TokenText) or (callable(tokenizer) and not hasattr(tokenizer, "decode")):
        return tokenizer
    return TokenText(tokenizer)


# ---------------------------------------------------------------------------------------------
# What the model saw at turn j


def piece_label(piece: int) -> str:
    if piece == PROMPT:
        return "prompt"
    return f"{'response' if piece % 2 == 0 else 'observation'} {piece // 2}"


@dataclass
class Origins:
    """Each token of an episode gets one origin code: its piece's offset + its index in the piece."""

    pieces: list[int]
    """piece indices in order: -1 (prompt), 0, 1, 2, ..."""
    offsets: list[int]
    """first code of each piece (ascending)"""

    @classmethod
    def of(cls, traj: Trajectory) -> Origins:
        pieces = [PROMPT, *range(2 * len(traj.turns))]
        offsets, n = [], 0
        for p in pieces:
            offsets.append(n)
            n += len(traj.piece(p))
        return cls(pieces, offsets)

    def code(self, piece: int, index: int) -> int:
        return self.offsets[piece + 1] + index

    def piece_of(self, code: int) -> tuple[int, int]:
        k = bisect.bisect_right(self.offsets, code) - 1
        return self.pieces[k], code - self.offsets[k]

    def span_codes(self, spans) -> list[int]:
        return [c for p, a, b in spans for c in range(self.code(p, a), self.code(p, b))]


@dataclass
class TurnView:
    """Turn j as the model met it: the context it was fed, then the response it wrote."""

    turn: int
    ids: list[int]
    """context ids then response ids"""
    kinds: str
    """one kind letter per id [2]"""
    codes: list[int]
    """origin code per id (Origins)"""
    n_context: int
    logprobs: list[float]
    """the response's sampling log-probs"""

    @property
    def n_response(self) -> int:
        return len(self.ids) - self.n_context

    def in_loss(self, pos: int) -> bool:
        """[3] Only the turn's own response tokens carry loss."""
        return pos >= self.n_context


def turn_view(traj: Trajectory, j: int, origins: Origins | None = None) -> TurnView:
    if not 0 <= j < len(traj.turns):
        raise InspectorError(f"turn {j} out of range: {traj.task_id} has {len(traj.turns)} turns")
    origins = origins or Origins.of(traj)
    turn = traj.turns[j]
    ctx = traj.context_ids(j)
    return TurnView(
        turn=j,
        ids=ctx + list(turn.output_ids),
        kinds=span_kinds(traj, turn.spans) + turn.output_kinds,
        codes=origins.span_codes(turn.spans) + [origins.code(2 * j, k) for k in range(len(turn.output_ids))],
        n_context=len(ctx),
        logprobs=list(turn.logprobs),
    )


# ---------------------------------------------------------------------------------------------
# Mask rows [5] [6]


@dataclass
class MaskRow:
    """The keys one query may attend to in a layout, each named by its origin."""

    layout: str
    """the layout asked for"""
    shown_layout: str
    """the layout whose row this is (per_turn when the one asked for was too big [6])"""
    stage: int
    row: int
    query: int
    query_code: int
    key_codes: list[int]
    """origin code of each real key, in the layout's key order"""
    visible: list[bool]
    key_kinds: str
    blocks: list[int] | None = None
    """per key, its block in `packed_dense` (0 = the prompt)"""
    note: str = ""
    batch: object | None = None
    """the LayoutBatch the row was read from (for the 2D thumbnail)"""

    @property
    def n_visible(self) -> int:
        return sum(self.visible)

    def visible_codes(self) -> set[int]:
        return {c for c, v in zip(self.key_codes, self.visible) if v}


def _truncated(traj: Trajectory, upto: int) -> Trajectory:
    return replace(traj, turns=traj.turns[: upto + 1])


def _proxy(traj: Trajectory, origins: Origins) -> Trajectory:
    """[5] The same episode with every id replaced by its origin code."""

    def codes(p):
        n = len(traj.piece(p))
        return list(range(origins.code(p, 0), origins.code(p, 0) + n))

    turns = [
        replace(t, output_ids=codes(2 * j), observation_ids=codes(2 * j + 1))
        for j, t in enumerate(traj.turns)
    ]
    return replace(traj, prompt_ids=codes(PROMPT), turns=turns)


def layout_cells(traj: Trajectory, layout: str) -> int:
    """How many cells the visibility matrices of `layout` would hold for this one trajectory."""
    if layout == "per_turn":
        return 0  # plain causal: no matrix
    P = len(traj.prompt_ids)
    if layout in ("packed", "packed_dense"):
        lengths = [len(b.ids) for b in packed_blocks(traj)]
        if layout == "packed":
            Lb = max(lengths, default=1)
            return len(lengths) * Lb * (P + Lb)
        return (P + sum(lengths)) ** 2
    n = P + sum(len(t.output_ids) + len(t.observation_ids) for t in traj.turns)  # stitched, upper bound
    return n * n


class LayoutCache:
    """Built proxy layouts, least recently used dropped first (a few MB each at most)."""

    def __init__(self, size: int = 6):
        self.size = size
        self._store: OrderedDict = OrderedDict()

    def get(self, traj: Trajectory, layout: str, upto: int | None, build: Callable):
        key = (id(traj), layout, upto)
        hit = self._store.get(key)
        if hit is not None and hit[0] is traj:
            self._store.move_to_end(key)
            return hit[1]
        value = build()
        self._store[key] = (traj, value)
        while len(self._store) > self.size:
            self._store.popitem(last=False)
        return value


def _stage_row(batch, stage_i: int, row: int, query: int) -> torch.Tensor:
    """Visibility of one query over the stage's P + L keys."""
    st = batch.stages[stage_i]
    if st.visible is not None:
        return mask_row(batch, row, query, stage_i)
    # [5] a plain causal stage (Stage.visible_matrix without the (R, L, L) matrix): keys up to the query
    L = st.input_ids.shape[1]
    return torch.arange(L) <= query


def _build(traj: Trajectory, layout: str, budget: int):
    """A proxy layout of `traj` [5], or a string saying why not: too big [6], or refused by masks.py."""
    proxy = _proxy(traj, Origins.of(traj))
    try:
        cells = layout_cells(proxy, layout)
        if cells > budget:
            return f"would hold {cells:,} cells"
        return build_layout([proxy], layout)
    except ValueError as exc:
        return f"cannot be built ({exc})"


def mask_row_of(
    traj: Trajectory,
    j: int,
    pos: int,
    layout: str = DEFAULT_LAYOUT,
    cache: LayoutCache | None = None,
    budget: int = MASK_BUDGET,
    view: TurnView | None = None,
) -> MaskRow:
    """The mask row, in `layout`, of the token at position `pos` of turn j's view (context then
    response): which tokens it may attend to when the layout is trained on."""
    if layout not in LAYOUTS:
        raise InspectorError(f"unknown layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    view = view or turn_view(traj, j)
    if not 0 <= pos < len(view.ids):
        raise InspectorError(f"token {pos} out of range: turn {j} shows {len(view.ids)} tokens")
    cache = cache or LayoutCache(size=2)
    note, shown = "", layout
    batch = cache.get(traj, layout, None, lambda: _build(traj, layout, budget))
    if isinstance(batch, str):  # [6] the whole episode is too big for this layout: the turns up to j
        batch = cache.get(traj, layout, j, lambda: _build(_truncated(traj, j), layout, budget))
        if not isinstance(batch, str):
            note = f"built on turns 0..{j} only (the whole episode's {layout} mask is too big to draw)"
    if isinstance(batch, str):
        why, shown = batch, "per_turn"
        batch = cache.get(traj, shown, j, lambda: _build(_truncated(traj, j), shown, budget))
        note = f"the {layout} mask of turns 0..{j} {why}; shown: the per_turn row, " + (
            "which equals the exact layouts' row for this token"
            if layout != "stitched"
            else "the visibility at generation, which stitched approximates"
        )
    row = _read_row(batch, shown, view, pos, len(traj.prompt_ids))
    return replace(row, layout=layout, note=note)


def _find_block(rows: Sequence[Sequence[int]], anchor: int) -> int:
    """The first block holding `anchor`: a turn's first response token (its own block; a later block
    may hold a copy of it, as context)."""
    for r in range(len(rows)):
        if anchor in rows[r]:
            return r
    raise RuntimeError(f"origin {anchor} is in no block of the layout")


def _read_row(batch, layout: str, view: TurnView, pos: int, p_len: int) -> MaskRow:
    """Locate the view's token in the (proxy) layout and read its row, keys named by origin."""
    j, code = view.turn, view.codes[pos]
    anchor = view.codes[view.n_context] if view.n_response else view.codes[-1]
    blocks = None
    if layout == "per_turn":
        stage_i, row, query = 0, j, pos
    elif layout == "packed":
        if pos < p_len:
            stage_i, row, query = 0, 0, pos
        else:
            st = batch.stages[1]
            rows = [st.input_ids[r, : st.lengths[r]].tolist() for r in range(len(st.lengths))]
            stage_i, row = 1, _find_block(rows, anchor)
            query = rows[row].index(code)
    else:  # packed_dense, stitched: one row per trajectory
        st = batch.stages[0]
        ids = st.input_ids[0, : st.lengths[0]].tolist()
        stage_i, row = 0, 0
        if layout == "stitched":
            query = ids.index(code)
        else:
            positions = st.position_ids[0, : st.lengths[0]].tolist()
            starts = [i for i in range(p_len, len(ids)) if positions[i] == p_len]  # [1] blocks restart at P
            bounds = [*starts, len(ids)]
            blocks = [0] * p_len
            for b in range(len(starts)):
                blocks += [b + 1] * (bounds[b + 1] - bounds[b])
            if pos < p_len:
                query = pos
            else:
                segs = [ids[bounds[b] : bounds[b + 1]] for b in range(len(starts))]
                b = _find_block(segs, anchor)
                query = bounds[b] + segs[b].index(code)
    st = batch.stages[stage_i]
    vis = _stage_row(batch, stage_i, row, query)
    P = st.prefix_length
    own = st.input_ids[row, : st.lengths[row]].tolist()
    own_vis = vis[P : P + st.lengths[row]].tolist()
    own_kinds = st.kinds[row][: st.lengths[row]]
    if st.prefix_rows is not None:  # packed blocks: the prompt's keys come first
        pr, pn = int(st.prefix_rows[row]), st.prefix_lengths[row]
        keys = batch.stages[0].input_ids[pr, :pn].tolist() + own
        visible = vis[:pn].tolist() + own_vis
        kinds = batch.stages[0].kinds[pr][:pn] + own_kinds
        query_key = pn + query
    else:
        keys, visible, kinds, query_key = own, own_vis, own_kinds, query
    assert keys[query_key] == code, "the located key is not the selected token"
    return MaskRow(
        layout=layout,
        shown_layout=layout,
        stage=stage_i,
        row=row,
        query=query_key,
        query_code=code,
        key_codes=keys,
        visible=[bool(v) for v in visible],
        key_kinds=kinds,
        blocks=blocks,
        batch=batch,
    )


def home_turn(traj: Trajectory, code: int, origins: Origins) -> int:
    """The first turn whose view holds the token (stitched gives each token that turn's row)."""
    piece, _ = origins.piece_of(code)
    if piece == PROMPT:
        return 0
    if piece % 2 == 0:
        return piece // 2
    for j, turn in enumerate(traj.turns):
        if code in origins.span_codes(s for s in turn.spans if s[0] == piece):
            return j
    return len(traj.turns)


# ---------------------------------------------------------------------------------------------
# HTML: styles and tokens


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


def _tint(hex_colour: str, amount: float) -> str:
    """Mix a colour with white (amount 0 = white, 1 = the colour)."""
    r, g, b = _rgb(hex_colour)
    mix = [round(255 - (255 - c) * amount) for c in (r, g, b)]
    return "#" + "".join(f"{c:02x}" for c in mix)


KIND_CLASS = {letter: "k-" + name for name, letter in KIND_LETTERS.items()}


def css() -> str:
    """The stylesheet every rendered fragment carries (class names prefixed mi-, k-)."""
    kinds = "".join(
        f".mi .{KIND_CLASS[k]}{{background:{_tint(KIND_COLORS.get(k, '#937860'), 0.28)};"
        f"--mi-c:{KIND_COLORS.get(k, '#937860')}}}"
        for k in KIND_CLASS
    )
    return (
        "<style>"
        # ipywidgets' HTML widget sets line-height 28px and nowrap on its content: undo both
        ".mi{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:13px;color:#222;"
        "line-height:1.4;white-space:normal}"
        ".mi h3{font-size:14px;margin:8px 0 4px}.mi h4{font-size:13px;margin:6px 0 3px;color:#444}"
        ".mi .mi-pane{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:12px;"
        "white-space:pre-wrap;word-break:break-all;line-height:1.55;border:1px solid #ddd;"
        "border-radius:4px;padding:6px;max-height:420px;overflow-y:auto;background:#fff}"
        ".mi .mi-t{border-radius:2px;padding:0 0.5px}"
        ".mi .mi-t.loss{box-shadow:inset 0 -2px 0 var(--mi-c)}"
        ".mi .mi-t.u{opacity:.28}"
        ".mi .mi-t.sel{outline:2px solid #d62728;outline-offset:0;opacity:1}"
        ".mi .mi-gap{display:inline-block;margin:2px 0;padding:1px 8px;background:#fff3cd;"
        "border:1px dashed #c9a227;border-radius:3px;color:#6b5200;font-family:system-ui,sans-serif}"
        ".mi .mi-legend span.mi-sw{display:inline-block;padding:0 5px;margin-right:6px;border-radius:2px}"
        ".mi .mi-warn{background:#fff3cd;border:1px solid #e0c36a;padding:4px 8px;border-radius:4px;"
        "margin:4px 0;font-size:12px}"
        ".mi .mi-meta{color:#555;font-size:12px}"
        ".mi .mi-cols{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}"
        ".mi .mi-cols>div{flex:1 1 260px;min-width:0}"
        ".mi .mi-bar{display:flex;height:22px;border:1px solid #bbb;border-radius:3px;overflow:hidden;"
        "margin:4px 0}"
        ".mi .mi-bar>div{min-width:1px}.mi .mi-bar>div.q{outline:2px solid #d62728;z-index:1}"
        ".mi table.mi-tab{border-collapse:collapse;font-size:12px}"
        ".mi table.mi-tab td,.mi table.mi-tab th{padding:1px 8px;border-bottom:1px solid #eee;"
        "text-align:left}"
        ".mi details>summary{cursor:pointer;font-weight:600;margin:6px 0}" + kinds + "</style>"
    )


def legend() -> str:
    items = "".join(f'<span class="mi-sw {KIND_CLASS[k]}">{KIND_LABELS[k]}</span>' for k in "psaiAe")
    return (
        f'<div class="mi-legend mi-meta">{items}<br>'
        '<span class="mi-t k-state loss">underlined</span>: in the loss (a policy token of this turn) · '
        "plain: loss-masked (context) · "
        '<span class="mi-t k-info u">faded</span>: hidden from the selected token · '
        '<span class="mi-t k-info sel">outlined</span>: the selected token</div>'
    )


def _show(text: str) -> str:
    return html.escape(text).replace("\n", "↵\n").replace("\t", "⇥")


def windows(n: int, budget: int, focus: int | None = None) -> list[tuple[int, int]]:
    """[4] Ranges of [0, n) to draw: everything if it fits, else head + (window around `focus`) +
    tail, at most `budget` tokens in all. Without a focus the tail gets the rest (recent context)."""
    if n <= budget:
        return [(0, n)]
    head = max(1, budget // 8)
    if focus is None:
        return [(0, head), (n - (budget - head), n)]
    tail = max(1, budget // 4)
    around = budget - head - tail
    a = min(max(focus - around // 2, 0), n - around)
    parts = sorted([(0, head), (a, a + around), (n - tail, n)])
    merged = [parts[0]]
    for s, e in parts[1:]:
        if s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


def gap_marker(start: int, end: int, offset: int = 0) -> str:
    return (
        f'<span class="mi-gap">⋯ {end - start:,} tokens not shown '
        f"(positions {offset + start:,}–{offset + end - 1:,}) ⋯</span>"
    )


def render_tokens(
    ids: Sequence[int],
    kinds: str,
    text_of: Callable[[int], str],
    *,
    loss: bool,
    offset: int = 0,
    selected: int | None = None,
    seen: Sequence[bool] | None = None,
    logprobs: Sequence[float] | None = None,
    max_tokens: int = MAX_TOKENS,
) -> str:
    """Token spans coloured by kind. `selected` and `offset` are view positions (the first id sits at
    `offset`); `seen[i]` False fades token i (hidden from the selected token). Long runs are cut [4]."""
    focus = selected - offset if selected is not None and 0 <= selected - offset < len(ids) else None
    out, prev = [], 0
    for s, e in windows(len(ids), max_tokens, focus):
        if s > prev:
            out.append(gap_marker(prev, s, offset))
        for i in range(s, e):
            k = kinds[i] if i < len(kinds) else "o"
            cls = ["mi-t", KIND_CLASS.get(k, "k-other")]
            if loss:
                cls.append("loss")
            if seen is not None and not seen[i]:
                cls.append("u")
            if focus == i:
                cls.append("sel")
            title = f"pos {offset + i} · id {ids[i]} · {KIND_LABELS.get(k, k)}"
            title += " · in the loss" if loss else " · loss-masked"
            if logprobs is not None and i < len(logprobs):
                title += f" · logprob {logprobs[i]:.3f}"
            out.append(f'<span class="{" ".join(cls)}" title="{title}">{_show(text_of(ids[i]))}</span>')
        prev = e
    if prev < len(ids):
        out.append(gap_marker(prev, len(ids), offset))
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# HTML: panes


def render_header(traj: Trajectory, source: str = "") -> str:
    turns = traj.turns
    qs = "".join(f"<li>{html.escape(str(q))}</li>" for q in traj.questions)
    golds = "; ".join(html.escape(str(g)) for g in traj.golds)
    return (
        f"<h3>{html.escape(traj.task_id)} · agent <b>{html.escape(traj.agent)}</b> · policy "
        f"<b>{html.escape(traj.policy)}</b> · N={traj.objectives} · reward {traj.reward:g}</h3>"
        f'<div class="mi-meta">{html.escape(source)}{" · " if source else ""}env {html.escape(traj.env)} · '
        f"split {html.escape(traj.split)} · episode {traj.episode} · {len(turns)} turns · "
        f"peak {traj.peak_tokens:,} tokens · EM {traj.em:g} · F1 {traj.f1:.2f} · "
        f"format errors {traj.format_errors} · answer: {html.escape(str(traj.answer))} · gold: {golds}</div>"
        f'<ol class="mi-meta" style="margin:4px 0 4px 18px;padding:0">{qs}</ol>'
    )


def render_turn(
    traj: Trajectory,
    j: int,
    text_of: Callable[[int], str],
    selected: int | None = None,
    mask: MaskRow | None = None,
    max_tokens: int = MAX_TOKENS,
    view: TurnView | None = None,
) -> str:
    """The context fed at turn j and the response written, with the selected token outlined and the
    tokens hidden from it (per `mask`) faded."""
    view = view or turn_view(traj, j)
    turn = traj.turns[j]
    seen = None
    if mask is not None:
        vis = mask.visible_codes()
        seen = [c in vis for c in view.codes]
    n = view.n_context
    pieces = ", ".join(
        f"{piece_label(p)}[{a}:{b}]" if (a, b) != (0, len(traj.piece(p))) else piece_label(p)
        for p, a, b in turn.spans
    )
    ctx = render_tokens(
        view.ids[:n], view.kinds[:n], text_of, loss=False, selected=selected,
        seen=seen[:n] if seen else None, max_tokens=max_tokens,
    )  # fmt: skip
    resp = render_tokens(
        view.ids[n:], view.kinds[n:], text_of, loss=True, offset=n, selected=selected,
        seen=seen[n:] if seen else None, logprobs=view.logprobs, max_tokens=max_tokens,
    )  # fmt: skip
    action = html.escape(turn.action) + (
        f" <code>{html.escape(turn.argument)}</code>" if turn.argument else ""
    )
    if turn.error:
        action += f' <span style="color:#8172b3">({html.escape(turn.error)})</span>'
    sel = ""
    if selected is not None and 0 <= selected < len(view.ids):
        k = view.kinds[selected]
        sel = (
            f" · selected token {selected}: <code>{_show(text_of(view.ids[selected]))}</code> "
            f"({KIND_LABELS.get(k, k)}, {'in the loss' if view.in_loss(selected) else 'loss-masked'})"
        )
    return (
        f"<h4>turn {j}: context fed ({n:,} tokens: {html.escape(pieces)}) · all loss-masked</h4>"
        f'<div class="mi-pane">{ctx}</div>'
        f"<h4>turn {j}: response ({view.n_response} tokens, in the loss) → {action}"
        f"{' · hit the token limit' if turn.hit_limit else ''}</h4>"
        f'<div class="mi-pane">{resp}</div><div class="mi-meta">{sel}</div>'
    )


def render_observation(traj: Trajectory, j: int, text_of, max_tokens: int = 400) -> str:
    obs = traj.turns[j].observation_ids
    if not obs:
        return '<div class="mi-meta">no observation: the episode ended at this turn</div>'
    body = render_tokens(obs, "i" * len(obs), text_of, loss=False, max_tokens=max_tokens)
    return f'<h4>environment\'s reply ({len(obs)} tokens)</h4><div class="mi-pane">{body}</div>'


def render_length_chart(
    traj: Trajectory,
    current: int | None = None,
    y_max: int | None = None,
    width: int = 440,
    height: int = 150,
    title: str | None = None,
) -> str:
    """An inline SVG: context length fed at each turn (bars, response stacked lighter), the peak as a
    dashed line, the current turn outlined."""
    ctx = traj.context_lengths()
    out = [len(t.output_ids) for t in traj.turns]
    peak = max(ctx, default=0)
    top = max(y_max or 0, max((c + o for c, o in zip(ctx, out)), default=1), 1)
    left, bottom, right, up = 44, 22, 8, 26
    w, h = width - left - right, height - bottom - up
    n = max(len(ctx), 1)
    bw = w / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'class="mi-chart" font-family="system-ui,sans-serif" font-size="10">'
        f'<text x="4" y="12" font-size="11" font-weight="600">'
        f"{html.escape(title or f'context fed per turn ({traj.agent})')}</text>"
    ]
    for frac in (0, 0.5, 1):
        y = up + h - frac * h
        parts.append(
            f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" fill="#666">{round(top * frac):,}</text>'
        )
    for j, (c, o) in enumerate(zip(ctx, out)):
        x = left + j * bw + bw * 0.12
        bwi = bw * 0.76
        hc, ho = c / top * h, o / top * h
        yc = up + h - hc
        stroke = ' stroke="#d62728" stroke-width="2"' if j == current else ""
        parts.append(
            f'<rect class="mi-bar-ctx" x="{x:.1f}" y="{yc:.1f}" width="{bwi:.1f}" height="{hc:.1f}" '
            f'fill="#4c72b0"{stroke}><title>turn {j}: context {c:,}, response {o}</title></rect>'
            f'<rect x="{x:.1f}" y="{yc - ho:.1f}" width="{bwi:.1f}" height="{ho:.1f}" fill="#a6bddb"/>'
        )
        if n <= 30 or j % max(1, n // 15) == 0:
            parts.append(
                f'<text x="{x + bwi / 2:.1f}" y="{up + h + 12}" text-anchor="middle" fill="#666">{j}</text>'
            )
    yp = up + h - peak / top * h
    jp = ctx.index(peak) if ctx else 0
    parts.append(
        f'<line class="mi-peak" x1="{left}" x2="{left + w}" y1="{yp:.1f}" y2="{yp:.1f}" '
        f'stroke="#c44e52" stroke-dasharray="4 3"/>'
        f'<text x="{left + w}" y="{yp - 3:.1f}" text-anchor="end" fill="#c44e52">'
        f"peak {peak:,} (turn {jp})</text>"
        f'<text x="{left + w / 2}" y="{height - 1}" text-anchor="middle" fill="#666">turn</text></svg>'
    )
    return "".join(parts)


def _runs(mask: MaskRow, origins: Origins):
    """Consecutive keys with the same (block, piece, kind, visibility), and whether each holds the query."""
    runs = []
    for k, (c, v, kind) in enumerate(zip(mask.key_codes, mask.visible, mask.key_kinds)):
        piece = origins.piece_of(c)[0]
        block = mask.blocks[k] if mask.blocks else None
        key = (block, piece, kind, v, k == mask.query)
        if runs and runs[-1][0] == key:
            runs[-1][2] += 1
        else:
            runs.append([key, k, 1])
    return runs


def render_mask_row(mask: MaskRow, traj: Trajectory, text_of=None, thumbnail: bool = True) -> str:
    """The row as a bar over the layout's keys (kind colour where visible, pale where hidden, the
    query outlined), a table of what is visible from each piece, and a 2D thumbnail of the mask."""
    origins = Origins.of(traj)
    bar = []
    for (block, piece, kind, v, is_q), start, n in _runs(mask, origins):
        colour = KIND_COLORS.get(kind, "#937860")
        fill = colour if v else _tint(colour, 0.12)
        where = f"block {block}: " if block is not None else ""
        tip = (
            f"{where}{piece_label(piece)} · {KIND_LABELS.get(kind, kind)} · keys {start}–{start + n - 1} · "
            f"{'visible' if v else 'hidden'}{' · the query itself' if is_q else ''}"
        )
        cls = ' class="q"' if is_q else ""
        bar.append(f'<div{cls} style="flex:{n} 0 0;background:{fill}" title="{tip}"></div>')
    by_piece: OrderedDict = OrderedDict()
    for k, (c, v) in enumerate(zip(mask.key_codes, mask.visible)):
        piece = origins.piece_of(c)[0]
        name = piece_label(piece) + (f" (block {mask.blocks[k]})" if mask.blocks else "")
        seen, total = by_piece.get(name, (0, 0))
        by_piece[name] = (seen + v, total + 1)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{s:,} / {t:,}</td><td>"
        f"{'all visible' if s == t else 'hidden' if s == 0 else 'partly visible'}</td></tr>"
        for name, (s, t) in by_piece.items()
    )
    piece, idx = origins.piece_of(mask.query_code)
    what = f"{piece_label(piece)}, token {idx}"
    if text_of is not None:
        what += f" <code>{_show(text_of(traj.piece(piece)[idx]))}</code>"
    stage_name = {
        ("packed", 0): "the prompt stage",
        ("packed", 1): "the turn-block stage (prompt KV as prefix)",
    }.get((mask.shown_layout, mask.stage), f"stage {mask.stage}")
    extra = ""
    if mask.shown_layout == "stitched":
        h = home_turn(traj, mask.query_code, origins)
        extra = (
            f'<div class="mi-meta">stitched keeps each token once; its row is the one of its home turn '
            f"(turn {h}, the first that showed it), so a copy seen again later is not recomputed.</div>"
        )
    note = f'<div class="mi-warn">{html.escape(mask.note)}</div>' if mask.note else ""
    thumb = render_mask_thumbnail(mask) if thumbnail and mask.batch is not None else ""
    return (
        f"<h4>mask row in layout <b>{html.escape(mask.shown_layout)}</b> of {what}</h4>{note}"
        f'<div class="mi-meta">{stage_name}, row {mask.row}, query {mask.query} · sees '
        f"<b>{mask.n_visible:,}</b> of {len(mask.key_codes):,} keys</div>"
        f'<div class="mi-bar">{"".join(bar)}</div>{extra}'
        '<div class="mi-cols"><div><table class="mi-tab">'
        "<tr><th>keys from</th><th>visible</th><th></th></tr>"
        f'{rows}</table></div><div style="flex:0 0 auto">{thumb}</div></div>'
    )


def render_mask_thumbnail(mask: MaskRow, size: int = 160) -> str:
    """The whole 2D mask of the row's stage row (queries down, keys across), pooled to at most
    `size` pixels a side, visible cells in the key's kind colour; the selected query's row is red."""
    from PIL import Image

    batch = mask.batch
    st = batch.stages[mask.stage]
    n = st.lengths[mask.row]
    if n * (st.prefix_length + n) > MASK_BUDGET:
        return ""
    if st.visible is None:
        vis = torch.ones(n, n, dtype=torch.bool).tril()
    else:
        vis = st.visible[mask.row, :n]
        if st.prefix_rows is not None:
            pn = st.prefix_lengths[mask.row]
            keep = list(range(pn)) + [st.prefix_length + i for i in range(n)]
            vis = vis[:, keep]
        else:
            vis = vis[:, :n]
    kinds = mask.key_kinds
    Q, K = vis.shape
    sq, sk = -(-Q // size), -(-K // size)  # cells pooled into one pixel
    q2, k2 = -(-Q // sq), -(-K // sk)
    padded = torch.zeros(q2 * sq, k2 * sk, dtype=torch.bool)
    padded[:Q, :K] = vis
    frac = padded.view(q2, sq, k2, sk).sum((1, 3), dtype=torch.float32) / (sq * sk)  # (q2, k2)
    colours = torch.tensor(
        [_rgb(KIND_COLORS.get(kinds[min(c * sk + sk // 2, K - 1)], "#937860")) for c in range(k2)],
        dtype=torch.float32,
    )  # (k2, 3): the kind of each key group
    pooled = 255 - frac[..., None] * (255 - colours[None])  # (q2, k2, 3)
    q_self = mask.query - (len(kinds) - n)  # the query's row among this row's own tokens
    qr = min(q_self // sq, q2 - 1)
    pooled[qr] = pooled[qr] * 0.35 + torch.tensor([214.0, 39.0, 40.0]) * 0.65
    arr = pooled.clamp(0, 255).to(torch.uint8).numpy()
    im = Image.fromarray(arr, "RGB")
    scale = max(1, size // max(arr.shape[:2]))
    im = im.resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    return (
        f'<img class="mi-thumb" alt="2D mask" title="the whole mask of this row (queries down, keys across); '
        f'red: the selected query" src="data:image/png;base64,{data}" '
        f'style="image-rendering:pixelated;border:1px solid #bbb;width:{size}px;height:{size}px"/>'
    )


def render_compare(
    traj: Trajectory, partner: Trajectory | None, j: int, text_of, max_tokens: int = 240
) -> str:
    """[7] The same task under two agents, side by side: charts on one y-axis, and turn j of each
    (the context cut to `max_tokens`, the response in full)."""
    if partner is None:
        return (
            f'<div class="mi-meta">no other agent played task {html.escape(traj.task_id)} in the loaded '
            "files: roll it out with the same seed and split under the other agent to compare.</div>"
        )
    pair = sorted([traj, partner], key=lambda t: (t.agent != "mem1", t.agent))
    y_max = max(
        max((c + len(t.output_ids) for c, t in zip(x.context_lengths(), x.turns)), default=1) for x in pair
    )
    cols = []
    for x in pair:
        k = min(j, len(x.turns) - 1)
        view = turn_view(x, k)
        n = view.n_context
        ctx = render_tokens(view.ids[:n], view.kinds[:n], text_of, loss=False, max_tokens=max_tokens)
        resp = render_tokens(
            view.ids[n:], view.kinds[n:], text_of, loss=True, offset=n, max_tokens=max_tokens
        )
        cols.append(
            f"<div><h4>{html.escape(x.agent)} · {html.escape(x.policy)} · reward {x.reward:g} · "
            f"{len(x.turns)} turns · peak {x.peak_tokens:,}</h4>"
            + render_length_chart(
                x, current=k, y_max=y_max, width=400, title=f"{x.agent}: context fed per turn"
            )
            + f'<div class="mi-meta">turn {k}: context {n:,} tokens, response {view.n_response}</div>'
            f'<div class="mi-pane" style="max-height:220px">{ctx}</div>'
            f'<div class="mi-pane" style="max-height:120px;margin-top:3px">{resp}</div></div>'
        )
    return f'<h3>the same task, side by side</h3><div class="mi-cols">{"".join(cols)}</div>'


def render_warnings(warnings: Sequence[str], limit: int = 20) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings[:limit])
    more = f"<li>… and {len(warnings) - limit} more</li>" if len(warnings) > limit else ""
    return (
        f'<div class="mi-warn"><b>{len(warnings)} line(s) could not be loaded</b> (the rest loaded):'
        f'<ul style="margin:2px 0 0 16px;padding:0">{items}{more}</ul></div>'
    )


def default_token(view: TurnView) -> int:
    """The first response token: its mask row is what the turn's first prediction could attend to."""
    return view.n_context if view.n_response else max(0, len(view.ids) - 1)


def render_state(
    traj: Trajectory,
    j: int,
    token: int | None,
    layout: str,
    text_of,
    partner: Trajectory | None = None,
    cache: LayoutCache | None = None,
    source: str = "",
    max_tokens: int = MAX_TOKENS,
) -> dict[str, str]:
    """Every pane of the inspector for one state, as HTML fragments (each carrying its stylesheet)."""
    view = turn_view(traj, j)
    token = default_token(view) if token is None else token
    mask = mask_row_of(traj, j, token, layout, cache=cache, view=view)
    wrap = lambda body: f'{css()}<div class="mi">{body}</div>'  # noqa: E731
    return {
        "header": wrap(render_header(traj, source) + legend()),
        "turn": wrap(render_turn(traj, j, text_of, token, mask, max_tokens, view)),
        "chart": wrap(render_length_chart(traj, current=j)),
        "mask": wrap(render_mask_row(mask, traj, text_of)),
        "compare": wrap(render_compare(traj, partner, j, text_of)),
    }


# ---------------------------------------------------------------------------------------------
# Static export


def render_episode_html(
    traj: Trajectory,
    text_of,
    turn: int | None = None,
    layout: str = DEFAULT_LAYOUT,
    partner: Trajectory | None = None,
    warnings: Sequence[str] = (),
    source: str = "",
    token: int | None = None,
    max_tokens: int = 400,
    focus_tokens: int = MAX_TOKENS,
) -> str:
    """A self-contained HTML page of one episode. On top, the focused turn `turn` (default: the last)
    as the widget shows it: context and response, the length chart, and the mask row of `token` (a
    position in context + response, negative from the end; default: the first response token).
    Then the same task under the other agent, then every turn (collapsed; contexts cut to
    `max_tokens`) with the environment's reply."""
    if not traj.turns:
        raise InspectorError(f"{traj.task_id} has no turns to show")
    last = len(traj.turns) - 1
    turn = last if turn is None else turn
    if not 0 <= turn <= last:
        raise InspectorError(
            f"turn {turn} out of range: {traj.task_id} has {len(traj.turns)} turns (0..{last})"
        )
    view = turn_view(traj, turn)
    token = default_token(view) if token is None else token
    token = token + len(view.ids) if token < 0 else token  # -1: the turn's last token
    if not 0 <= token < len(view.ids):
        raise InspectorError(f"token {token} out of range: turn {turn} shows {len(view.ids)} tokens")
    mask = mask_row_of(traj, turn, token, layout, view=view)
    focus = (
        f'<div class="mi-cols"><div style="flex:1.35">'
        f"{render_turn(traj, turn, text_of, token, mask, focus_tokens, view)}</div>"
        f"<div>{render_length_chart(traj, current=turn)}{render_mask_row(mask, traj, text_of)}</div></div>"
    )
    sections = []
    for j in range(len(traj.turns)):
        v = view if j == turn else turn_view(traj, j)
        t = traj.turns[j]
        body = render_turn(traj, j, text_of, None, None, max_tokens, v) + render_observation(traj, j, text_of)
        summary = (
            f"turn {j} · {html.escape(t.action)} {html.escape(t.argument[:60])} · context "
            f"{v.n_context:,} tokens · response {v.n_response}"
        )
        sections.append(
            f'<section id="turn-{j}"><details><summary>{summary}</summary>{body}</details></section>'
        )
    title = f"{traj.task_id} · {traj.agent} · {traj.policy}"
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'{css()}</head><body class="mi" style="margin:16px;max-width:1400px">'
        f'<h2 style="font-size:17px;margin:0 0 4px">mem1lite trajectory inspector</h2>'
        f"{render_warnings(warnings)}{render_header(traj, source)}{legend()}"
        f'<h3 id="focus">turn {turn} of {len(traj.turns)}, token {token} · mask layout '
        f"<b>{html.escape(layout)}</b></h3>{focus}"
        f"{render_compare(traj, partner, turn, text_of)}"
        f"<h3>every turn (click to open)</h3>{''.join(sections)}</body></html>"
    )


def export_html(
    path,
    episode: int,
    out,
    turn: int | None = None,
    layout: str = DEFAULT_LAYOUT,
    tokenizer=None,
    compare: Sequence = (),
    token: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> Trajectory:
    """`mem1 inspect`: write the static page of the `episode`-th valid record (0-based) of the jsonl
    file `path` to `out`, atomically. The partner is looked for in `path` and the `compare` files."""
    if layout not in LAYOUTS:
        raise InspectorError(f"unknown layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    col = load_trajectories([path], strict_files=True)
    for w in col.warnings:
        (warn or (lambda m: None))(w)
    n = len(col.trajectories)
    if n == 0:
        raise InspectorError(f"{path} holds no valid trajectory")
    if not 0 <= episode < n:
        raise InspectorError(f"episode {episode} out of range: {path} holds {n} valid episodes (0..{n - 1})")
    traj = col.trajectories[episode]
    others = load_trajectories(list(compare), strict_files=True) if compare else Collection([], [], [])
    for w in others.warnings:
        (warn or (lambda m: None))(w)
    partner = find_partner(traj, col.trajectories + others.trajectories)
    text = render_episode_html(
        traj, as_token_text(tokenizer), turn=turn, layout=layout, partner=partner,
        warnings=col.warnings, source=f"{path} · record {episode}", token=token,
    )  # fmt: skip
    write_text(out, text)
    return traj


# ---------------------------------------------------------------------------------------------
# The widget


class Inspector:
    """ipywidgets over trajectories: filters, an episode picker, turn and token sliders, a layout
    picker; each change re-renders the panes through `render_state` (the widget holds no logic)."""

    def __init__(
        self,
        trajectories: Sequence[Trajectory] | Collection,
        tokenizer=None,
        layout: str = DEFAULT_LAYOUT,
        warnings: Sequence[str] = (),
        sources: Sequence[str] | None = None,
        max_tokens: int = MAX_TOKENS,
    ):
        import ipywidgets as w

        if isinstance(trajectories, Collection):
            col = trajectories
        else:
            col = Collection(list(trajectories), list(sources or ["memory"] * len(trajectories)), [])
        self.trajectories = [t for t in col.trajectories]
        self.sources = col.sources
        self.warnings = list(col.warnings) + list(warnings)
        self.text_of = as_token_text(tokenizer)
        self.max_tokens = max_tokens
        self.cache = LayoutCache()
        self._busy = False
        trajs = self.trajectories
        agents = sorted({t.agent for t in trajs})
        sizes = sorted({t.objectives for t in trajs})
        r_max = max([t.reward for t in trajs] + [1.0])
        # "any" is "" / 0, not None: a Dropdown whose value is None shows no selection at all
        self.agent_filter = w.Dropdown(options=[("any", "")] + [(a, a) for a in agents], description="agent")
        sizes_options = [("any", 0)] + [(str(n), n) for n in sizes]
        self.objectives_filter = w.Dropdown(options=sizes_options, description="N")
        self.reward_filter = w.FloatRangeSlider(
            value=(0.0, r_max), min=0.0, max=r_max, step=0.05, description="reward", continuous_update=False
        )
        self.episode = w.Dropdown(description="episode", layout=w.Layout(width="640px"))
        self.turn = w.IntSlider(min=0, max=0, description="turn", continuous_update=False)
        self.token = w.IntSlider(min=0, max=0, description="token", continuous_update=False,
                                 layout=w.Layout(width="520px"))  # fmt: skip
        self.token_box = w.BoundedIntText(min=0, max=0, layout=w.Layout(width="90px"))  # exact entry
        w.link((self.token, "max"), (self.token_box, "max"))
        w.link((self.token, "value"), (self.token_box, "value"))
        self.layout = w.Dropdown(options=list(LAYOUTS), value=layout, description="layout")
        self.status = w.HTML()
        names = ("header", "turn", "chart", "mask", "compare")
        self.panes = {name: w.HTML(layout=w.Layout(width="100%")) for name in names}
        for control, handler in (
            (self.agent_filter, self._on_filter),
            (self.objectives_filter, self._on_filter),
            (self.reward_filter, self._on_filter),
            (self.episode, self._on_episode),
            (self.turn, self._on_turn),
            (self.token, self._on_token),
            (self.layout, self._on_token),
        ):
            control.observe(handler, names="value")
        self.widget = w.VBox(
            [
                w.HTML(f'{css()}<div class="mi">{render_warnings(self.warnings)}</div>'),
                w.HBox([self.agent_filter, self.objectives_filter, self.reward_filter]),
                w.HBox([self.episode, self.status]),
                w.HBox([self.turn, self.token, self.token_box, self.layout]),
                self.panes["header"],
                w.HBox(
                    [
                        w.Box([self.panes["turn"]], layout=w.Layout(width="58%")),
                        w.VBox([self.panes["chart"], self.panes["mask"]], layout=w.Layout(width="42%")),
                    ]
                ),
                self.panes["compare"],
            ]
        )
        self._on_filter()

    @classmethod
    def from_paths(cls, paths, tokenizer=None, **kwargs) -> Inspector:
        """Open jsonl files or folders (malformed lines become warnings shown above the controls)."""
        return cls(load_trajectories(paths), tokenizer=tokenizer, **kwargs)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # -- state ------------------------------------------------------------------------------------

    @property
    def current(self) -> Trajectory | None:
        i = self.episode.value
        return None if i is None else self.trajectories[i]

    def matching(self) -> list[int]:
        agent, n = self.agent_filter.value or None, self.objectives_filter.value or None
        return filter_episodes(self.trajectories, agent, n, tuple(self.reward_filter.value))

    def label(self, i: int) -> str:
        t = self.trajectories[i]
        return (
            f"#{i} {self.sources[i]} · {t.task_id} · {t.agent} · {t.policy} · N={t.objectives} · "
            f"reward {t.reward:g} · {len(t.turns)} turns"
        )

    def html(self) -> str:
        """Every pane of the current state, concatenated (what the widget shows)."""
        return "".join(p.value for p in self.panes.values())

    # -- handlers ---------------------------------------------------------------------------------

    def _on_filter(self, change=None):
        keep = self.matching()
        previous = self.episode.value
        self._busy = True
        try:
            self.episode.options = [(self.label(i), i) for i in keep]
            self.episode.value = previous if previous in keep else (keep[0] if keep else None)
        finally:
            self._busy = False
        self.status.value = f"{len(keep)} of {len(self.trajectories)} episodes match"
        self._on_episode()

    def _on_episode(self, change=None):
        if self._busy:
            return
        traj = self.current
        if traj is None or not traj.turns:
            for p in self.panes.values():
                p.value = ""
            self.panes["header"].value = (
                f'{css()}<div class="mi"><div class="mi-meta">no episode matches the filters</div></div>'
                if traj is None
                else f'{css()}<div class="mi">{render_header(traj)}<div class="mi-meta">no turns</div></div>'
            )
            return
        self._busy = True
        try:
            self.turn.max = len(traj.turns) - 1
            self.turn.value = min(self.turn.value, self.turn.max)
        finally:
            self._busy = False
        self._on_turn()

    def _on_turn(self, change=None):
        if self._busy or self.current is None:
            return
        view = turn_view(self.current, self.turn.value)
        self._busy = True
        try:
            self.token.max = len(view.ids) - 1
            self.token.value = default_token(view)
        finally:
            self._busy = False
        self.render()

    def _on_token(self, change=None):
        if not self._busy and self.current is not None:
            self.render()

    def render(self) -> None:
        traj = self.current
        partner = find_partner(traj, self.trajectories)
        panes = render_state(
            traj, self.turn.value, self.token.value, self.layout.value, self.text_of, partner=partner,
            cache=self.cache, source=self.sources[self.episode.value], max_tokens=self.max_tokens,
        )  # fmt: skip
        for name, value in panes.items():
            self.panes[name].value = value
