"""The trajectory inspector (mem1lite/inspector.py).

- what a turn shows: the exact context ids, kinds and loss marks, tokens coloured by kind;
- mask rows read from masks.py: the exact layouts agree with per_turn on every token, packed_dense
  hides what mem1 pruned, stitched gives a kept copy the row of its home turn;
- the widget: episode, turn, token and layout controls change the rendered HTML; filters;
- bad input: malformed and truncated jsonl lines are named by file:line and the rest loads;
- a 20k-token full-agent trajectory renders fast, cut with a marker;
- `mem1 inspect` writes a self-contained page, and fails with one line on bad input;
- a browser check: the page screenshotted in headless Chromium (skipped without chromium).
"""

import html
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mem1lite import inspector as I
from mem1lite import inspector_html as H
from mem1lite import inspector_widget as W
from mem1lite.cli import main
from mem1lite.generate import TeacherPolicy
from mem1lite.model import TINY_DIR, load_tokenizer
from mem1lite.protocol import QAEnvironment
from mem1lite.retrieval import PoolRetrievers
from mem1lite.rollout import FullAgent, RolloutConfig, make_agent, run_episodes
from mem1lite.terms import EXACT_LAYOUTS, KIND_COLORS, LAYOUTS
from mem1lite.trajectory import Trajectory, Turn, token_kinds, write_jsonl
from mem1lite.world import make_tasks

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def text_of(tokenizer):
    return I.TokenText(tokenizer)


def hand_made(tokenizer, agent="mem1", turns=3, task_id="hand-0"):
    """A small episode with known text: searches, then an answer (the last turn)."""

    def enc(s):
        return tokenizer.encode(s, add_special_tokens=False)

    traj = Trajectory(
        task_id=task_id,
        split="dev",
        questions=["Who is the founder of Gevorn Bank?", "Where was Talis Morrow born?"],
        golds=["Talis Morrow", "Velmora Vale"],
        agent=agent,
        policy="teacher",
        prompt_ids=enc("Answer the questions. Questions: 1. Who? 2. Where?"),
        em=2.0 if agent == "mem1" else 1.0,
    )
    policy = make_agent(agent, truncate_tokens=12)
    for j in range(turns):
        last = j == turns - 1
        text = f"<think> note{j}</think>" + (
            "<answer> a; b</answer>" if last else f"<search> query{j}</search>"
        )
        out = enc(text)
        traj.turns.append(
            Turn(
                spans=policy.spans(traj),
                output_ids=out,
                logprobs=[-0.25] * len(out),
                output_kinds=token_kinds(tokenizer, out, False),
                observation_ids=[] if last else enc(f"<information> doc{j} says hello</information>"),
                action="answer" if last else "search",
                argument="a; b" if last else f"query{j}",
            )
        )
    return traj


@pytest.fixture(scope="module")
def teacher(world):
    """Teacher episodes of the same tasks (N = 2) under mem1, full and truncate."""
    tokenizer = load_tokenizer(TINY_DIR)
    retriever = PoolRetrievers(world)["dev"]
    tasks = make_tasks(world, "dev", 2, 2, seed=0)
    out = {}
    for agent in ("mem1", "full", "truncate"):
        envs = [QAEnvironment.from_task(t, retriever) for t in tasks]
        cfg = RolloutConfig(agent=agent, seed=0, progress=False, truncate_tokens=150)
        out[agent] = run_episodes(TeacherPolicy(tokenizer), tokenizer, envs, cfg, tasks)
    return out


def long_full_trajectory(tokens=21_000, turns=40, seed=0):
    """A synthetic full-agent episode whose last context holds more than `tokens` tokens."""
    import random

    rng = random.Random(seed)
    obs_len = tokens // turns
    traj = Trajectory(
        "long-0", "dev", ["q"], ["a"], "full", "synthetic", [rng.randrange(300, 4000) for _ in range(60)]
    )
    agent = FullAgent()
    for _ in range(turns):
        out = [rng.randrange(300, 4000) for _ in range(40)]
        traj.turns.append(
            Turn(
                spans=agent.spans(traj),
                output_ids=out,
                logprobs=[-1.0] * len(out),
                output_kinds="s" * 30 + "a" * 10,
                observation_ids=[rng.randrange(300, 4000) for _ in range(obs_len)],
                action="search",
            )
        )
    return traj


