"""Failure anatomy: each class of first divergence on hand-made responses, turn kinds, the tables."""

import pytest

from mem1lite.anatomy import (
    CLASSES,
    Anatomy,
    Divergence,
    TurnCheck,
    classify,
    exactness_figure,
    first_divergence,
    load_anatomy,
    parts_right,
    same_response,
    turn_kind,
)
from mem1lite.protocol import task_prompt
from mem1lite.teacher import teacher_for, teacher_response

Q = ["What is the birthplace of the founder of Gevorn Bank?", "Who is the mayor of Velmora Vale?"]
INFO1 = "<information>Doc 1(Title: Gevorn Bank) The founder of Gevorn Bank is Talis Morrow.</information>"
INFO2 = "<information>Doc 1(Title: Talis Morrow) The birthplace of Talis Morrow is Oskel Ford.</information>"
INFO3 = "<information>Doc 1(Title: Velmora Vale) The mayor of Velmora Vale is Dara Quill.</information>"


def context(assistant: str = "", questions=Q) -> str:
    return f"<|im_start|>user\n{task_prompt(questions)}<|im_end|>\n<|im_start|>assistant\n{assistant}"


def say(answers: str, question: str, now: str, action: str) -> str:
    return f"<think> answers: {answers}. question: {question} now: {now}.</think>{action}"


# the teacher's path through the task, turn by turn (mem1 view: the last response and observation)
T0 = teacher_response(context())
T1 = teacher_response(context(T0 + INFO1))
T2 = teacher_response(context(T1 + INFO2))
T3 = teacher_response(context(T2 + INFO3))


def test_the_teacher_path_used_below():
    assert T1.endswith("<search> Talis Morrow</search>") and "now: the birthplace of Talis Morrow." in T1
    assert "answers: Oskel Ford. question: Who is the mayor of Velmora Vale?" in T2
    assert T3.endswith("<answer> Oskel Ford; Dara Quill</answer>")


@pytest.mark.parametrize(
    "ctx, policy, expected",
    [
        # answering after the first question only (one answer for two questions)
        (
            context(T1 + INFO2),
            say("Oskel Ford", "none.", "none", "<answer> Oskel Ford</answer>"),
            "premature answer",
        ),
        # both answers given, the second being the bridge just read: the hop was taken for the answer
        (
            context(T0 + INFO1),
            say("Talis Morrow; Dara Quill", "none.", "none", "<answer> Talis Morrow; Dara Quill</answer>"),
            "premature answer",
        ),
        (
            context(T2 + INFO3),
            say("Oskel Ford; Dara Quill", "none.", "none", "<search> Dara Quill</search>"),
            "late answer",
        ),
        # the answer held is altered while copying the list
        (
            context(T2 + INFO3),
            say("Oskel Fjord; Dara Quill", "none.", "none", "<answer> Oskel Fjord; Dara Quill</answer>"),
            "answers list corrupted",
        ),
        (
            context(T2 + INFO3),
            say(
                "Oskel Ford; Oskel Ford", Q[1], "the mayor of Velmora Vale", "<search> Velmora Vale</search>"
            ),
            "late answer",
        ),
        # the bridge entity taken as the answer of question 1
        (
            context(T0 + INFO1),
            say("Talis Morrow", Q[1], "the mayor of Velmora Vale", "<search> Velmora Vale</search>"),
            "hop confusion",
        ),
        # the answer taken as another bridge
        (
            context(T1 + INFO2),
            say("none", Q[0], "the mayor of Oskel Ford", "<search> Oskel Ford</search>"),
            "hop confusion",
        ),
        # the right hop, a wrong value read
        (
            context(T1 + INFO2),
            say("Oskel Fen", Q[1], "the mayor of Velmora Vale", "<search> Velmora Vale</search>"),
            "reading error",
        ),
        (
            context(T0 + INFO1),
            say("none", Q[0], "the birthplace of Talis Morrin", "<search> Talis Morrin</search>"),
            "reading error",
        ),
        # the same question, its text miscopied (now holds the hop: harmless until the next question)
        (
            context(T0 + INFO1),
            say(
                "none",
                "What is the birthplace of the founder of Gevorn Bonk?",
                "the birthplace of Talis Morrow",
                "<search> Talis Morrow</search>",
            ),
            "question miscopied",
        ),
        # the answers list right, the wrong question taken next (here: question 1 again)
        (
            context(T1 + INFO2),
            say("Oskel Ford", Q[0], "the founder of Gevorn Bank", "<search> Gevorn Bank</search>"),
            "wrong next question",
        ),
        (
            context(T1 + INFO2),
            say("Oskel Ford", Q[1], "the mayor of Velmora Vale", "<search> Velmora</search>"),
            "wrong query",
        ),
        (context(T1 + INFO2), "<think> notes</think>", "format error"),
        (context(T1 + INFO2), "<think> my own notes</think><search> Velmora Vale</search>", "format error"),
    ],
)
def test_each_class_of_first_divergence(ctx, policy, expected):
    teacher = teacher_response(ctx)
    assert not same_response(policy, teacher)
    assert classify(ctx, policy, teacher) == expected
    assert expected in CLASSES


