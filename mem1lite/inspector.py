"""The trajectory inspector: step through an episode and see exactly what the model saw.

    from mem1lite.inspector_widget import Inspector
    Inspector.from_paths("data/examples")          # in JupyterLab: every *.jsonl of a folder, or files

    mem1 inspect runs/x.jsonl --episode 3 --html out.html [--turn J] [--layout packed]

It reads `trajectory.Trajectory` records (any agent, policy or environment: it uses nothing past the
record's own fields) and shows, for one turn: the context the model was fed and the response it
wrote, token by token, coloured by kind and marked where the loss applies; the context length of
every turn with the peak marked; the row of the training mask of a selected token (what that token
may attend to in a layout of masks.py); and the same task played by the other agent beside it.

Three layers, a module each. This one reads records and works out what to show, with no HTML:
loading, token text, what the model saw at turn j (`turn_view`), mask rows (`mask_row_of`).
inspector_html.py renders it as HTML strings (`render_turn`, `render_length_chart`,
`render_mask_row`, `render_compare`, `render_episode_html`), tested without a browser, and
`export_html` writes the static page of one episode (`mem1 inspect`). inspector_widget.py's
`Inspector` is a thin ipywidgets shell that calls them when a control changes.

Details (the code repeats the numbers):

1. Token text is the tokenizer's text of each recorded id, decoded one id at a time and cached:
   never a decoded-then-retokenised string. A byte-level token that is half a UTF-8 character
   shows as U+FFFD.
2. Kinds: the prompt is `p`, observations `i` and a response carries its recorded `output_kinds`
   (terms.KIND_LETTERS); a context's kinds come from `masks.span_kinds`, so copies of an earlier
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

import bisect
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .masks import build_layout, mask_row, packed_blocks, span_kinds
from .model import TINY_DIR, load_tokenizer
from .terms import DEFAULT_LAYOUT, LAYOUTS
from .trajectory import PROMPT, LoadReport, Trajectory, read_jsonl

MAX_TOKENS = 1200
"""tokens a pane draws at most (head + window around the selection + tail) [4]"""
MASK_BUDGET = 48_000_000
"""largest visibility matrix (cells) built for a mask row: 48 MB of bool, ~1 s in packed_dense [6]"""
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


def same_task(a: Trajectory, b: Trajectory) -> bool:
    """[7] The same task: its id, and its domain, split and questions (a task id names a draw, which
    another world or catalogue fills with other questions)."""
    return (a.task_id, a.env, a.split, a.questions) == (b.task_id, b.env, b.split, b.questions)


def check_token_ids(trajs: Iterable[Trajectory], size: int, tokenizer_name: str) -> None:
    """Every token id of `trajs` is one of the tokenizer's `size` ids, or one line says which is not
    (trajectories written with another tokenizer would be drawn as other text)."""
    for t in trajs:
        pieces = [t.prompt_ids] + [ids for turn in t.turns for ids in (turn.output_ids, turn.observation_ids)]
        top = max((max(ids) for ids in pieces if ids), default=-1)
        if top >= size:
            raise InspectorError(
                f"{t.task_id} ({t.agent}) holds token id {top:,}, outside the {size:,} ids of "
                f"{tokenizer_name}: "
                "written with another tokenizer? give it with --tokenizer DIR"
            )


def find_partner(traj: Trajectory, pool: Iterable[Trajectory]) -> Trajectory | None:
    """[7] The same task under the other agent (mem1 <-> full), the same policy preferred."""
    want = COMPARE_AGENTS.get(traj.agent)
    candidates = [t for t in pool if t is not traj and same_task(t, traj) and t.agent != traj.agent]
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
