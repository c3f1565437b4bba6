"""``python -m fastconv.onnx``: export a saved model, check an ONNX file, run one on MNIST.

    python -m fastconv.onnx export --arch examples/train_mnist.py:lenet --weights lenet.npz lenet.onnx
    python -m fastconv.onnx check lenet.onnx
    python -m fastconv.onnx run lenet.onnx [--runtime onnxruntime] [--limit 1000]

``--arch`` names a function that builds the model: ``path/to/file.py:function`` or
``package.module:function``. ``run`` reads MNIST as ``examples/train_mnist.py`` does (--data-dir,
an existing folder, else $FASTCONV_DATA, else the cache, downloading what is missing) and
normalises the test images with the MNIST mean and standard deviation before classifying them.

A bad argument is one ``error:`` line and a non-zero exit before any work starts (numbers, the
--arch module and function, folders that must exist); a file that cannot be read is one
``error:`` line and exit status 2. Nothing is written by a command that fails.
"""
import argparse
import collections
import importlib
import importlib.util
import os
import sys

import numpy as np
import onnx

from ..cli import ranged
from ..datasets import load_mnist, normalize
from . import EXPORT_OPSETS, export, importable_ops, load, read_model
from .tensors import type_name

PROG = "python -m fastconv.onnx"


def _builder(spec):
    """The callable named by ``file.py:function`` or ``module:function``; SystemExit with one
    ``error:`` line when there is none (the message names what is missing)."""
    fail = f"{PROG} export: error: argument --arch: "
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise SystemExit(f"{fail}must look like path/to/file.py:function or module:function, got {spec!r}")
    try:
        if where.endswith(".py"):
            if not os.path.isfile(where):
                raise SystemExit(f"{fail}no such file {where!r}")
            loader = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(where))[0], where)
            module = importlib.util.module_from_spec(loader)
            writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ beside the file
            try:
                loader.loader.exec_module(module)
            finally:
                sys.dont_write_bytecode = writes
        else:
            if importlib.util.find_spec(where) is None:
                raise SystemExit(f"{fail}no module named {where!r}")
            module = importlib.import_module(where)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's module failed to import: say so in one line
        raise SystemExit(f"{fail}importing {where!r} failed: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise SystemExit(f"{fail}{where} has no function {name!r}")
    return fn


def _shape(text):
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints such as 1,1,28,28, got {text!r}")
    return shape


_positive = ranged(int, lambda v: v >= 1, "a positive integer")
_opset = ranged(int, lambda v: v in EXPORT_OPSETS, f"an opset from {EXPORT_OPSETS.start} to {EXPORT_OPSETS.stop - 1}")


def _folder(text):
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"no such folder {text!r}")
    return text


def _file(text):
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file {text!r}")
    return text


def _model_file(text):
    """The ONNX file to read: a folder is a bad argument; a missing file is reported when read."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not an ONNX file")
    return text


def _output(text):
    folder = os.path.dirname(os.path.abspath(text))
    if os.path.isdir(text) or not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: " + ("it is a folder" if os.path.isdir(text)
                                                                      else f"no such folder {folder!r}"))
    return text


def cmd_export(args):
    model = _builder(args.arch)()
    if args.weights:
        model.load(args.weights)
    model.eval()
    export(model, args.output, args.input_shape, opset=args.opset, dynamic_batch=not args.static_batch)
    print(f"wrote {args.output}: {type(model).__name__} of {sum(p.size for p in model.parameters()):,} "
          f"parameters, input {args.input_shape}{'' if args.static_batch else ' (any batch size)'}, "
          f"opset {args.opset}")
    return 0


def _input_shape(model):
    dims = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
    return tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)


def cmd_check(args):
    model = read_model(args.file)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as exc:
        raise ValueError(f"{args.file!r} fails ONNX's full check (shape inference): {exc}") from None
    g = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    print(f"{args.file}: valid ONNX (IR {model.ir_version}, opset {opset}, producer "
          f"{model.producer_name or '?'} {model.producer_version})")
    init = {t.name for t in g.initializer}
    for kind, values in (("input", [v for v in g.input if v.name not in init]), ("output", g.output)):
        for v in values:
            dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            print(f"  {kind} {v.name}: {type_name(v.type.tensor_type.elem_type)} {dims}")
    ops = collections.Counter(n.op_type for n in g.node)
    print("  ops: " + ", ".join(f"{op} x{k}" for op, k in sorted(ops.items())))
    try:
        fc_model = load(model)
    except ValueError as exc:
        print(f"fastconv cannot import it: {exc}")
        print(f"(fastconv imports: {', '.join(importable_ops())})")
        return 1
    print("fastconv imports it as:")
    print(fc_model.summary(_input_shape(model)))
    return 0


def _ort_session(path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise SystemExit(f"{PROG}: error: --runtime onnxruntime needs onnxruntime: "
                         "pip install fastconv[onnxruntime]") from None
    read_model(path)  # fastconv's checks and messages first (external data only from the file's folder)
    try:
        return ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
        raise ValueError(f"onnxruntime cannot load {path!r}: {exc}") from None


def _ort_predict(session, x, batch_size):
    info = session.get_inputs()[0]
    dtype = np.float64 if info.type == "tensor(double)" else np.float32
    return np.concatenate([session.run(None, {info.name: x[i:i + batch_size].astype(dtype)})[0]
                           for i in range(0, len(x), batch_size)])


def cmd_run(args):
    # The model first: a file that cannot be read fails before MNIST is read (or downloaded).
    model = _ort_session(args.file) if args.runtime == "onnxruntime" else load(args.file)
    _, (x_test, y_test) = load_mnist(args.data_dir)
    if args.limit:
        x_test, y_test = x_test[:args.limit], y_test[:args.limit]
    x = normalize(x_test)
    if args.runtime == "onnxruntime":
        logits = _ort_predict(model, x, args.batch_size)
    else:
        logits = model.predict(x, batch_size=args.batch_size)
    correct = int((logits.argmax(axis=1) == y_test).sum())
    print(f"accuracy {correct / len(y_test):.4f} ({correct}/{len(y_test)} MNIST test images, {args.runtime})")
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write a fastconv model (built by --arch, weights from --weights) as ONNX")
    e.add_argument("output", type=_output, help="the .onnx file to write")
    e.add_argument("--arch", required=True, help="path/to/file.py:function or module:function building the model")
    e.add_argument("--weights", type=_file, help=".npz written by Sequential.save (default: the builder's initial weights)")
    e.add_argument("--input-shape", type=_shape, default=(1, 1, 28, 28), help="one batch's shape, batch first")
    e.add_argument("--opset", type=_opset, default=17)
    e.add_argument("--static-batch", action="store_true", help="fix the batch size instead of naming it N")
    c = sub.add_parser("check", help="validate an ONNX file and say whether fastconv can import it")
    c.add_argument("file", type=_model_file)
    r = sub.add_parser("run", help="classify MNIST test images with an ONNX model; print the accuracy")
    r.add_argument("file", type=_model_file)
    r.add_argument("--runtime", choices=("fastconv", "onnxruntime"), default="fastconv")
    r.add_argument("--data-dir", type=_folder, help="folder with the MNIST IDX files (default: $FASTCONV_DATA or the cache)")
    r.add_argument("--limit", type=_positive, help="the first N test images only")
    r.add_argument("--batch-size", type=_positive, default=256)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        return {"export": cmd_export, "check": cmd_check, "run": cmd_run}[args.command](args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
