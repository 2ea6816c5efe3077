"""`boutique flags list | set | reset`, run as a real command on a real flag file."""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from boutique.flags import FlagFile, shipped

ME = f"local user {getpass.getuser()}"
HIGHLIGHT = "\033[1;33m"


def boutique(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `boutique ARGS` in `cwd` with no flag variables of the caller's environment (but those in `env`).

    The command runs in this process (`boutique.cli.main`, what the console script calls), which keeps
    the many cases here fast; `test_one_real_command_line` runs it as a separate program.
    """
    from boutique.cli import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    for name in ("FLAGD_OFFLINE_FLAG_SOURCE_PATH", "BOUTIQUE_DATA_DIR"):
        os.environ.pop(name, None)
    os.environ.update(env or {})
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse's own errors
                code = int(exit_.code or 0)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["boutique", *args], code, out.getvalue(), err.getvalue())


def test_one_real_command_line(tmp_path: Path) -> None:
    FlagFile(tmp_path / "flags.json").seed()
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FLAGD_OFFLINE_FLAG_SOURCE_PATH", "BOUTIQUE_DATA_DIR")
    }
    command = [sys.executable, "-m", "boutique.cli", "flags"]
    done = subprocess.run(
        [*command, "set", "adFailure", "on", "--file", str(tmp_path / "flags.json")],
        env=base, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and "adFailure: off → on" in done.stdout, done.stderr
    wrong = subprocess.run(
        [*command, "set", "adFailure", "maybe", "--file", str(tmp_path / "flags.json")],
        env=base, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "no variant 'maybe'" in wrong.stderr


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory with its flag file seeded, as `boutique up` leaves it."""
    FlagFile(tmp_path / "data" / "flags.json").seed()
    return tmp_path / "data"


def rows(output: str) -> dict[str, str]:
    """The lines of `flags list` by flag name."""
    found = {}
    for line in output.splitlines()[2:]:
        parts = line.split()
        if parts and parts[0] == "*":
            parts = parts[1:]
        if parts and parts[0] in shipped()["flags"]:
            found[parts[0]] = line
    return found


def test_list_shows_every_flag(data_dir: Path) -> None:
    result = boutique("flags", "list", "--data-dir", str(data_dir), cwd=data_dir.parent)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"flag file: {data_dir / 'flags.json'}"
    assert lines[1].split() == ["FLAG", "VARIANT", "RULE", "LAST", "CHANGE", "DESCRIPTION"]
    listed = rows(result.stdout)
    assert list(listed) == list(shipped()["flags"])
    for name, flag in shipped()["flags"].items():
        assert listed[name].startswith("   ")  # no star: as shipped
        assert flag["metadata"]["description"] in listed[name] and "never" in listed[name]
    assert lines[-1] == "every flag as shipped"
    assert "\033[" not in result.stdout  # no colour into a pipe


def test_set_then_list_highlights_it(data_dir: Path) -> None:
    result = boutique("flags", "set", "adFailure", "on", "--data-dir", str(data_dir), cwd=data_dir.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("adFailure: off → on")
    file = FlagFile(data_dir / "flags.json")
    assert file.read()["flags"]["adFailure"]["defaultVariant"] == "on"
    assert [(c.flag, c.variant, c.previous, c.by) for c in file.history()] == [("adFailure", "on", "off", ME)]
    listed = boutique("flags", "list", "--data-dir", str(data_dir), cwd=data_dir.parent).stdout
    line = rows(listed)["adFailure"]
    assert line.startswith("*") and " on " in line and f"by {ME}" in line
    assert "* 1 flag not as shipped" in listed


def test_set_with_a_rule(data_dir: Path) -> None:
    result = boutique(
        "flags", "set", "meshCallFault", "delay2s", "--when", "caller=frontend", "--when", "callee=cart",
        "--percent", "25", "--data-dir", str(data_dir), cwd=data_dir.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "delay2s when callee=cart, caller=frontend, 25%" in result.stdout
    flag = FlagFile(data_dir / "flags.json").read()["flags"]["meshCallFault"]
    assert flag["defaultVariant"] == "off" and "fractional" in json.dumps(flag["targeting"])
    line = rows(boutique("flags", "list", "--data-dir", str(data_dir), cwd=data_dir.parent).stdout)
    assert "callee=cart, caller=frontend, 25%" in line["meshCallFault"]


def test_reset_named_then_all(data_dir: Path) -> None:
    file = FlagFile(data_dir / "flags.json")
    for name, variant in (("adFailure", "on"), ("cartFailure", "50%"), ("imageSlowLoad", "5sec")):
        file.set(name, variant, by="someone")
    result = boutique("flags", "reset", "cartFailure", "--data-dir", str(data_dir), cwd=data_dir.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["cartFailure: 50% → off (as shipped)"]
    assert {v.name for v in file.views() if not v.is_default} == {"adFailure", "imageSlowLoad"}
    result = boutique("flags", "reset", "--data-dir", str(data_dir), cwd=data_dir.parent)
    assert sorted(result.stdout.splitlines()) == [
        "adFailure: on → off (as shipped)",
        "imageSlowLoad: 5sec → off (as shipped)",
    ]
    assert all(v.is_default for v in file.views())
    assert file.history()[-1].by == ME
    again = boutique("flags", "reset", "--data-dir", str(data_dir), cwd=data_dir.parent)
    assert again.returncode == 0 and again.stdout.strip() == "nothing to reset: every flag is as shipped"


def test_which_file(tmp_path: Path) -> None:
    files = {
        name: FlagFile(tmp_path / name / "flags.json") for name in ("default", "env-data", "env", "option")
    }
    for file in files.values():
        file.seed()
    (tmp_path / ".boutique").symlink_to(tmp_path / "default")

    def chosen(*args: str, env: dict[str, str] | None = None) -> str:
        result = boutique("flags", "list", *args, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()[0].removeprefix("flag file: ")

    assert chosen() == ".boutique/flags.json"  # like `boutique up`: ./.boutique
    assert chosen(env={"BOUTIQUE_DATA_DIR": str(tmp_path / "env-data")}) == str(files["env-data"].path)
    flagd = {"FLAGD_OFFLINE_FLAG_SOURCE_PATH": str(files["env"].path)}
    assert chosen(env=flagd) == str(files["env"].path)
    assert chosen("--file", str(files["option"].path), env=flagd) == str(files["option"].path)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("set", "noSuchFlag", "on"), "no flag named 'noSuchFlag'"),
        (("set", "adFailure", "maybe"), "adFailure has no variant 'maybe' (choose from off, on)"),
        (("set", "adFailure", "on", "--when", "caller"), "--when wants key=value"),
        (("set", "adFailure", "on", "--when", "caller="), "--when wants key=value"),
        (("set", "adFailure", "on", "--percent", "0"), "percent must be in (0, 100]"),
        (("set", "adFailure", "on", "--percent", "150"), "percent must be in (0, 100]"),
        (("set", "adFailure", "on", "--percent", "nan"), "percent must be in (0, 100]"),
        (("reset", "adFailure", "noSuchFlag"), "no flag named 'noSuchFlag'"),
    ],
)
def test_mistakes_are_one_line_and_change_nothing(data_dir: Path, args: tuple[str, ...], words: str) -> None:
    file = FlagFile(data_dir / "flags.json")
    file.set("cartFailure", "25%", by="someone")  # something a wrong reset would undo
    before = file.path.read_bytes(), file.history_path.read_bytes()
    result = boutique("flags", *args, "--data-dir", str(data_dir), cwd=data_dir.parent)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
    assert result.stderr.startswith(f"boutique flags {args[0]}: ") and result.stdout == ""
    assert (file.path.read_bytes(), file.history_path.read_bytes()) == before


@pytest.mark.parametrize(
    ("content", "words"),
    [(None, "no flag file (boutique up seeds one)"), ("{not json", "not JSON"), ('{"flags": 3}', "'flags'")],
)
def test_a_missing_or_broken_file(tmp_path: Path, content: str | None, words: str) -> None:
    path = tmp_path / "flags.json"
    if content is not None:
        path.write_text(content)
    for args in (("list",), ("set", "adFailure", "on"), ("reset",)):
        result = boutique("flags", *args, "--file", str(path), cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and words in result.stderr
        assert "Traceback" not in result.stderr
    assert (path.read_text() if path.exists() else None) == content


def test_highlight_on_a_terminal(data_dir: Path) -> None:
    FlagFile(data_dir / "flags.json").set("adFailure", "on", by="someone")
    for no_colour in (False, True):
        leader, follower = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | (
            {"NO_COLOR": "1"} if no_colour else {}
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "boutique.cli", "flags", "list", "--data-dir", str(data_dir)],
            stdout=follower,
            env=env,
        )
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closes when the command ends
                break
            if not chunk:
                break
            output += chunk
        os.close(leader)
        assert process.wait(60) == 0
        text = output.decode()
        highlighted = [line for line in text.splitlines() if HIGHLIGHT in line]
        if no_colour:
            assert not highlighted
        else:
            assert len(highlighted) == 1 and "adFailure" in highlighted[0]


def test_the_cli_loads_the_command_only_when_run() -> None:
    code = "import sys, boutique.cli; boutique.cli.build_parser(); print('boutique.run.flags_command' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
