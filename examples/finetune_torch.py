"""Fine-tune the converted ResNet-50 in PyTorch on a generated three-class dataset.

    python examples/finetune_torch.py            # 80x80, 180 images, 3 epochs (figures in examples/README.md)
    python examples/finetune_torch.py --quick    # 32x32, 36 images, 2 epochs: CI smoke run

Steps: convert the synthetic ResNet-50 with ``trainable=True``; replace the 1000-class ``fc1000`` with a
fresh 3-class head and freeze everything up to ``res4f`` (``caffe2x.finetune.torch.prepare``); feed
RGB uint8 images through Caffe's preprocessing (``CaffePreprocess``: BGR, 0..255, mean subtracted,
random crop + mirror while training); train; export the state_dict and ONNX, reload both and check
they give the same outputs.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import CLASSES, FREEZE, HEAD, make_shapes, parse_args, synthetic_resnet50  # noqa: E402

import caffe2x  # noqa: E402
from caffe2x.finetune.torch import CaffePreprocess, prepare  # noqa: E402


def predict(module: torch.nn.Module, pre: CaffePreprocess, images: np.ndarray, batch: int = 16) -> np.ndarray:
    module.eval(), pre.eval()
    with torch.no_grad():
        return torch.cat([module(pre(torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2)))
                          for i in range(0, len(images), batch)]).numpy()


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, __doc__)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    graph = synthetic_resnet50(args.size, args.out, caffemodel=not args.quick)
    module = caffe2x.to_torch(graph, trainable=True)
    module = prepare(module, num_classes=len(CLASSES), head=HEAD, freeze=FREEZE)
    pre = CaffePreprocess(args.size, args.size, random_crop=True, mirror=True)

    gen = round(args.size * 1.4)  # photos larger than the net input: resize + crop do real work
    x_train, y_train = make_shapes(args.images, gen, seed=args.seed)
    x_test, y_test = make_shapes(max(len(CLASSES), args.images // 4), gen, seed=args.seed + 1)
    before = float((predict(module, pre, x_test).argmax(1) == y_test).mean())

    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=3e-4)
    batch = 12
    for epoch in range(args.epochs):
        module.train(), pre.train()
        order = np.random.default_rng(args.seed + epoch).permutation(len(x_train))
        bar = tqdm(range(0, len(order), batch), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch")
        for i in bar:
            idx = order[i:i + batch]
            x = pre(torch.from_numpy(x_train[idx]).permute(0, 3, 1, 2))
            loss = torch.nn.functional.cross_entropy(module(x), torch.from_numpy(y_train[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    logits = predict(module, pre, x_test)
    after = float((logits.argmax(1) == y_test).mean())
    train_seconds = time.perf_counter() - start

    # export: state_dict (loads into a freshly prepared conversion) and ONNX (runs without torch)
    pt, onnx_path = args.out / "resnet50_shapes.pt", args.out / "resnet50_shapes.onnx"
    torch.save(module.state_dict(), pt)
    sample = pre.eval()(torch.from_numpy(x_test[:2]).permute(0, 3, 1, 2))
    torch.onnx.export(module.eval(), (sample,), onnx_path, dynamo=False, input_names=["data"],
                      output_names=["logits"], dynamic_axes={"data": {0: "batch"}, "logits": {0: "batch"}})
    fresh = prepare(caffe2x.to_torch(graph, trainable=True), num_classes=len(CLASSES), head=HEAD, freeze=FREEZE)
    fresh.load_state_dict(torch.load(pt, weights_only=True), strict=True)
    reloaded = predict(fresh, pre, x_test)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path))
    inputs = torch.cat([pre(torch.from_numpy(x_test[i:i + 16]).permute(0, 3, 1, 2))
                        for i in range(0, len(x_test), 16)]).numpy()
    onnx_logits = session.run(None, {"data": inputs})[0]
    result = {"accuracy_before": before, "accuracy_after": after, "seconds": round(train_seconds, 1),
              "state_dict_max_diff": float(np.abs(reloaded - logits).max()),
              "onnx_max_diff": float(np.abs(onnx_logits - logits).max()),
              "onnx_same_predictions": bool((onnx_logits.argmax(1) == logits.argmax(1)).all())}
    print(json.dumps({"size": args.size, "train_images": args.images, "epochs": args.epochs, **result}))
    if result["state_dict_max_diff"] != 0.0 or not result["onnx_same_predictions"] \
            or result["onnx_max_diff"] > 1e-4 * max(1.0, float(np.abs(logits).max())):
        raise SystemExit("the exports do not reproduce the fine-tuned model's outputs")
    return result


if __name__ == "__main__":
    main()
