"""Look inside a CNN trained on MNIST: filters, the patterns they respond to, feature maps,
saliency, training curves, the confusion matrix and the worst mistakes.

    python examples/visualize.py --out pictures                  # trains lenet first (about a minute)
    python examples/visualize.py --epochs 5 --limit 0 --save lenet.npz --out pictures
    python examples/visualize.py --load lenet.npz --out pictures  # weights from train_mnist.py --save
    python examples/visualize.py --load run.npz --out pictures    # a train_mnist.py --checkpoint

By default lenet trains for 4 epochs on the first 20,000 training images, 10% of them held out
for validation (--limit 0: all 60,000). Writes into --out: filters_layer<name>.png for every
Conv2d (the first layer's 3x3 filters, then the deeper ones with their input channels stacked),
patterns_layer<name>.png (for the first --patterns channels of every Conv2d, the input that
maximises the channel's mean ReLU activation, found by gradient ascent), feature_maps.png (one
test digit after every conv, ReLU and pool), saliency.png (the first --saliency test images
beside |d score / d pixel| of their predicted class), training_curves.png (loss and accuracy per
epoch, training and validation, of this run or of the loaded checkpoint; not written for a plain
weights file, which has no history), confusion.png (the test images), mistakes.png and
mistake_saliency.png (the test images with the highest loss, the latter with the saliency of the
predicted and the true class). The networks, their training settings and MNIST's location are
those of train_mnist.py (whose builders this script imports); --seed picks the initial weights,
the shuffling, the test digit shown in feature_maps.png and the patterns' starting noise. Needs
matplotlib (pip install fastconv[plot]).
"""
import argparse
import os
import time

import numpy as np
from train_mnist import ARCHS, AUGMENTS

import fastconv as fc
from fastconv import viz
from fastconv.datasets import MNIST_MEAN, MNIST_STD, load_mnist, normalize
from fastconv.optim import SGD, Adam, StepLR, unflatten_state