# ---------------------------------------------------------------------------------------------
# What a turn shows


def test_turn_view_is_the_recorded_context_then_the_response(tokenizer):
    traj = hand_made(tokenizer, "mem1")
    view = I.turn_view(traj, 2)
    assert view.ids == traj.context_ids(2) + traj.turns[2].output_ids
    assert view.n_context == len(traj.prompt_ids) + len(traj.turns[1].output_ids) + len(
        traj.turns[1].observation_ids
    )
    p, r1 = len(traj.prompt_ids), len(traj.turns[1].output_ids)
    assert view.kinds[:p] == "p" * p
    assert view.kinds[p : p + r1] == traj.turns[1].output_kinds  # the copied response keeps its kinds
    assert set(view.kinds[p + r1 : view.n_context]) == {"i"}
    assert [view.in_loss(i) for i in range(len(view.ids))] == [
        i >= view.n_context for i in range(len(view.ids))
    ]
    with pytest.raises(I.InspectorError, match="turn 3 out of range"):
        I.turn_view(traj, 3)


def test_render_turn_colours_kinds_and_marks_the_loss(tokenizer, text_of):
    traj = hand_made(tokenizer, "mem1")
    view = I.turn_view(traj, 1)
    out = H.render_turn(traj, 1, text_of, selected=view.n_context)
    # the response's state tokens are underlined (loss); the prompt's are not
    assert '<span class="mi-t k-state loss sel"' in out  # the first response token, selected
    shown = html.unescape(re.sub(r"<[^>]+>", "", out))
    assert "<think> note1</think><search> query1</search>" in shown  # the token texts, in order
    assert "Answer the questions." in shown and "<information> doc0 says hello</information>" in shown
    assert '<span class="mi-t k-prompt" title="pos 0' in out
    assert 'class="mi-t k-action loss"' in out and 'class="mi-t k-info"' in out
    assert "k-info loss" not in out and "k-prompt loss" not in out
    style = H.css()
    for letter, name in (("s", "state"), ("a", "action"), ("i", "info"), ("A", "answer"), ("e", "error")):
        assert (
            f".k-{name}{{background:{H._tint(KIND_COLORS[letter], 0.28)};--mi-c:{KIND_COLORS[letter]}}}"
            in style
        )
    last = H.render_turn(traj, 2, text_of)
    assert "k-answer loss" in last and "→ answer" in last


def test_windows_and_gap_marker():
    assert H.windows(10, 20) == [(0, 10)]
    w = H.windows(10_000, 100, focus=5_000)
    assert sum(e - s for s, e in w) == 100 and any(s <= 5_000 < e for s, e in w)
    assert w[0][0] == 0 and w[-1][1] == 10_000
    assert H.windows(10_000, 100) == [(0, 12), (9_912, 10_000)]
    assert "⋯ 88 tokens not shown (positions 12–99) ⋯" in H.gap_marker(12, 100)


# ---------------------------------------------------------------------------------------------
# Mask rows


@pytest.mark.parametrize("agent", ["mem1", "full", "truncate"])
def test_exact_layout_rows_equal_the_per_turn_row_on_every_token(teacher, agent):
    traj = teacher[agent][0]
    cache = I.LayoutCache()  # one build per layout
    for j in range(len(traj.turns)):
        view = I.turn_view(traj, j)
        for pos in range(0, len(view.ids), 5):
            ref = I.mask_row_of(traj, j, pos, "per_turn", cache=cache, view=view)
            # per_turn: exactly the tokens before it in this turn's view, itself included
            assert ref.visible_codes() == set(view.codes[: pos + 1])
            for layout in EXACT_LAYOUTS:
                row = I.mask_row_of(traj, j, pos, layout, cache=cache, view=view)
                assert row.query_code == view.codes[pos]
                assert row.visible_codes() == ref.visible_codes(), (layout, j, pos)