def test_the_bridge_given_as_the_last_answer_is_hop_confusion():
    ctx = context(T2 + INFO3.replace("Dara Quill", "Dara Quill") + "")
    # at question 2 (one hop): teacher answers; a policy that answers is not premature
    assert turn_kind(ctx, teacher_response(ctx)) == "final answer"
    two_hop = ["Who is the mayor of Velmora Vale?", "What is the birthplace of the founder of Gevorn Bank?"]
    t0 = teacher_response(context(questions=two_hop))
    t1 = teacher_response(context(t0 + INFO3, two_hop))
    ctx = context(t1 + INFO1, two_hop)  # question 2's bridge (Talis Morrow) just read
    policy = say("Dara Quill; Talis Morrow", "none.", "none", "<answer> Dara Quill; Talis Morrow</answer>")
    assert classify(ctx, policy, teacher_response(ctx)) == "hop confusion"


def test_same_response_ignores_spacing_but_not_content():
    assert same_response(T1, T1.replace("<search> ", "<search>"))
    assert not same_response(T1, T1.replace("Talis Morrow</search>", "Talis Morro</search>"))
    assert not same_response("<think>x</think>", "<think>x</think>")  # malformed is never equal


def test_turn_kinds_and_parts():
    assert turn_kind(context(), T0) == "first search"
    assert turn_kind(context(T0 + INFO1), T1) == "bridge hop"
    assert turn_kind(context(T1 + INFO2), T2) == "next question"
    assert turn_kind(context(T2 + INFO3), T3) == "final answer"
    miss = context(T2 + "<information>No results.</information>")
    assert turn_kind(miss, teacher_response(miss)) == "retry"
    wrong_question = say("Oskel Ford", Q[0], "the mayor of Velmora Vale", "<search> Velmora Vale</search>")
    assert parts_right(wrong_question, T2) == {
        "answers": True,
        "question": False,
        "now": True,
        "action": True,
    }
    assert parts_right("garbage", T2) == dict.fromkeys(("answers", "question", "now", "action"), False)
    # a numbered state is compared with its number
    numbered = teacher_for("number")(context(T1 + INFO2))
    assert parts_right(numbered.replace("question: 2.", "question: 1."), numbered)["question"] is False


def test_a_wrong_hop_marker_is_hop_confusion():
    hop = teacher_for("hop")
    t0 = hop(context())
    t1 = hop(context(t0 + INFO1))
    assert "(hop 2 of 2)" in t1
    wrong = t1.replace("(hop 2 of 2)", "(hop 1 of 2)")  # the right fact, marked as the first hop
    assert classify(context(t0 + INFO1), wrong, t1) == "hop confusion"
    assert parts_right(wrong, t1)["now"] is False and parts_right(t1, t1)["now"] is True
    assert not same_response(wrong, t1) and same_response(t1, t1)


