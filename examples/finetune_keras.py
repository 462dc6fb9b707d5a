"""Fine-tune the converted ResNet-50 in Keras on a generated three-class dataset.

    python examples/finetune_keras.py            # 80x80, 180 images, 3 epochs (figures in examples/README.md)
    python examples/finetune_keras.py --quick    # 32x32, 36 images, 2 epochs: CI smoke run

Steps: convert the synthetic ResNet-50 with ``trainable=True``; replace the 1000-class ``fc1000`` with a
fresh 3-class head and freeze everything up to ``res4f`` (``caffe2x.finetune.keras.prepare``); put
Caffe's preprocessing in front as a layer (``CaffePreprocessing``: RGB uint8 in, BGR 0..255 minus the
mean out, random crop + mirror under ``training=True``); ``fit``; save as ``.keras``, reload it and
check it gives the same outputs.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import CLASSES, FREEZE, HEAD, make_shapes, parse_args, synthetic_resnet50  # noqa: E402

import caffe2x  # noqa: E402
from caffe2x.finetune.keras import CaffePreprocessing, prepare  # noqa: E402

import keras  # noqa: E402  (after caffe2x.finetune.keras, which settles the backend)


class TqdmBar(keras.callbacks.Callback):
    """One tqdm bar per epoch (Keras' own bar is switched off with verbose=0)."""

    def __init__(self, epochs: int, steps: int) -> None:
        super().__init__()
        self.epochs, self.steps, self.bar = epochs, steps, None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{(logs or {}).get('loss', float('nan')):.3f}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.bar.close()


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, __doc__)
    keras.utils.set_random_seed(args.seed)
    start = time.perf_counter()
    graph = synthetic_resnet50(args.size, args.out, caffemodel=not args.quick)
    net = caffe2x.to_keras(graph, trainable=True)
    net = prepare(net, num_classes=len(CLASSES), head=HEAD, freeze=FREEZE)

    gen = round(args.size * 1.4)  # photos larger than the net input: resize + crop do real work
    x_train, y_train = make_shapes(args.images, gen, seed=args.seed)
    x_test, y_test = make_shapes(max(len(CLASSES), args.images // 4), gen, seed=args.seed + 1)
    images = keras.Input((gen, gen, 3), dtype="uint8", name="rgb")
    pre = CaffePreprocessing(args.size, args.size, random_crop=True, mirror=True, seed=args.seed)
    model = keras.Model(images, net(pre(images)), name="resnet50_shapes")
    model.compile(optimizer=keras.optimizers.Adam(3e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    batch = 12
    before = float((model.predict(x_test, batch_size=16, verbose=0).argmax(1) == y_test).mean())
    model.fit(x_train, y_train, batch_size=batch, epochs=args.epochs, verbose=0,
              callbacks=[TqdmBar(args.epochs, -(-len(x_train) // batch))])
    logits = model.predict(x_test, batch_size=16, verbose=0)
    after = float((logits.argmax(1) == y_test).mean())
    train_seconds = time.perf_counter() - start

    path = args.out / "resnet50_shapes.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)  # safe mode: caffe2x's layers are registered by the import
    again = reloaded.predict(x_test, batch_size=16, verbose=0)
    result = {"accuracy_before": before, "accuracy_after": after, "seconds": round(train_seconds, 1),
              "keras_max_diff": float(np.abs(again - logits).max())}
    print(json.dumps({"size": args.size, "train_images": args.images, "epochs": args.epochs, **result}))
    if result["keras_max_diff"] != 0.0:
        raise SystemExit("the reloaded .keras model does not reproduce the fine-tuned model's outputs")
    return result


if __name__ == "__main__":
    main()
