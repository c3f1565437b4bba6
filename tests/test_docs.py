"""The README's and the guides' code blocks work as written.

Every fenced ```python block of README.md, CONTRIBUTING.md and docs/*.md runs in this process, in a
fresh namespace with a temporary working folder, within BLOCK_SECONDS, and must not raise. Every
```bash / ```sh block is checked without being run: it parses (``bash -n``); each ``python -m M``
names a module and each ``python path.py`` a file that answers ``--help`` (with the subcommand, if
one is written), and each ``--option`` written after it is one that help lists; ``pip install``
names only extras setup.cfg declares; each repository path on a command line exists. Relative
links point at files that exist. A marker, an HTML comment on the line before the fence, changes
that:

* ``<!-- no-run -->`` before a Python block: compile it only (a fragment that needs the reader's
  own model or data, or a run that takes minutes);
* ``<!-- run -->`` before a shell block: also run it with bash, in a temporary folder linking to
  the repository's top-level entries (for cheap commands only).

Blocks that read MNIST (``load_mnist(`` or a command that reads it) get FASTCONV_DATA, else
``../shared/mnist`` beside the project, and skip without it; a block importing an optional extra
that is missing skips naming it. Under ``FASTCONV_REQUIRE_ALL=1`` both skips fail the run
(conftest.py). Nothing downloads.
"""
import functools
import os
import re
import shlex
import signal
import subprocess
import sys
import traceback
from collections import namedtuple
from configparser import ConfigParser
from pathlib import Path

import pytest

import fastconv

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FASTCONV_DATA") or ROOT.parent / "shared" / "mnist")
#: Wall-clock budget of one block; the cheap blocks take a few seconds with Numba's cache warm.
BLOCK_SECONDS = 60
#: Top-level packages of the optional extras: a block importing a missing one skips.
OPTIONAL = {"torch", "onnx", "onnxruntime", "matplotlib", "mpi4py"}
#: What in a block's text means it reads the MNIST files (Python; shell blocks that run).
READS_MNIST = {"python": ("load_mnist(",),
               "shell": ("fastconv.onnx run", "train_mnist.py", "visualize.py", "ensemble_mnist.py")}
SHELL = {"bash", "sh", "shell", "console"}
#: Repository folders whose paths on a command line must exist.
REPO_DIRS = ("tests/", "benchmarks/", "examples/", "fastconv/", "docs/", ".ci/")

Block = namedtuple("Block", "doc index lang line marker text")


def doc_files():
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [f for f in files if f.is_file()]