class _Tok:
    """Decoding that is the identity on lists of characters (a trajectory of text)."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(ids)


class _Traj:
    def __init__(self, responses, answer, em=0.0):
        observations = [INFO1, INFO2, INFO3, ""]
        self.objectives, self.em, self.episode, self.answer = 2, em, 0, answer
        self.prompt = context()
        self.turns = [type("T", (), {"output_ids": list(r)})() for r in responses]
        self.observations = observations

    def context_ids(self, j):
        if j == 0:
            return list(self.prompt)
        return list(self.prompt + "".join(self.turns[j - 1].output_ids) + self.observations[j - 1])


def test_first_divergence_walks_to_the_first_wrong_turn():
    tok, teacher = _Tok(), teacher_response
    assert (
        first_divergence(_Traj([T0, T1, T2, T3], "Oskel Ford; Dara Quill", 2.0), tok, teacher).kind == "none"
    )
    bad = say("Oskel Fen", Q[1], "the mayor of Velmora Vale", "<search> Velmora Vale</search>")
    d = first_divergence(_Traj([T0, T1, bad, T3], "x", 0.0), tok, teacher)
    assert (d.kind, d.turn, d.k, d.policy) == ("reading error", 2, 0, bad)
    assert first_divergence(_Traj([T0, T1], None), tok, teacher).kind == "out of turns"


def test_tables_count_episodes_and_turns():
    divergences = [
        Divergence(2, 0, "none"),
        Divergence(2, 1, "reading error", 2, 0),
        Divergence(8, 0, "premature answer", 9, 4),
        Divergence(8, 1, "premature answer", 11, 5),
    ]
    checks = [
        TurnCheck(
            2, 0, 0, "first search", True, dict.fromkeys(("answers", "question", "now", "action"), True)
        ),
        TurnCheck(
            2,
            1,
            1,
            "next question",
            False,
            {"answers": True, "question": False, "now": False, "action": False},
        ),
        TurnCheck(8, 5, 1, "bridge hop", True, dict.fromkeys(("answers", "question", "now", "action"), True)),
    ]
    a = Anatomy("m", "dev", divergences, checks)
    table = a.class_table()
    assert table[2]["none"] == 1 and table[2]["reading error"] == 1 and table[8]["premature answer"] == 2
    assert sum(table[8].values()) == 2
    by_k = a.exactness_by("k")
    assert by_k[0]["exact"] == 1.0 and by_k[1]["turns"] == 2 and by_k[1]["exact"] == 0.5
    assert by_k[1]["question"] == 0.5 and by_k[1]["answers"] == 1.0
    assert list(a.exactness_by("kind")) == ["first search", "bridge hop", "next question"]
    assert a.exact_grid() == {2: {0: 1.0, 1: 0.0}, 8: {1: 1.0}}
    md = a.markdown()
    # premature answer, reading error, none, mean first turn, EM per objective
    assert "| 8 | 2 | 0 | 0 | 10.0 | 0.00 |" in md
    assert "| 1 | 0.00 | 1.00 |" in md  # k = 1: N = 2, N = 8
    assert '"premature answer": 2' in a.to_json()
    again = Anatomy.from_json(a.to_json())
    assert again.markdown() == md and again.divergences == a.divergences and again.checks == a.checks


def test_cli_refuses_what_it_cannot_diagnose(tmp_path, capsys):
    from mem1lite.cli import main

    assert main(["diagnose", "--policy", "teacher"]) == 2
    assert "not 'teacher'" in capsys.readouterr().err
    assert main(["diagnose", "--policy", str(tmp_path / "nothing")]) == 2
    assert "unknown policy" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse refuses the size itself (cli._objective_list)
        main(["diagnose", "--policy", str(tmp_path), "--objectives", "0"])
    assert exit_.value.code == 2 and "expected numbers >= 1" in capsys.readouterr().err
    assert main(["diagnose", "--policy", str(tmp_path), "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_cli_rebuilds_tables_from_a_saved_diagnosis(tmp_path, capsys):
    from mem1lite.cli import main

    a = Anatomy("m", "dev", [Divergence(2, 0, "reading error", 2, 0, 0.5)], [])
    saved = tmp_path / "a.json"
    saved.write_text(a.to_json())
    assert main(["diagnose", "--records", str(saved), "--markdown", str(tmp_path / "a.md")]) == 0
    assert (tmp_path / "a.md").read_text() == a.markdown()
    assert main(["diagnose", "--records", str(tmp_path / "a.md")]) == 2
    assert "not a saved diagnosis" in capsys.readouterr().err
    assert main(["diagnose", "--records", str(saved), "--policy", "sft"]) == 2
    assert main(["diagnose"]) == 2


def test_committed_diagnoses_load_and_draw_by_answers_held():
    """Notebooks 03 and 04 read docs/results/anatomy/NAME.json without replay; the figure has one
    panel per policy, one line per N, and the wall of the data drawn where it is given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n8, a = load_anatomy("sft-n8"), Anatomy("m", "dev", [], [TurnCheck(2, 0, 0, "first search", True, {})])
    assert n8.policy == "sft-n8" and max(n8.exact_grid()) == 16
    fig = exactness_figure([n8, a], data_max_n={"sft-n8": 8})
    left, right = fig.axes
    assert len(left.lines) == len(n8.exact_grid()) + 1  # one per N, and the dotted wall at k = 8
    assert len(right.lines) == 1 and list(right.lines[0].get_xdata()) == [0]
    plt.close(fig)


@pytest.mark.parametrize(
    "field, value", [("em", float("inf")), ("em", -5), ("objectives", "2"), ("turn", -1), ("kind", 3)]
)
def test_a_saved_diagnosis_with_values_no_run_gives_is_refused(tmp_path, capsys, field, value):
    """Issue #32: --records trusts only what was checked; an EM of inf or -5 is never drawn."""
    import json

    from mem1lite.cli import main

    good = {"objectives": 2, "episode": 0, "kind": "none", "turn": 1, "k": 0, "em": 0.5}
    saved = tmp_path / "d.json"
    saved.write_text(
        json.dumps({"policy": "p", "split": "dev", "divergences": [good | {field: value}], "checks": []})
    )
    assert main(["diagnose", "--records", str(saved), "--markdown", str(tmp_path / "a.md")]) == 2
    err = capsys.readouterr().err
    assert f"is not a saved diagnosis (ValueError: Divergence.{field} = " in err and err.count("\n") == 1
    assert not (tmp_path / "a.md").exists()