def test_packed_dense_row_hides_what_mem1_pruned(tokenizer):
    traj = hand_made(tokenizer, "mem1", turns=4)
    o = I.Origins.of(traj)
    view = I.turn_view(traj, 3)
    row = I.mask_row_of(traj, 3, view.n_context + 2, "packed_dense", view=view)
    pieces = {o.piece_of(c)[0] for c in row.visible_codes()}
    assert pieces == {-1, 4, 5, 6}  # prompt, response 2 (its copy), observation 2, response 3 so far
    hidden = {o.piece_of(c)[0] for c, v in zip(row.key_codes, row.visible) if not v}
    assert {0, 1, 3} <= hidden  # earlier turns are in the row but masked out
    assert row.blocks is not None and max(row.blocks) >= 2
    pane = H.render_mask_row(row, traj, I.TokenText(tokenizer))
    assert "observation 0 (block 1)" in pane and "hidden" in pane and "data:image/png;base64," in pane


def test_stitched_row_of_a_kept_copy_is_its_home_turn(tokenizer):
    traj = hand_made(tokenizer, "mem1", turns=4)
    o = I.Origins.of(traj)
    view = I.turn_view(traj, 3)
    first_copy = len(traj.prompt_ids)  # the first token of response 2, shown again at turn 3
    stitched = I.mask_row_of(traj, 3, first_copy, "stitched", view=view)
    exact = I.mask_row_of(traj, 3, first_copy, "packed", view=view)
    assert {o.piece_of(c)[0] for c in exact.visible_codes()} == {-1, 4}
    # at its home turn 2 it saw response 1 and observation 1: stitched shows that, not turn 3's view
    assert {o.piece_of(c)[0] for c in stitched.visible_codes()} == {-1, 2, 3, 4}
    assert I.home_turn(traj, view.codes[first_copy], o) == 2
    assert "home turn (turn 2" in H.render_mask_row(stitched, traj)


def test_a_layout_that_cannot_be_built_falls_back_to_per_turn(tokenizer):
    traj = hand_made(tokenizer, "full")
    traj.turns[1].spans = traj.turns[1].spans[1:]  # no prompt: packed refuses it (it shares the prompt)
    row = I.mask_row_of(traj, 1, 3, "packed")
    assert row.shown_layout == "per_turn" and "cannot be built" in row.note
    assert row.visible_codes() == set(I.turn_view(traj, 1).codes[:4])
    small = I.mask_row_of(hand_made(tokenizer, "full"), 2, 5, "stitched", budget=10)
    assert small.shown_layout == "per_turn" and "would hold" in small.note


def test_find_partner_prefers_the_other_agent_and_policy(tokenizer):
    mem1 = hand_made(tokenizer, "mem1")
    full = hand_made(tokenizer, "full")
    other = hand_made(tokenizer, "truncate")
    stranger = hand_made(tokenizer, "full", task_id="hand-9")
    assert I.find_partner(mem1, [stranger, other, mem1, full]) is full
    assert I.find_partner(other, [mem1, other]) is mem1
    assert I.find_partner(stranger, [mem1, full, stranger]) is None


# ---------------------------------------------------------------------------------------------
# The widget


def test_widget_controls_change_the_rendered_html(teacher, tokenizer):
    trajs = teacher["mem1"] + teacher["full"]
    insp = W.Inspector(trajs, tokenizer=tokenizer)
    assert insp.episode.value == 0 and insp.turn.value == 0
    first = insp.html()
    assert trajs[0].task_id in insp.panes["header"].value
    assert "full · teacher" in insp.panes["compare"].value  # the same task under full, beside it
    # episode
    insp.episode.value = 1
    assert trajs[1].task_id in insp.panes["header"].value and insp.html() != first
    # turn: the context grows to prompt + response 0 + observation 0; the token jumps to the reply
    insp.turn.value = 1
    view = I.turn_view(trajs[1], 1)
    assert insp.token.value == view.n_context and insp.token.max == len(view.ids) - 1
    assert "turn 1: context fed" in insp.panes["turn"].value
    assert "prompt, response 0, observation 0" in insp.panes["turn"].value
    # token: the outline moves, and the mask row sees one more key per step
    mask_before = insp.panes["mask"].value
    n_before = I.mask_row_of(trajs[1], 1, insp.token.value, "packed").n_visible
    insp.token.value += 5
    assert insp.panes["mask"].value != mask_before
    assert f"sees <b>{n_before + 5:,}</b>" in insp.panes["mask"].value
    assert f'title="pos {insp.token.value} · id {view.ids[insp.token.value]}' in insp.panes["turn"].value
    sel = insp.panes["turn"].value.split(" sel")[0].rsplit("<span", 1)[1]
    assert "loss" in sel  # a response token: in the loss
    # layout
    insp.layout.value = "stitched"
    assert "mask row in layout <b>stitched</b>" in insp.panes["mask"].value
    # a context token is loss-masked, and tokens after it are faded
    insp.token.value = 3
    assert "loss-masked" in insp.panes["turn"].value.split("selected token 3:")[1]
    assert 'class="mi-t k-prompt u"' in insp.panes["turn"].value


