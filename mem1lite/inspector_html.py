"""The inspector's HTML: styles, token panes, the length chart, mask rows, the side-by-side view,
and the static page of one episode (`mem1 inspect`). Pure functions from what inspector.py works
out to HTML strings; the numbered details are inspector.py's.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch

from .files import write_text
from .inspector import (
    MASK_BUDGET,
    MAX_TOKENS,
    Collection,
    InspectorError,
    LayoutCache,
    MaskRow,
    Origins,
    TokenText,
    TurnView,
    as_token_text,
    check_token_ids,
    find_partner,
    home_turn,
    load_trajectories,
    mask_row_of,
    piece_label,
    same_task,
    turn_view,
)
from .terms import DEFAULT_LAYOUT, KIND_COLORS, KIND_LABELS, KIND_LETTERS, LAYOUTS
from .trajectory import Trajectory

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
    if partner is None and compare:  # asked for a side by side: a same-id task of another draw is said
        for other in others.trajectories:
            if other.task_id == traj.task_id and other.agent != traj.agent and not same_task(other, traj):
                raise InspectorError(
                    f"--compare: task {traj.task_id} under {other.agent} asks other questions than under "
                    f"{traj.agent} (another world, catalogue or split): not the same task, not compared"
                )
    text_of = as_token_text(tokenizer)
    if isinstance(text_of, TokenText):  # a callable given by a caller is trusted with its ids
        name = tokenizer if isinstance(tokenizer, (str, os.PathLike)) else "the tokenizer"
        check_token_ids(
            [traj] + ([partner] if partner else []), len(text_of.tokenizer), str(name or "data/tiny")
        )
    text = render_episode_html(
        traj, text_of, turn=turn, layout=layout, partner=partner,
        warnings=col.warnings, source=f"{path} · record {episode}", token=token,
    )  # fmt: skip
    write_text(out, text)
    return traj
