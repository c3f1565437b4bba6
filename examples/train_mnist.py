"""Train a convolutional network on MNIST with fastconv.

    python examples/train_mnist.py                          # lenet, 2 epochs: about 99% in minutes
    python examples/train_mnist.py --arch lenet --epochs 5  # >= 99.2%
    python examples/train_mnist.py --arch tutorial          # the 8-filter tutorial network, >= 97%
    python examples/train_mnist.py --arch best --no-progress --save best.npz --plot best.png
    mpiexec -n 2 python examples/train_mnist.py --distributed   # data-parallel on 2 processes
    python examples/train_mnist.py --arch resnet            # residual blocks with batch norm
    python examples/train_mnist.py --arch mobilenet         # depthwise-separable blocks

MNIST is read from --data-dir, else $FASTCONV_DATA, else ~/.cache/fastconv/digits; missing files
are downloaded there and verified by SHA-256. Images are normalised explicitly with the MNIST mean
and standard deviation. Each architecture's defaults (epochs, batch size, optimizer, learning rate,
schedule, augmentation, validation split) are in ARCHS below; the command-line options override
them. Settings are to be chosen on the validation split (the last ``--val-split`` of the training
images, held out of training; 10% for resnet and mobilenet), never on the test set: the final test
accuracy is measured once, on the 10,000 test images, with the weights after the last epoch.
"""
import argparse
import importlib.util
import math
import os
import time

import numpy as np

import fastconv as fc
from fastconv import distributed
from fastconv.cli import ranged
from fastconv.datasets import ElasticDistortion, RandomAffine, RandomShift, load_mnist, normalize
from fastconv.optim import SGD, Adam, StepLR


def tutorial():
    """The tutorial network: 8 3x3 filters, 2x2 max-pool, softmax over 10 (no hidden nonlinearity)."""
    return fc.Sequential(fc.Conv2d(1, 8, 3), fc.MaxPool2d(2), fc.Flatten(), fc.Linear(13 * 13 * 8, 10))


def lenet():
    """conv 32 3x3 pad 1, pool, conv 64 3x3 pad 1, pool, linear 128, dropout 0.5, linear 10."""
    return fc.Sequential(
        fc.Conv2d(1, 32, 3, padding=1), fc.ReLU(), fc.MaxPool2d(2),
        fc.Conv2d(32, 64, 3, padding=1), fc.ReLU(), fc.MaxPool2d(2),
        fc.Flatten(), fc.Linear(7 * 7 * 64, 128), fc.ReLU(), fc.Dropout(0.5), fc.Linear(128, 10))


def best():
    """Two conv-BN-ReLU pairs per stage (32 then 64 channels), max-pool, BN'd dense layer, dropout."""
    def block(c_in, c_out):
        return [fc.Conv2d(c_in, c_out, 3, padding=1, bias=False), fc.BatchNorm2d(c_out), fc.ReLU()]
    return fc.Sequential(
        *block(1, 32), *block(32, 32), fc.MaxPool2d(2),
        *block(32, 64), *block(64, 64), fc.MaxPool2d(2),
        fc.Flatten(), fc.Linear(7 * 7 * 64, 256, bias=False), fc.BatchNorm1d(256), fc.ReLU(),
        fc.Dropout(0.4), fc.Linear(256, 10))


def _global_pool(plane):
    """Global average pooling of a ``plane`` x ``plane`` map: AdaptiveAvgPool2d(1) where fastconv
    has it, else an AvgPool2d over the whole plane (the same numbers)."""
    adaptive = getattr(fc, "AdaptiveAvgPool2d", None)
    return adaptive(1) if adaptive is not None else fc.AvgPool2d(plane)