def test_widget_filters(teacher, tokenizer):
    trajs = teacher["mem1"] + teacher["full"] + [hand_made(tokenizer, "mem1")]
    trajs[-1].em = 0.0
    insp = W.Inspector(trajs, tokenizer=tokenizer)
    assert len(insp.episode.options) == 5
    insp.agent_filter.value = "full"
    assert [v for _, v in insp.episode.options] == [2, 3] and insp.current.agent == "full"
    assert "2 of 5 episodes match" in insp.status.value
    insp.agent_filter.value = ""
    insp.reward_filter.value = (0.0, 0.5)
    assert [v for _, v in insp.episode.options] == [4] and insp.current.task_id == "hand-0"
    insp.objectives_filter.value = 2
    insp.reward_filter.value = (1.5, 2.0)
    assert len(insp.episode.options) == 4 and insp.current.policy == "teacher"
    insp.agent_filter.value = "full"
    insp.reward_filter.value = (0.0, 0.0)
    assert insp.episode.options == () and insp.current is None
    assert "no episode matches" in insp.panes["header"].value and insp.panes["turn"].value == ""


# ---------------------------------------------------------------------------------------------
# Bad input


def test_malformed_lines_are_named_and_the_rest_loads(tmp_path, tokenizer):
    good = [hand_made(tokenizer, "mem1", task_id=f"hand-{i}") for i in range(3)]
    path = write_jsonl(good, tmp_path / "x.jsonl")
    lines = path.read_text().splitlines()
    lines.insert(1, lines[1][: len(lines[1]) // 2])  # a truncated line (line 2)
    lines.insert(3, "not json at all")  # line 4
    lines.append(json.dumps({"schema": "other/9"}))  # line 6
    path.write_text("\n".join(lines) + "\n")
    col = I.load_trajectories(tmp_path)
    assert [t.task_id for t in col.trajectories] == ["hand-0", "hand-1", "hand-2"]
    assert [w.split(": ")[0] for w in col.warnings] == [f"{path}:2", f"{path}:4", f"{path}:6"]
    insp = W.Inspector.from_paths([path, tmp_path / "missing.jsonl"], tokenizer=tokenizer)
    banner = insp.widget.children[0].value
    assert f"{path}:2" in banner and f"{path}:4" in banner and "missing.jsonl: no such file" in banner
    assert len(insp.episode.options) == 3


def test_long_trajectory_stays_responsive(tokenizer, text_of):
    traj = long_full_trajectory()
    j = len(traj.turns) - 1
    view = I.turn_view(traj, j)
    assert view.n_context >= 20_000
    cache = I.LayoutCache()
    for layout in LAYOUTS:
        t0 = time.perf_counter()
        panes = H.render_state(traj, j, view.n_context // 2, layout, text_of, cache=cache)
        seconds = time.perf_counter() - t0
        assert seconds < 3.0, (layout, seconds)
        turn = panes["turn"]
        assert turn.count('<span class="mi-t ') <= I.MAX_TOKENS + len(traj.turns[j].output_ids)
        assert "tokens not shown" in turn and ' sel"' in turn  # cut, and the selection drawn
        assert len(turn) < 400_000
        if layout != "per_turn":  # quadratic masks of 20k tokens are not built: the per_turn row
            assert "shown: the per_turn row" in panes["mask"]
    row = I.mask_row_of(traj, j, view.n_context // 2, "packed_dense", cache=cache, view=view)
    assert row.shown_layout == "per_turn" and "too big" not in row.note and "per_turn row" in row.note
    assert row.n_visible == view.n_context // 2 + 1
    # the widget over it: moving the token re-renders fast
    insp = W.Inspector([traj], tokenizer=tokenizer)
    insp.turn.value = j
    t0 = time.perf_counter()
    insp.token_box.value = 12_345  # the exact-entry box drives the slider
    assert time.perf_counter() - t0 < 2.0 and insp.token.value == 12_345
    assert 'title="pos 12345 ' in insp.panes["turn"].value


# ---------------------------------------------------------------------------------------------
# mem1 inspect


def test_cli_inspect_writes_a_self_contained_page(tmp_path, teacher, capsys):
    mem1 = write_jsonl(teacher["mem1"], tmp_path / "m.jsonl")
    full = write_jsonl(teacher["full"], tmp_path / "f.jsonl")
    out = tmp_path / "page" / "out.html"
    assert main(["inspect", str(mem1), "--episode", "1", "--html", str(out), "--compare", str(full)]) == 0
    page = out.read_text()
    traj = teacher["mem1"][1]
    assert page.startswith("<!doctype html>") and "</html>" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    assert traj.task_id in page and "full · teacher" in page
    assert page.count('<section id="turn-') == len(traj.turns)
    assert f"turn {len(traj.turns) - 1} of {len(traj.turns)}" in page  # the last turn on top
    assert not list(out.parent.glob("*.tmp"))
    assert "wrote" in capsys.readouterr().out
    # --turn, --token, --layout
    assert main(["inspect", str(mem1), "--episode", "0", "--html", str(out), "--turn", "1", "--token", "-1",
                 "--layout", "stitched"]) == 0  # fmt: skip
    page = out.read_text()
    assert "turn 1 of" in page and "mask row in layout <b>stitched</b>" in page


def test_cli_inspect_errors_are_one_line(tmp_path, teacher, capsys):
    mem1 = write_jsonl(teacher["mem1"], tmp_path / "m.jsonl")
    out = tmp_path / "out.html"
    cases = [
        (["--episode", "2"], "episode 2 out of range: "),
        (["--episode", "-1"], "episode -1 out of range"),
        (["--episode", "0", "--turn", "99"], "turn 99 out of range"),
        (["--episode", "0", "--token", "99999"], "token 99999 out of range"),
    ]
    for extra, message in cases:
        assert main(["inspect", str(mem1), "--html", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mem1: error: {message}") and err.count("\n") == 1, err
    assert main(["inspect", str(tmp_path / "nope.jsonl"), "--episode", "0", "--html", str(out)]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err
    assert not out.exists()
    # a malformed line: a warning naming file:line, and the page is still written
    mem1.write_text(mem1.read_text() + '{"schema": "mem1lite.trajectory/1", "task_id": \n')
    assert main(["inspect", str(mem1), "--episode", "1", "--html", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"mem1: warning: {mem1}:3: " in err and out.exists()


# ---------------------------------------------------------------------------------------------
# Shipped examples and the browser


def test_shipped_examples_load_cleanly():
    col = I.load_trajectories(ROOT / "data" / "examples")
    assert not col.warnings
    agents = {(t.agent, t.policy, t.objectives) for t in col.trajectories}
    assert {
        ("mem1", "teacher", 2),
        ("full", "teacher", 2),
        ("mem1", "teacher", 4),
        ("full", "teacher", 4),
    } <= agents
    assert sum(f.stat().st_size for f in (ROOT / "data" / "examples").iterdir()) < 2_000_000


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_headless_chromium_screenshot(tmp_path):
    shot = tmp_path / "inspector.png"
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "screenshot_inspector.sh"), str(shot)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    from PIL import Image

    im = Image.open(shot)
    assert im.size == (1400, 1720)  # tall: the side by side with full context below the focused turn
    colours = {c for _, c in im.convert("RGB").getcolors(1 << 20)}
    # the page drew: many colours, among them the kind colours of the tokens
    assert len(colours) > 16
    near = lambda c, hexc: all(abs(a - b) <= 24 for a, b in zip(c, H._rgb(hexc)))  # noqa: E731
    assert any(near(c, KIND_COLORS["s"]) for c in colours) and any(near(c, KIND_COLORS["i"]) for c in colours)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_widget_renders_in_jupyterlab(tmp_path):
    """The live ipywidgets inspector in a throwaway JupyterLab, driven by headless Chromium (~25 s)."""
    shot = tmp_path / "lab.png"
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "screenshot_inspector.sh"), "--lab", str(shot)],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "widget rendered in JupyterLab" in run.stdout and shot.stat().st_size > 10_000


def test_a_line_nested_past_the_parsers_depth_is_a_named_warning(tmp_path, tokenizer, capsys):
    """json.loads raises RecursionError, not a ValueError, on a line nested ~100k deep."""
    from mem1lite.cli import main

    path = write_jsonl([hand_made(tokenizer, "mem1", task_id="hand-0")], tmp_path / "x.jsonl")
    with open(path, "a") as f:
        f.write("[" * 100_000 + "]" * 100_000 + "\n")
    col = I.load_trajectories(path)
    assert [t.task_id for t in col.trajectories] == ["hand-0"]
    assert [w.split(": ")[0] for w in col.warnings] == [f"{path}:2"] and "RecursionError" in col.warnings[0]
    deep = tmp_path / "deep.jsonl"
    deep.write_text("{" + '"a":{' * 100_000 + "}" * 100_001 + "\n")
    assert main(["inspect", str(deep), "--episode", "0", "--html", str(tmp_path / "o.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mem1: error:") and str(deep) in err[-1] and not (tmp_path / "o.html").exists()
    assert not any("Traceback" in line for line in err)


# ---------------------------------------------------------------------------------------------
# Trust only what was checked (issue #32)


def test_compare_pairs_the_same_task_not_the_same_id_of_another_world(tmp_path, teacher, capsys):
    """A task id names a draw (split, N, seed, index): another world fills it with other questions."""
    import dataclasses

    mem1 = write_jsonl(teacher["mem1"], tmp_path / "m.jsonl")
    elsewhere = [
        dataclasses.replace(t, questions=[q + " (elsewhere)" for q in t.questions]) for t in teacher["full"]
    ]
    other = write_jsonl(elsewhere, tmp_path / "other-world.jsonl")
    assert I.find_partner(teacher["mem1"][0], elsewhere) is None
    out = tmp_path / "o.html"
    assert main(["inspect", str(mem1), "--episode", "0", "--html", str(out), "--compare", str(other)]) == 2
    err = capsys.readouterr().err
    assert "asks other questions than under mem1" in err and err.count("\n") == 1 and not out.exists()


def test_token_ids_outside_the_tokenizer_or_values_no_run_gives_are_refused(tmp_path, teacher, capsys):
    traj = json.loads(teacher["mem1"][0].to_json())
    out = tmp_path / "o.html"
    big = dict(traj, prompt_ids=traj["prompt_ids"] + [10**6])  # a valid id, but not this tokenizer's
    (tmp_path / "big.jsonl").write_text(json.dumps(big) + "\n")
    assert main(["inspect", str(tmp_path / "big.jsonl"), "--episode", "0", "--html", str(out)]) == 2
    assert "holds token id 1,000,000, outside the 5,668 ids of" in capsys.readouterr().err
    for broken, why in [
        (dict(traj, prompt_ids=[-3]), "prompt_ids holds something other than token ids"),
        (dict(traj, em=float("inf")), "em inf is outside 0..2"),
        (dict(traj, em=-5), "em -5 is outside 0..2"),
        (dict(traj, per_slot_em=[1.0, 3.0]), "per_slot_em [1.0, 3.0] holds a value outside 0..1"),
    ]:
        with pytest.raises(ValueError, match=re.escape(why)):
            Trajectory.from_dict(broken)
    assert not out.exists()
