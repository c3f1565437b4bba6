"""examples/train_mnist.py (and ensemble_mnist.py) refuse bad arguments and unwritable output
paths with one argparse ``error:`` line (exit 2) before MNIST is loaded, creating nothing.

The examples are those next to the fastconv package imported (so a checkout of an older commit
tests its own). In-process, ``load_mnist`` is replaced by one that fails the test; the
subprocess runs point FASTCONV_DATA at an empty folder and every proxy at a closed port, so a
run that got as far as loading MNIST would fail there, differently, and without the network.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastconv

EXAMPLES = Path(fastconv.__file__).resolve().parents[1] / "examples"
if not (EXAMPLES / "train_mnist.py").is_file():
    pytest.skip(f"no examples folder next to {fastconv.__file__}", allow_module_level=True)

BAD = [
    ["--epochs", "-1"], ["--epochs", "two"], ["--batch-size", "0"], ["--batch-size", "-5"],
    ["--val-split", "1.5"], ["--val-split", "-0.1"], ["--lr", "-1"], ["--lr", "0"], ["--lr", "nan"],
    ["--gamma", "0"], ["--weight-decay", "-0.0001"], ["--seed", "-1"], ["--limit", "-59990"],
    ["--limit", "0"], ["--val-split", "0.05", "--limit", "10"], ["--resume"],
]
MISSING = "no/such/dir/w.npz"  # relative: the error must name the path as the user gave it
OUTPUTS = [["--save", MISSING], ["--checkpoint", MISSING], ["--plot", MISSING.replace(".npz", ".png")]]


@pytest.fixture
def example(monkeypatch):
    """Import an example module by name with ``load_mnist`` made to fail the test."""
    monkeypatch.syspath_prepend(str(EXAMPLES))

    def get(name):
        module = __import__(name)
        monkeypatch.setattr(module, "load_mnist", lambda *a, **k: pytest.fail("MNIST was loaded"))
        return module
    yield get
    for name in ("train_mnist", "ensemble_mnist"):
        sys.modules.pop(name, None)


def _refused(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv", BAD, ids=" ".join)
def test_train_mnist_refuses_out_of_range_arguments_before_loading(example, capsys, argv):
    line = _refused(example("train_mnist").main, argv, capsys)
    assert argv[0] in line  # names the option


@pytest.mark.parametrize("argv", OUTPUTS, ids=lambda a: a[0])
def test_train_mnist_checks_output_paths_before_loading(example, capsys, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    line = _refused(example("train_mnist").main, argv, capsys)
    assert f"{argv[0]} {argv[1]}" in line and "does not exist" in line
    (tmp_path / "a-folder").mkdir()
    line = _refused(example("train_mnist").main, [argv[0], "a-folder"], capsys)
    assert "a-folder" in line and "folder" in line
    line = _refused(example("train_mnist").main, ["--save", "w.npz", "--checkpoint", "./w.npz"], capsys)
    assert "same file" in line
    assert sorted(os.listdir(tmp_path)) == ["a-folder"]  # nothing was created


@pytest.mark.parametrize("argv", [["--nets", "0"], ["--images", "5"], ["--val-size", "-3"],
                                  ["--lrs", "0.1,x"], ["--lrs", "0.1,-2"], ["--batch-size", "0"]],
                         ids=" ".join)
def test_ensemble_mnist_refuses_bad_arguments_before_loading(example, capsys, argv):
    line = _refused(example("ensemble_mnist").main, argv, capsys)
    assert argv[0] in line


@pytest.fixture
def offline(tmp_path):
    """``(env, data, cwd)``: an empty FASTCONV_DATA, proxies on a reserved host name that resolves nowhere, an empty cwd."""
    data, cwd = tmp_path / "data", tmp_path / "cwd"
    data.mkdir()
    cwd.mkdir()
    env = dict(os.environ, FASTCONV_DATA=str(data), PYTHONPATH=str(EXAMPLES.parent), no_proxy="",
               NO_PROXY="", **{k: "http://proxy.invalid:9" for k in ("http_proxy", "https_proxy",
                                                                 "HTTP_PROXY", "HTTPS_PROXY")})
    return env, data, cwd


def _run(argv, offline):
    env, _, cwd = offline
    return subprocess.run([sys.executable, str(EXAMPLES / "train_mnist.py"), *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [["--epochs", "-1"], ["--limit", "-59990"], ["--save", MISSING]],
                         ids=" ".join)
def test_the_command_line_exits_2_with_one_error_line_and_creates_nothing(offline, argv):
    out = _run(argv, offline)
    assert out.returncode == 2, out.stderr
    assert "error:" in out.stderr and "Traceback" not in out.stderr, out.stderr
    _, data, cwd = offline
    assert not os.listdir(data) and not os.listdir(cwd)


def test_the_offline_setup_would_fail_at_loading(offline):
    """The control: good arguments get past parsing and fail where MNIST is read."""
    out = _run(["--epochs", "1", "--limit", "100"], offline)
    assert out.returncode != 0 and "error:" not in out.stderr
    assert "could not download" in out.stderr, out.stderr[-2000:]
