import pytest

from mem1lite.metrics import (
    dependency,
    exact_match,
    f1,
    normalize_answer,
    peak_tokens,
    score_answers,
    split_answers,
)


def test_squad_normalisation():
    assert normalize_answer("  The  Gevorn, Bank! ") == "gevorn bank"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer(None) == "" and normalize_answer(3) == ""


def test_exact_match_and_f1_values():
    assert exact_match("the Velmora Vale.", "Velmora Vale") == 1.0
    assert exact_match("Velmora", "Velmora Vale") == 0.0
    assert exact_match("", "") == 0.0
    assert f1("Velmora", "Velmora Vale") == pytest.approx(2 / 3)
    assert f1("Velmora Vale Bank", "Velmora Vale") == pytest.approx(0.8)
    assert f1("x", ["Velmora Vale", "x"]) == 1.0


def test_multi_objective_scoring_is_per_slot():
    golds = ["Talis Morrow", "Velmora Vale", "Gevorn Bank"]
    s = score_answers("Talis Morrow; Velmora Vale; Gevorn Bank", golds)
    assert s.em == 3.0 and s.f1 == pytest.approx(3.0)
    s = score_answers("Talis Morrow; Gevorn Bank", golds)  # one slot missing: only it scores 0
    assert s.per_slot_em == (1.0, 0.0, 0.0) and s.em == 1.0
    s = score_answers("Talis Morrow;Velmora Vale;Gevorn Bank;extra;more", golds)  # extras ignored
    assert s.em == 3.0
    s = score_answers("; Velmora Vale", golds)
    assert s.per_slot_em == (0.0, 1.0, 0.0)


@pytest.mark.parametrize("bad", [None, 42, b"\xff\xfe", "", ";;;", "\x00\x01", ["list"]])
def test_malformed_answers_score_zero_and_never_raise(bad):
    s = score_answers(bad, ["Talis Morrow", "Velmora Vale"])
    assert s.em == 0.0 and s.f1 == 0.0 and len(s.per_slot_em) == 2


def test_split_answers():
    assert split_answers(" a ; b;c ") == ["a", "b", "c"]
    assert split_answers(None) == [] and split_answers("  ") == []


def test_peak_tokens_and_dependency_hand_computed():
    assert peak_tokens([120, 340, 200]) == 340 and peak_tokens([]) == 0
    # (100 + 10/2)*10 + (150 + 20/2)*20 = 1050 + 3200
    assert dependency([100, 150], [10, 20]) == 4250.0
    with pytest.raises(ValueError):
        dependency([1, 2], [3])


def test_paired_bootstrap_interval():
    from mem1lite.metrics import paired_bootstrap

    a = [0.0] * 100 + [1.0] * 100
    b = [1.0] * 50 + a[50:]  # the same items: 50 more solved, none lost
    r = paired_bootstrap(a, b)
    assert r["diff"] == pytest.approx(0.25) and r["excludes_zero"] and r["low"] > 0.15
    same = paired_bootstrap(a, a)
    assert same["diff"] == 0.0 and not same["excludes_zero"]
    noisy = paired_bootstrap([0, 1] * 10, [1, 0] * 10)
    assert not noisy["excludes_zero"] and noisy["low"] < 0 < noisy["high"]
    with pytest.raises(ValueError):
        paired_bootstrap([1, 2], [1])


def test_mean_interval_brackets_the_mean_and_refuses_nothing_to_resample():
    from mem1lite.metrics import mean_interval

    mean, lo, hi = mean_interval([0.0, 1.0] * 16)
    assert mean == 0.5 and 0.3 < lo < 0.5 < hi < 0.7
    assert mean_interval([0.75] * 8) == (0.75, 0.75, 0.75)
    with pytest.raises(ValueError, match="non-empty"):
        mean_interval([])
