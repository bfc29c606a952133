"""The command line: bad numbers are one-line errors before any work."""

import pytest


@pytest.mark.parametrize(
    "argv",
    [
        ["rollout", "--temperature", "nan"],
        ["rollout", "--temperature", "-1"],
        ["eval", "--temperature", "inf"],
        ["eval", "--top-p", "0"],
        ["eval", "--top-p", "1.5"],
        ["ppo", "--out", "o", "--minutes", "-1"],
        ["sft", "--out", "o", "--minutes-scale", "-1"],
        ["sft", "--out", "o", "--minutes-scale", "nan"],
    ],
)
def test_numeric_options_out_of_range_are_one_line_errors(argv, capsys):
    from mem1lite.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "expected" in err and "Traceback" not in err