#: The range of MNIST pixels after normalize(): 0 and 255 standardised (the patterns are clipped to it).
PIXEL_RANGE = (-MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="pictures", help="folder for the PNGs (created if missing)")
    p.add_argument("--arch", choices=ARCHS, default="lenet", help="the network (see train_mnist.py)")
    p.add_argument("--load", help="weights .npz for --arch (train_mnist.py --save) or a checkpoint "
                                  "(train_mnist.py --checkpoint: its curves too); no training")
    p.add_argument("--epochs", type=int, default=4, help="training epochs when not --load")
    p.add_argument("--limit", type=int, default=20000, help="train on the first N training images (0: all)")
    p.add_argument("--val-split", type=float, default=0.1, help="fraction of those held out for validation")
    p.add_argument("--test-limit", type=int, help="evaluate and picture the first N test images only")
    p.add_argument("--save", help="write the trained weights to this .npz")
    p.add_argument("--data-dir", help="folder with the MNIST IDX files (default: $FASTCONV_DATA or the cache)")
    p.add_argument("--backend", choices=("cpu", "naive", "cuda"), help="default: $FASTCONV_BACKEND or cpu")
    p.add_argument("--seed", type=int, default=0, help="initial weights, shuffling, dropout, the digit shown")
    p.add_argument("--k", type=int, default=25, help="how many mistakes to show (a third as many with saliency)")
    p.add_argument("--channels", type=int, default=12, help="feature maps shown per layer")
    p.add_argument("--patterns", type=int, default=16, help="channels per Conv2d in patterns_layer*.png")
    p.add_argument("--steps", type=int, default=64, help="gradient-ascent steps per pattern")
    p.add_argument("--saliency", type=int, default=8, help="test images in saliency.png")
    args = p.parse_args(argv)
    for name in ("epochs", "k", "channels", "patterns", "steps", "saliency"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    for name in ("limit", "test_limit", "seed"):
        if (getattr(args, name) or 0) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not 0 <= args.val_split < 1:
        p.error(f"--val-split must be in [0, 1), got {args.val_split}")
    if args.load and not os.path.isfile(args.load):
        p.error(f"--load {args.load}: no such file")
    return args


def train(model, x, y, args):
    """Fit ``model`` with the architecture's defaults from train_mnist.ARCHS; returns the History."""
    cfg = ARCHS[args.arch]
    if cfg["optimizer"] == "sgd":
        opt = SGD(model.parameters(), lr=cfg["lr"], momentum=0.9, nesterov=True, weight_decay=cfg["weight_decay"])
    else:
        opt = Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    scheduler = StepLR(opt, step_size=1, gamma=cfg["gamma"]) if cfg["gamma"] != 1 else None
    trainer = fc.Trainer(model, optimizer=opt, scheduler=scheduler)
    return trainer.fit(x, y, epochs=args.epochs, batch_size=cfg["batch_size"], seed=args.seed,
                       validation_split=args.val_split, augment=AUGMENTS[cfg["augment"]], progress="epoch")


def load(model, path):
    """Load weights into ``model`` from ``path``: a ``Sequential.save`` file (returns None) or a
    Trainer checkpoint (returns its History). A file that is neither is a ValueError."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array, not an .npz of weights or a checkpoint")
    with archive:
        if "__meta__" not in archive.files:
            model.load(path)
            return None
        try:
            state = unflatten_state(archive)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot read the checkpoint {path}: {exc}") from None
    if not (isinstance(state, dict) and isinstance(state.get("model"), dict)
            and isinstance(state.get("history"), dict)):
        raise ValueError(f"{path} is neither a weights file nor a Trainer checkpoint")
    model.load_state_dict(state["model"])
    return fc.History._from_state(state["history"])  # the trainer's own reader of a checkpoint's history


def most_confused(cm, n=3):
    """The ``n`` largest off-diagonal cells of ``cm`` as ``(true, predicted, count)``, largest first."""
    off = cm - np.diag(np.diag(cm))
    flat = np.argsort(-off, axis=None, kind="stable")[:n]
    return [(int(i), int(j), int(off[i, j])) for i, j in zip(*np.unravel_index(flat, off.shape)) if off[i, j]]


def main(argv=None):
    args = parse_args(argv)
    if args.backend:
        fc.set_backend(args.backend)
    (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    if args.test_limit:
        x_test, y_test = x_test[:args.test_limit], y_test[:args.test_limit]
    x_test = normalize(x_test)  # (N, 1, 28, 28) float32

    fc.manual_seed(args.seed)
    model = ARCHS[args.arch]["build"]()
    if args.load:
        try:
            history = load(model, args.load)
        except ValueError as exc:
            raise SystemExit(f"visualize.py: --load: {exc}") from None
        print(f"weights loaded from {args.load}" + (f" (a checkpoint after {len(history)} epochs)" if history else ""))
    else:
        start = time.perf_counter()
        history = train(model, normalize(x_train), y_train, args)
        print(f"trained {args.arch} for {args.epochs} epoch(s) on {len(x_train)} images "
              f"({args.val_split:.0%} of them held out) in {time.perf_counter() - start:.0f} s")
    if args.save:
        model.save(args.save)
        print(f"weights saved to {args.save}")

    os.makedirs(args.out, exist_ok=True)

    def out(name):
        return os.path.join(args.out, name)
    written = []
    convs = [(name, layer) for name, layer in model.named_children() if isinstance(layer, fc.Conv2d)]
    for name, layer in convs:
        written.append(viz.plot_filters(layer, out(f"filters_layer{name}.png")))
    for name, layer in convs:
        written.append(viz.plot_filter_patterns(model, layer, out(f"patterns_layer{name}.png"),
                                                channels=min(args.patterns, layer.out_channels),
                                                steps=args.steps, seed=args.seed, value_range=PIXEL_RANGE))

    digit = int(np.random.default_rng(args.seed).integers(len(x_test)))
    written.append(viz.plot_feature_maps(
        model, x_test[digit], out("feature_maps.png"), max_channels=args.channels,
        title=f"Test image {digit} (a {y_test[digit]}) after each layer of {args.arch}, eval mode"))
    shown = min(args.saliency, len(x_test))
    written.append(viz.plot_saliency(model, x_test[:shown], out("saliency.png"), y=y_test[:shown]))
    if history is not None and len(history):
        written.append(history.plot(out("training_curves.png")))
    else:
        print("no training history (a plain weights file): training_curves.png not written")

    predicted = model.predict(x_test).argmax(axis=1)
    written.append(viz.plot_confusion(y_test, predicted, out("confusion.png"), num_classes=10))
    written.append(viz.plot_mistakes(model, x_test, y_test, out("mistakes.png"), k=min(args.k, len(x_test))))
    written.append(viz.plot_mistake_saliency(model, x_test, y_test, out("mistake_saliency.png"),
                                             k=min(max(1, args.k // 3), len(x_test))))

    accuracy = float(np.mean(predicted == y_test))
    cm = viz.confusion_matrix(y_test, predicted, num_classes=10)
    pairs = ", ".join(f"{t} as {p} ({c}x)" for t, p, c in most_confused(cm))
    print(f"test accuracy {accuracy:.4f} on {len(y_test)} images; most confused (true as predicted): {pairs or 'none'}")
    for path in written:
        print(f"wrote {path}")
    return {"accuracy": accuracy, "confusion": cm, "files": written, "history": history}


if __name__ == "__main__":
    main()