def read_blocks(path):
    """The top-level fenced blocks of a markdown file, numbered per kind (python, shell)."""
    lines, found, counts, i = path.read_text(encoding="utf-8").splitlines(), [], {}, 0
    while i < len(lines):
        fence = re.match(r"^```\s*(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), len(lines))
        lang = fence.group(1).lower()
        kind = "python" if lang in ("python", "py") else "shell" if lang in SHELL else None
        if kind:
            marker = re.match(r"^<!--\s*([\w-]+)\s*-->\s*$", lines[i - 1]) if i else None
            counts[kind] = counts.get(kind, -1) + 1
            found.append(Block(path.relative_to(ROOT).as_posix(), counts[kind], kind, i + 2,
                               marker and marker.group(1), "\n".join(lines[i + 1:end]) + "\n"))
        i = end + 1
    return found


BLOCKS = [b for f in doc_files() for b in read_blocks(f)]


def params(kind):
    return [pytest.param(b, id=f"{b.doc}[{b.index}]") for b in BLOCKS if b.lang == kind]


def where(block):
    return f"{block.doc}, {block.lang} block {block.index} (line {block.line})"


def mnist_or_skip(block):
    """The environment a block that reads MNIST needs; skips when the files are not there."""
    if any(s in block.text for s in READS_MNIST[block.lang]):
        if not any((DATA / f"t10k-labels-idx1-ubyte{gz}").exists() for gz in ("", ".gz")):
            pytest.skip(f"MNIST files not found in {DATA} (set FASTCONV_DATA) for {where(block)}")
        return {"FASTCONV_DATA": str(DATA)}
    return {}


class BlockTimeout(Exception):
    pass


def _timeout(signum, frame):
    raise BlockTimeout(f"over its {BLOCK_SECONDS} s budget: make it cheaper or mark it <!-- no-run -->")


_ran = {}  # (doc, index) -> (namespace, folder) of each Python block that ran to its end


def run_python(block, tmp_path_factory):
    """Run a Python block (after the one it continues) once; its namespace and folder."""
    key = (block.doc, block.index)
    if key in _ran:
        return _ran[key]
    if block.marker == "continued":
        before = [b for b in BLOCKS if b.doc == block.doc and b.lang == "python" and b.index < block.index]
        assert before and before[-1].marker != "no-run", f"{where(block)} continues no block that runs"
        namespace, folder = run_python(before[-1], tmp_path_factory)
    else:
        assert block.marker is None, f"{where(block)}: unknown marker <!-- {block.marker} -->"
        namespace, folder = {"__name__": "__main__"}, tmp_path_factory.mktemp("doc")
    mnist_or_skip(block)
    code = compile("\n" * (block.line - 1) + block.text, str(ROOT / block.doc), "exec")
    cwd, backend = os.getcwd(), fastconv.get_backend()
    handler, failure, missing = signal.signal(signal.SIGALRM, _timeout), None, None
    signal.setitimer(signal.ITIMER_REAL, BLOCK_SECONDS)
    try:
        os.chdir(folder)
        exec(code, namespace)
    except Exception as exc:  # reported with the block's own frames, not the whole document
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in OPTIONAL:
            missing = exc.name
        else:
            lines = traceback.format_exception(exc)
            failure = f"{where(block)} raised:\n" + "".join(lines[:1] + lines[2:][-8:])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, handler)
        os.chdir(cwd)
        fastconv.set_backend(backend)
        fastconv.set_num_threads(None)
    if missing:
        pytest.skip(f"could not import {missing} (an optional extra) for {where(block)}")
    if failure:
        pytest.fail(failure, pytrace=False)
    _ran[key] = namespace, folder
    return _ran[key]


@pytest.mark.parametrize("block", params("python"))
def test_python_block(block, tmp_path_factory, monkeypatch):
    if block.marker == "no-run":
        compile(block.text, where(block), "exec")
        return
    if DATA.is_dir():
        monkeypatch.setenv("FASTCONV_DATA", str(DATA))
    run_python(block, tmp_path_factory)


def commands(text):
    """Each simple command of a shell block, as its list of words (comments dropped)."""
    for line in re.sub(r"\\\n", " ", text).splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        cmd, skip = [], False
        for token in list(lexer) + [";"]:
            if token in ("&&", "||", ";", "|", "&"):
                if cmd:
                    yield cmd
                cmd = []
            elif token in (">", ">>", "<", "2>"):
                skip = True
            elif skip:
                skip = False
            else:
                cmd.append(token)


def program(cmd):
    """The words from the program on: variable assignments, ``env`` and ``mpiexec`` dropped."""
    i = 0
    while i < len(cmd) and re.match(r"^[A-Za-z_]\w*=", cmd[i]):
        i += 1
    if i < len(cmd) and cmd[i] == "env":
        i += 1
        while i < len(cmd) and (cmd[i].startswith("-") or "=" in cmd[i]):
            i += 2 if cmd[i] in ("-u", "--unset") else 1
    if i < len(cmd) and cmd[i] in ("mpiexec", "mpirun"):
        pythons = [j for j in range(i, len(cmd)) if cmd[j] in ("python", "python3")]
        assert pythons, f"{shlex.join(cmd)}: mpiexec starts no python"
        i = pythons[0]
    return cmd[i:]


