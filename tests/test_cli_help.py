"""`--help` fits a screen: the command's own options and one line per config section; `--help
SECTION` shows that section, `--help-all` everything."""

from asyncvla.cli import main
from asyncvla.cli_help import boxes, short_help

TEXT = """usage: x [-h] [X OPTIONS]

 options
 ----------------------------------------
  --preset STR
        Preset.

 env options
 ----------------------------------------
  --env.id STR
  --env.seed INT

 env.wrappers options
 ----------------------------------------
  --env.wrappers.latency-s FLOAT
"""


def test_sections_are_split_by_their_title_and_rule():
    head, bs = boxes(TEXT)
    assert head == ["usage: x [-h] [X OPTIONS]", ""]
    assert [t for t, _ in bs] == ["", "env", "env.wrappers"]
    assert sum(ln.startswith("  --") for ln in bs[1][1]) == 2


def test_a_section_includes_its_subsections(monkeypatch):
    monkeypatch.setattr("asyncvla.cli_help.MAX_LINES", 5)
    env = short_help(TEXT, "env")
    assert "--env.id" in env and "--env.wrappers.latency-s" in env and "--preset" not in env
    top = short_help(TEXT, None)
    assert "--preset" in top and "--env.id" not in top and "3 options   x --help env" in top


def test_train_help_fits_a_screen_and_names_every_section(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 60 and "--mode {sync,async}" in out and "None,sync" not in out
    for section in ("env", "policy", "algo", "runtime", "run", "warm-start"):
        assert f"asyncvla train --help {section}" in out
    assert main(["train", "--help", "algo"]) == 0
    algo = capsys.readouterr().out
    assert "--algo.clip-high" in algo and "--env.id" not in algo
    assert main(["train", "--help-all"]) == 0  # tyro's full help
    assert len(capsys.readouterr().out.splitlines()) > 300
    assert main(["train", "--help", "nope"]) == 0
    assert "no section 'nope'; sections: env, policy, algo" in capsys.readouterr().out


def test_the_section_hints_name_a_nested_subcommand_in_full(capsys):
    assert main(["bench", "policy", "--help"]) == 0
    out = capsys.readouterr().out
    assert "asyncvla bench policy --help " in out and "asyncvla bench --help" not in out


def test_help_on_a_bad_preset_is_the_one_line_error(capsys):
    assert main(["train", "--preset", "nope", "--help"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("asyncvla: error: preset='nope' is invalid")
