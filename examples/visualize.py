"""Look inside a CNN trained on MNIST: its filters, feature maps, confusion matrix, worst mistakes.

    python examples/visualize.py --out pictures                  # trains lenet for 1 epoch first
    python examples/visualize.py --epochs 5 --save lenet.npz --out pictures
    python examples/visualize.py --load lenet.npz --out pictures  # weights from train_mnist.py --save

Writes into --out: filters_layer<name>.png for every Conv2d (the first layer's 3x3 filters, then
the deeper ones with their input channels stacked), feature_maps.png (one test digit after every
conv, ReLU and pool), confusion.png (the 10,000 test images) and mistakes.png (the test images
with the highest loss). The networks, their training settings and MNIST's location are those of
train_mnist.py (whose builders this script imports); --seed picks the initial weights, the
shuffling and the test digit shown in feature_maps.png. Needs matplotlib (pip install fastconv[plot]).
"""
import argparse
import os
import time

import numpy as np
from train_mnist import ARCHS, AUGMENTS

import fastconv as fc
from fastconv import viz
from fastconv.datasets import load_mnist, normalize
from fastconv.optim import SGD, Adam, StepLR


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="pictures", help="folder for the PNGs (created if missing)")
    p.add_argument("--arch", choices=ARCHS, default="lenet", help="the network (see train_mnist.py)")
    p.add_argument("--load", help="weights .npz for --arch (from train_mnist.py --save); no training")
    p.add_argument("--epochs", type=int, default=1, help="training epochs when not --load")
    p.add_argument("--limit", type=int, help="train on the first N training images only")
    p.add_argument("--test-limit", type=int, help="evaluate and picture the first N test images only")
    p.add_argument("--save", help="write the trained weights to this .npz")
    p.add_argument("--data-dir", help="folder with the MNIST IDX files (default: $FASTCONV_DATA or the cache)")
    p.add_argument("--backend", choices=("cpu", "naive", "cuda"), help="default: $FASTCONV_BACKEND or cpu")
    p.add_argument("--seed", type=int, default=0, help="initial weights, shuffling, dropout, the digit shown")
    p.add_argument("--k", type=int, default=25, help="how many mistakes to show")
    p.add_argument("--channels", type=int, default=12, help="feature maps shown per layer")
    return p.parse_args(argv)


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
                       augment=AUGMENTS[cfg["augment"]], progress="epoch")


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
        model.load(args.load)
        print(f"weights loaded from {args.load}")
    else:
        start = time.perf_counter()
        train(model, normalize(x_train), y_train, args)
        print(f"trained {args.arch} for {args.epochs} epoch(s) on {len(x_train)} images in "
              f"{time.perf_counter() - start:.0f} s")
    if args.save:
        model.save(args.save)
        print(f"weights saved to {args.save}")

    os.makedirs(args.out, exist_ok=True)
    written = []
    for name, layer in model.named_children():
        if isinstance(layer, fc.Conv2d):
            written.append(viz.plot_filters(layer, os.path.join(args.out, f"filters_layer{name}.png")))

    digit = int(np.random.default_rng(args.seed).integers(len(x_test)))
    written.append(viz.plot_feature_maps(
        model, x_test[digit], os.path.join(args.out, "feature_maps.png"), max_channels=args.channels,
        title=f"Test image {digit} (a {y_test[digit]}) after each layer of {args.arch}, eval mode"))

    predicted = model.predict(x_test).argmax(axis=1)
    written.append(viz.plot_confusion(y_test, predicted, os.path.join(args.out, "confusion.png"), num_classes=10))
    written.append(viz.plot_mistakes(model, x_test, y_test, os.path.join(args.out, "mistakes.png"), k=args.k))

    accuracy = float(np.mean(predicted == y_test))
    cm = viz.confusion_matrix(y_test, predicted, num_classes=10)
    pairs = ", ".join(f"{t} as {p} ({c}x)" for t, p, c in most_confused(cm))
    print(f"test accuracy {accuracy:.4f} on {len(y_test)} images; most confused (true as predicted): {pairs or 'none'}")
    for path in written:
        print(f"wrote {path}")
    return {"accuracy": accuracy, "confusion": cm, "files": written}


if __name__ == "__main__":
    main()