@functools.lru_cache(maxsize=None)
def help_text(entry):
    """``python <entry> --help`` run from the repository root: (exit status, output)."""
    done = subprocess.run([sys.executable, *entry, "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, COLUMNS="200"))
    return done.returncode, done.stdout + done.stderr


@functools.lru_cache(maxsize=None)
def extras():
    cfg = ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return set(cfg["options.extras_require"])


def check_pip(args, line):
    for word in args:
        named = re.match(r"^\.\[([\w,-]+)\]$", word)
        if named:
            unknown = set(named.group(1).split(",")) - extras()
            assert not unknown, f"{line}: setup.cfg declares no extra {sorted(unknown)}"


def check_python(args, line):
    if args[:1] == ["-c"]:
        compile(args[1], line, "exec")
        return
    if args[:2] == ["-m", "pip"]:
        return check_pip(args[2:], line)
    if args[:1] == ["-m"]:
        entry, rest = tuple(args[:2]), args[2:]
    else:
        assert args and (ROOT / args[0]).is_file(), f"{line}: no file {args[:1]} in the repository"
        entry, rest = tuple(args[:1]), args[1:]
    if rest and not rest[0].startswith("-") and not (ROOT / rest[0].split("::")[0]).exists():
        entry, rest = entry + (rest[0],), rest[1:]  # a subcommand (not a path): ask for its own help
    status, out = help_text(entry)
    assert status == 0, f"{line}: `python {' '.join(entry)} --help` failed ({status}):\n{out[-2000:]}"
    for word in rest:
        option = word.split("=")[0]
        if option.startswith("--") and not re.search(re.escape(option) + r"(?![\w-])", out):
            raise AssertionError(f"{line}: {option} is not an option of `python {' '.join(entry)}`")


@pytest.mark.parametrize("block", params("shell"))
def test_shell_block(block, tmp_path):
    parsed = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True)
    assert parsed.returncode == 0, f"{where(block)} does not parse: {parsed.stderr}"
    assert block.marker in (None, "run"), f"{where(block)}: unknown marker <!-- {block.marker} -->"
    for cmd in commands(block.text):
        line, words = f"{where(block)}: `{shlex.join(cmd)}`", program(cmd)
        for word in words[1:]:
            path = word.split(":")[0]
            if path.startswith(REPO_DIRS) and "*" not in path:
                assert (ROOT / path).exists(), f"{line}: no {path} in the repository"
        if words[:1] in (["python"], ["python3"]):
            check_python(words[1:], line)
        elif words[:1] == ["pip"]:
            check_pip(words[1:], line)
        elif words and words[0].startswith(("./", ".ci/")):
            assert os.access(ROOT / words[0], os.X_OK), f"{line}: {words[0]} is not an executable file"
    if block.marker == "run":
        env = dict(os.environ, **mnist_or_skip(block),
                   PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        for entry in ROOT.iterdir():
            if entry.name != ".git":
                (tmp_path / entry.name).symlink_to(entry)
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.text], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=BLOCK_SECONDS * 2)
        output = done.stdout[-2000:] + done.stderr[-3000:]
        assert done.returncode == 0, f"{where(block)} failed ({done.returncode}):\n{output}"


@pytest.mark.parametrize("doc", [f.relative_to(ROOT).as_posix() for f in doc_files()])
def test_relative_links_point_at_files(doc):
    prose, fenced = [], False
    for line in (ROOT / doc).read_text(encoding="utf-8").splitlines():
        fenced = fenced != line.startswith("```")
        prose += [] if fenced or line.startswith("```") else [line]
    for target in re.findall(r"\]\(([^)\s]+)\)", "\n".join(prose)):
        if not re.match(r"^[a-z]+:|^#", target):
            path = (ROOT / doc).parent / target.split("#")[0]
            assert path.exists(), f"{doc} links to {target}, which does not exist"


def test_every_guide_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    guides = [f.name for f in (ROOT / "docs").glob("*.md")]
    assert guides, "no guides in docs/"
    missing = [g for g in guides if f"docs/{g}" not in readme and f"({g})" not in readme]
    assert not missing, f"guides the README does not link: {missing}"
