"""Train several MNIST networks from different seeds and compare single models with their ensemble.

    python examples/ensemble_mnist.py                       # 5 lenet nets, full MNIST
    python examples/ensemble_mnist.py --arch best --nets 5  # the 'best' network (slow on a CPU)
    python examples/ensemble_mnist.py --nets 3 --epochs 1 --images 5000   # a quick smoke run

Every choice is made on a validation split, never on the test set: the last --val-size training
images are held out; the learning rate is picked among --lrs by the validation accuracy of the
net of the first seed, and the ensemble mode ("mean" of softmax probabilities or majority "vote")
by the ensemble's validation accuracy. The other nets are then trained with the chosen rate on
the same training images, and the test accuracy of every net and of both ensembles is measured
once at the end. Architectures, optimizers, schedules and augmentations are those of
examples/train_mnist.py (its ARCHS).
"""
import argparse
import time

import numpy as np

import fastconv as fc
from fastconv.datasets import load_mnist, normalize
from fastconv.optim import SGD, Adam, StepLR

from train_mnist import ARCHS, AUGMENTS, POSITIVE, POSITIVE_INT, TRAIN_IMAGES


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", choices=ARCHS, default="lenet")
    p.add_argument("--nets", type=POSITIVE_INT, default=5, help="networks in the ensemble (seeds 0, 1, ...)")
    p.add_argument("--epochs", type=POSITIVE_INT, help="default: per architecture (train_mnist.ARCHS)")
    p.add_argument("--images", type=POSITIVE_INT,
                   help="use the first N training images (default: all 60,000)")
    p.add_argument("--val-size", type=POSITIVE_INT, default=5000,
                   help="validation images held out from the end of the training images (at most "
                        "a tenth of them)")
    p.add_argument("--lrs", help="comma-separated learning rates to choose from on the validation "
                                 "split (default: the architecture's lr times 0.5, 1 and 2)")
    p.add_argument("--batch-size", type=POSITIVE_INT, help="default: per architecture")
    p.add_argument("--data-dir",
                   help="folder with the MNIST IDX files (default: $FASTCONV_DATA or the cache)")
    p.add_argument("--backend", choices=("cpu", "naive", "cuda"),
                   help="default: $FASTCONV_BACKEND or cpu")
    p.add_argument("--no-progress", action="store_true",
                   help="one line per epoch instead of a progress bar")
    args = p.parse_args(argv)
    defaults = ARCHS[args.arch]
    args.epochs = defaults["epochs"] if args.epochs is None else args.epochs
    args.batch_size = defaults["batch_size"] if args.batch_size is None else args.batch_size
    try:
        args.lrs = ([defaults["lr"] * f for f in (0.5, 1.0, 2.0)] if args.lrs is None
                    else [POSITIVE(v) for v in args.lrs.split(",")])
    except argparse.ArgumentTypeError as exc:
        p.error(f"argument --lrs: {exc}")
    if min(args.val_size, min(args.images or TRAIN_IMAGES, TRAIN_IMAGES) // 10) < 1:
        p.error(f"--images {args.images} leaves no validation image (a tenth of the images, at "
                "most --val-size, is held out): give at least 10")
    return args


def train_one(args, lr, seed, data):
    """Train the architecture from ``seed`` with learning rate ``lr``; return the model."""
    (x_train, y_train), _ = data
    spec = ARCHS[args.arch]
    fc.manual_seed(seed)
    model = spec["build"]()
    if spec["optimizer"] == "sgd":
        opt = SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                  weight_decay=spec["weight_decay"])
    else:
        opt = Adam(model.parameters(), lr=lr, weight_decay=spec["weight_decay"])
    scheduler = StepLR(opt, step_size=1, gamma=spec["gamma"]) if spec["gamma"] != 1 else None
    fc.Trainer(model, optimizer=opt, scheduler=scheduler).fit(
        x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, seed=seed,
        augment=AUGMENTS[spec["augment"]], progress="epoch" if args.no_progress else True)
    return model


def accuracy(predict, x, y):
    return float(np.mean(predict(x) == y))


def main(argv=None):
    args = parse_args(argv)
    if args.backend:
        fc.set_backend(args.backend)
    (x_all, y_all), (x_test, y_test) = load_mnist(args.data_dir)
    if args.images:
        x_all, y_all = x_all[:args.images], y_all[:args.images]
    n_val = min(args.val_size, len(x_all) // 10)
    x_all, x_test = normalize(x_all), normalize(x_test)  # (N, 1, 28, 28) float32, MNIST mean/std
    train, val = (x_all[:-n_val], y_all[:-n_val]), (x_all[-n_val:], y_all[-n_val:])
    data = (train, val)
    print(f"arch={args.arch} nets={args.nets} epochs={args.epochs} batch_size={args.batch_size} "
          f"train={len(train[0])} validation={n_val} test={len(x_test)} backend={fc.get_backend()}",
          flush=True)
    start = time.perf_counter()

    def predict_of(model):
        return lambda x: model.predict(x).argmax(axis=1)

    # 1. the learning rate, by the validation accuracy of the first seed's net
    candidates = []
    for lr in args.lrs:
        model = train_one(args, lr, 0, data)
        candidates.append((accuracy(predict_of(model), *val), lr, model))
        print(f"lr={lr:g}: validation accuracy {candidates[-1][0]:.4f} (seed 0)", flush=True)
    best_val, lr, first = max(candidates, key=lambda c: (c[0], -c[1]))
    print(f"chosen lr={lr:g}", flush=True)

    # 2. the other nets with that rate
    models = [first] + [train_one(args, lr, seed, data) for seed in range(1, args.nets)]

    # 3. the ensemble mode, on the validation split
    ensembles = {mode: fc.Ensemble(models, mode=mode) for mode in ("mean", "vote")}
    val_acc = {mode: accuracy(e.predict, *val) for mode, e in ensembles.items()}
    mode = max(("mean", "vote"), key=lambda m: val_acc[m])  # "mean" on a tie

    # 4. the test set, once
    print(f"\n{'seed':>4} {'val_acc':>8} {'test_acc':>8}")
    single = []
    for seed, model in enumerate(models):
        single.append(accuracy(predict_of(model), x_test, y_test))
        print(f"{seed:>4} {accuracy(predict_of(model), *val):8.4f} {single[-1]:8.4f}")
    test_acc = {m: accuracy(e.predict, x_test, y_test) for m, e in ensembles.items()}
    print(f"\nsingle nets: test accuracy mean {np.mean(single):.4f} (std {np.std(single):.4f}), "
          f"best {max(single):.4f}, worst {min(single):.4f}")
    for m in ("mean", "vote"):
        flag = "  <- chosen on validation" if m == mode else ""
        print(f"ensemble ({m}): validation {val_acc[m]:.4f}, test {test_acc[m]:.4f}{flag}")
    print(f"ensemble of {len(models)} ({mode}) test accuracy {test_acc[mode]:.4f}; "
          f"wall time {time.perf_counter() - start:.0f} s")
    return {"single": single, "ensemble": test_acc, "mode": mode, "lr": lr}


if __name__ == "__main__":
    main()