def _conv_bn(c_in, c_out, kernel=3, stride=1, groups=1):
    """Conv2d (no bias: the batch norm shifts) then BatchNorm2d; ``groups=c_in`` is depthwise."""
    kwargs = dict(stride=stride, padding=kernel // 2, bias=False)
    if groups != 1:  # grouped convolution is newer than the rest: say so clearly if it is missing
        try:
            conv = fc.Conv2d(c_in, c_out, kernel, groups=groups, **kwargs)
        except TypeError as exc:
            raise SystemExit(f"--arch mobilenet needs grouped (depthwise) convolution, Conv2d(..., "
                             f"groups=...), which this version of fastconv does not have ({exc})") from None
    else:
        conv = fc.Conv2d(c_in, c_out, kernel, **kwargs)
    return [conv, fc.BatchNorm2d(c_out)]


def _basic_block(c_in, c_out, stride):
    """ResNet's basic block: conv-BN-ReLU-conv-BN plus the shortcut, then ReLU. A block that
    changes the shape projects x with a strided 1x1 conv and BN."""
    body = fc.Sequential(*_conv_bn(c_in, c_out, stride=stride), fc.ReLU(), *_conv_bn(c_out, c_out))
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = fc.Sequential(*_conv_bn(c_in, c_out, kernel=1, stride=stride))
    return [fc.Residual(body, shortcut), fc.ReLU()]


def resnet(width=16):
    """A small ResNet: 3x3 stem (conv-BN-ReLU), one basic block per stage at 28x28, 14x14 and 7x7
    (``width``, 2x and 4x channels; the last two stride 2 with projection shortcuts), global average
    pooling, Linear to 10."""
    w1, w2, w3 = width, 2 * width, 4 * width
    return fc.Sequential(
        *_conv_bn(1, w1), fc.ReLU(),
        *_basic_block(w1, w1, 1), *_basic_block(w1, w2, 2), *_basic_block(w2, w3, 2),
        _global_pool(7), fc.Flatten(), fc.Linear(w3, 10))


def _separable(c_in, c_out, stride):
    """MobileNet's depthwise-separable block: 3x3 depthwise conv (one filter per channel), BN,
    ReLU, then a 1x1 pointwise conv mixing the channels, BN, ReLU."""
    return [*_conv_bn(c_in, c_in, stride=stride, groups=c_in), fc.ReLU(),
            *_conv_bn(c_in, c_out, kernel=1), fc.ReLU()]


def mobilenet(width=16):
    """A small MobileNet (v1): 3x3 stem conv-BN-ReLU, depthwise-separable blocks (2x channels and
    stride 2 at 14x14 and 7x7), global average pooling, dropout, Linear to 10."""
    w = width
    return fc.Sequential(
        *_conv_bn(1, w), fc.ReLU(),
        *_separable(w, 2 * w, 1), *_separable(2 * w, 4 * w, 2), *_separable(4 * w, 4 * w, 1),
        *_separable(4 * w, 8 * w, 2), *_separable(8 * w, 8 * w, 1),
        _global_pool(7), fc.Flatten(), fc.Dropout(0.2), fc.Linear(8 * w, 10))


#: Per-architecture defaults. ``gamma``: the lr is multiplied by it after every epoch (StepLR).
ARCHS = {
    "tutorial": dict(build=tutorial, epochs=5, batch_size=32, optimizer="sgd", lr=0.01, gamma=0.7,
                     weight_decay=0.0, augment="none"),
    "lenet": dict(build=lenet, epochs=2, batch_size=32, optimizer="adam", lr=1e-3, gamma=0.7,
                  weight_decay=0.0, augment="none"),
    "best": dict(build=best, epochs=15, batch_size=64, optimizer="sgd", lr=0.05, gamma=0.8,
                 weight_decay=5e-4, augment="affine"),
    "resnet": dict(build=resnet, epochs=15, batch_size=64, optimizer="sgd", lr=0.05, gamma=0.8,
                   weight_decay=5e-4, augment="affine", val_split=0.1),
    "mobilenet": dict(build=mobilenet, epochs=15, batch_size=64, optimizer="sgd", lr=0.05, gamma=0.8,
                      weight_decay=1e-4, augment="affine", val_split=0.1),
}

AUGMENTS = {"none": None, "shift": RandomShift(2), "affine": RandomAffine(degrees=10, translate=2, scale=(0.9, 1.1)),
            "elastic": ElasticDistortion(alpha=34, sigma=4)}


TRAIN_IMAGES = 60000  # MNIST's training set, which --limit and --val-split divide


COUNT = ranged(int, lambda v: v >= 0, "an integer >= 0")
POSITIVE_INT = ranged(int, lambda v: v >= 1, "an integer >= 1")
POSITIVE = ranged(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
NON_NEGATIVE = ranged(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
FRACTION = ranged(float, lambda v: 0 <= v < 1, "a fraction in [0, 1)")


def check_outputs(parser, args, options):
    """argparse's error unless each output path given can be written: not a folder, its folder
    exists and is writable, no two options name the same file. Checked before MNIST is loaded,
    so a typo costs nothing (not a whole training run) and nothing is created on disk."""
    seen = {}
    for option in options:
        path = getattr(args, option.lstrip("-").replace("-", "_"))
        if path is None:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            parser.error(f"{option} {path}: is a folder; give a file name in it")
        if not os.path.isdir(folder):
            parser.error(f"{option} {path}: the folder {os.path.dirname(path) or '.'} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            parser.error(f"{option} {path}: cannot write in the folder {os.path.dirname(path) or '.'}")
        same = seen.setdefault(os.path.realpath(path), option)
        if same != option:
            parser.error(f"{same} and {option} name the same file {path}; each needs its own")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", choices=ARCHS, default="lenet")
    p.add_argument("--epochs", type=COUNT, help="default: per architecture (ARCHS)")
    p.add_argument("--batch-size", type=POSITIVE_INT, help="default: per architecture")
    p.add_argument("--lr", type=POSITIVE, help="initial learning rate; default: per architecture")
    p.add_argument("--gamma", type=POSITIVE, help="lr multiplier after each epoch (1: constant)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), help="sgd has momentum 0.9 (nesterov)")
    p.add_argument("--weight-decay", type=NON_NEGATIVE, help="L2 weight decay added to the gradient")
    p.add_argument("--augment", choices=AUGMENTS, help="training-batch augmentation")
    p.add_argument("--data-dir", help="folder with the MNIST IDX files (default: $FASTCONV_DATA or the cache)")
    p.add_argument("--backend", choices=("cpu", "naive", "cuda"), help="default: $FASTCONV_BACKEND or cpu")
    p.add_argument("--seed", type=COUNT, default=0, help="seeds the initial weights, shuffling, dropout, augmentation")
    p.add_argument("--limit", type=POSITIVE_INT, help="train on the first N training images only (a quick demo)")
    p.add_argument("--val-split", type=FRACTION,
                   help="hold out this fraction of the training set for validation (default: per "
                        "architecture, 0 where ARCHS gives none)")
    p.add_argument("--save", help="write the final weights to this .npz")
    p.add_argument("--plot", help="write the training curves to this PNG (needs matplotlib)")
    p.add_argument("--checkpoint", help="checkpoint .npz rewritten after every epoch")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument("--no-progress", action="store_true", help="one line per epoch instead of a progress bar")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of an MPI job (mpiexec -n 2 python ... --distributed; "
                        "needs pip install fastconv[mpi]); --batch-size is the global batch, rank 0 prints "
                        "and writes the files")
    args = p.parse_args(argv)
    for key, value in ARCHS[args.arch].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.val_split is None:
        args.val_split = 0.0
    n = min(args.limit or TRAIN_IMAGES, TRAIN_IMAGES)
    if args.val_split and not 0 < int(n * args.val_split) < n:
        p.error(f"--val-split {args.val_split} of {n} training images leaves {int(n * args.val_split)} "
                "for validation; it needs at least one for each side")
    if args.resume and not args.checkpoint:
        p.error("--resume needs --checkpoint (the file to continue from)")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        p.error("--plot needs matplotlib (pip install matplotlib)")
    check_outputs(p, args, ("--save", "--checkpoint", "--plot"))
    if args.backend:
        try:
            fc.set_backend(args.backend)
        except (RuntimeError, ValueError) as exc:
            p.error(f"--backend {args.backend}: {exc}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if not args.distributed:
        return run(args, print)
    rank, _ = distributed.init()
    with distributed.abort_on_error():  # a rank that fails ends every rank of the job
        return run(args, print if rank == 0 else lambda *a, **k: None)


def run(args, say):
    """Train and test as ``args`` says; ``say`` prints (a no-op on ranks other than 0)."""
    if args.backend:
        fc.set_backend(args.backend)
    if args.distributed and not distributed.is_main():
        distributed.barrier()  # rank 0 downloads any missing files before the others read them
    (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir)
    if args.distributed and distributed.is_main():
        distributed.barrier()
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_train, x_test = normalize(x_train), normalize(x_test)  # (N, 1, 28, 28) float32

    fc.manual_seed(args.seed)
    model = ARCHS[args.arch]["build"]()
    params = model.parameters()
    if args.optimizer == "sgd":
        opt = SGD(params, lr=args.lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
    else:
        opt = Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = StepLR(opt, step_size=1, gamma=args.gamma) if args.gamma != 1 else None
    say(model.summary((args.batch_size, 1, 28, 28)))
    ranks = f" ranks={distributed.size()}" if args.distributed else ""
    say(f"arch={args.arch} epochs={args.epochs} batch_size={args.batch_size} optimizer={args.optimizer} "
        f"lr={args.lr} gamma={args.gamma} weight_decay={args.weight_decay} augment={args.augment} "
        f"seed={args.seed} backend={fc.get_backend()} train={len(x_train)} val_split={args.val_split} "
        f"test={len(x_test)}{ranks}", flush=True)

    trainer = fc.Trainer(model, optimizer=opt, scheduler=scheduler, distributed=args.distributed)
    start = time.perf_counter()
    history = trainer.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                          validation_split=args.val_split, seed=args.seed, augment=AUGMENTS[args.augment],
                          checkpoint=args.checkpoint, resume=args.resume,
                          progress="epoch" if args.no_progress else True)
    wall = time.perf_counter() - start
    result = trainer.evaluate(x_test, y_test)
    done = len(history)
    say(f"test accuracy {result['accuracy']:.4f} (loss {result['loss']:.4f}) after {done} epochs, "
        f"seed {args.seed}")
    if done:
        say(f"wall time {wall:.0f} s this session; per epoch {np.mean(history.seconds):.1f} s, training "
            f"throughput {np.mean(history.images_per_second):.0f} images/s (mean over epochs)")
    if args.save and trainer.rank == 0:
        model.save(args.save)
        say(f"weights saved to {args.save}")
    if args.plot and trainer.rank == 0:
        history.plot(args.plot)
        say(f"curves written to {args.plot}")
    return result


if __name__ == "__main__":
    main()
