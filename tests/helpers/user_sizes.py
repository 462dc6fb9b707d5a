"""Nets whose tensor sizes come from numbers a user (or a hostile file) wrote, one per path where a
byte count is derived from them; run as a script, it tries each in turn and prints one JSON line per
case. ``tests/graph/test_user_sizes.py`` runs it in one child process under an address-space limit and
``CAFFE2X_MAX_BYTES=256M``, and docs/hostile-inputs.md's audit table names these cases.

Each case: what to do (``load`` a weightless prototxt, ``load`` it at an ``input_shape``, or ``run`` it
at a given input size) and the ``expect``-ed outcome: ``refused`` (a SizeLimitError, before allocating)
or ``invalid`` (a GraphError / Caffe2xError naming the layer). Any other exception, MemoryError included,
is an escape.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

INPUT = 'name: "n"\ninput: "data"\ninput_shape {{ dim: {dims} }}\n'


def net(dims: str, *layers: str) -> str:
    return INPUT.format(dims=dims.replace(",", " dim: ")) + "".join(f"layer {{ {l} }}\n" for l in layers)


CASES: dict[str, dict[str, Any]] = {
    # weightless nets: seeded tensors counted before each is drawn
    "weightless InnerProduct num_output": dict(prototxt=net("1,16", 'name: "fc" type: "InnerProduct" bottom: "data" '
                                               'top: "fc" inner_product_param { num_output: 16777216 }'),
                                               expect="refused", match="layer 'fc' weight tensor [16777216, 16]"),
    "weightless Convolution num_output": dict(prototxt=net("1,3,8,8", 'name: "c" type: "Convolution" bottom: "data" '
                                              'top: "c" convolution_param { num_output: 16777216 kernel_size: 3 }'),
                                              expect="refused", match="layer 'c' weight tensor [16777216, 3, 3, 3]"),
    "weightless Embed input_dim": dict(prototxt=net("1,4", 'name: "e" type: "Embed" bottom: "data" top: "e" '
                                       'embed_param { input_dim: 1073741824 num_output: 16 }'),
                                       expect="refused", match="layer 'e' weight tensor [1073741824, 16]"),
    "weightless LSTM num_output": dict(prototxt=net("4,1,8", 'name: "cont" type: "DummyData" top: "cont" '
                                       'dummy_data_param { shape { dim: 4 dim: 1 } }',
                                       'name: "l" type: "LSTM" bottom: "data" bottom: "cont" top: "l" '
                                       'recurrent_param { num_output: 1048576 }'),
                                       expect="refused", match="layer 'l'"),
    # inputs whose shape the prototxt, a data layer or the caller gives
    "input_shape dims": dict(prototxt=net("1,3,100000,100000", 'name: "r" type: "ReLU" bottom: "data" top: "r"'),
                             expect="refused", match="input 'data' of shape [1, 3, 100000, 100000]"),
    "input_shape= of load": dict(prototxt=net("1,3,8,8", 'name: "r" type: "ReLU" bottom: "data" top: "r"'),
                                 input_shape=(1, 3, 100000, 100000), expect="refused",
                                 match="input 'data' of shape [1, 3, 100000, 100000]"),
    "input_shape dim past int32": dict(prototxt=net("1,3,8,4294967297", 'name: "r" type: "ReLU" bottom: "data" top: "r"'),
                                       expect="invalid", match="dimension 4294967297"),
    "DummyData shape": dict(prototxt='name: "n"\nlayer { name: "d" type: "DummyData" top: "data" dummy_data_param '
                            '{ shape { dim: 1 dim: 3 dim: 100000 dim: 100000 } } }\n'
                            'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n',
                            expect="refused", match="[1, 3, 100000, 100000]"),
    "DummyData legacy num/channels/height/width": dict(
        prototxt='name: "n"\nlayer { name: "d" type: "DummyData" top: "data" dummy_data_param '
                 '{ num: 100000 channels: 3 height: 1000 width: 1000 } }\n'
                 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n',
        expect="refused", match="[100000, 3, 1000, 1000]"),
    "MemoryData batch_size": dict(prototxt='name: "n"\nlayer { name: "d" type: "MemoryData" top: "data" top: "label" '
                                  'memory_data_param { batch_size: 1000000 channels: 3 height: 224 width: 224 } }\n'
                                  'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n',
                                  expect="refused", match="[1000000, 3, 224, 224]"),
    # layers whose parameters multiply a value
    "Tile tiles": dict(prototxt=net("1,3,8,8", 'name: "t" type: "Tile" bottom: "data" top: "t" '
                       'tile_param { axis: 1 tiles: 10000000 }'), expect="refused", match="layer 't' output 't' of shape [1, 30000000, 8, 8]"),
    "Tile tiles past int32": dict(prototxt=net("1,3,8,8", 'name: "t" type: "Tile" bottom: "data" top: "t" '
                                  'tile_param { axis: 1 tiles: 1073741824 }'), expect="invalid",
                                  match="dimension 3221225472"),
    "Reshape dims": dict(prototxt=net("1,3,8,8", 'name: "s" type: "Reshape" bottom: "data" top: "s" '
                         'reshape_param { shape { dim: 1 dim: 1000000 dim: 1000000 } }'),
                         expect="invalid", match="layer 's'"),
    "Deconvolution stride": dict(prototxt=net("1,3,64,64", 'name: "d" type: "Deconvolution" bottom: "data" top: "d" '
                                 'convolution_param { num_output: 3 kernel_size: 4 stride: 65536 }'),
                                 expect="refused", match="layer 'd' output"),
    "Interp zoom_factor": dict(prototxt=net("1,3,64,64", 'name: "i" type: "Interp" bottom: "data" top: "i" '
                               'interp_param { zoom_factor: 100000 }'), expect="refused", match="layer 'i' output"),
    "Upsample scale": dict(prototxt=net("1,3,64,64", 'name: "u" type: "Upsample" bottom: "data" top: "u" '
                           'upsample_param { scale: 100000 }'), expect="refused", match="layer 'u' output"),
    "ArgMax top_k": dict(prototxt=net("1,16", 'name: "a" type: "ArgMax" bottom: "data" top: "a" '
                         'argmax_param { top_k: 1000000000 }'), expect="invalid", match="layer 'a'"),
    "SPP pyramid_height": dict(prototxt=net("1,3,8,8", 'name: "p" type: "SPP" bottom: "data" top: "p" '
                               'spp_param { pyramid_height: 40 }'), expect="invalid", match="layer 'p'"),
    # Proposal's top-N: rows are min(H x W x anchors, pre_nms_topN, post_nms_topN), never the number itself
    "Proposal post_nms_topN": dict(prototxt='name: "n"\ninput: "cls"\ninput_shape { dim: 1 dim: 18 dim: 8 dim: 8 }\n'
                                   'input: "bbox"\ninput_shape { dim: 1 dim: 36 dim: 8 dim: 8 }\n'
                                   'input: "im_info"\ninput_shape { dim: 1 dim: 3 }\n'
                                   'layer { name: "p" type: "Proposal" bottom: "cls" bottom: "bbox" bottom: "im_info" '
                                   'top: "rois" proposal_param { pre_nms_topn: 2147483647 post_nms_topn: 2147483647 '
                                   'feat_stride: 16 } }\n', expect="ok", rows=8 * 8 * 9),
    # a forward pass: every value small, the sum over the limit
    "forward pass at the declared size": dict(
        prototxt=net("1,16,2048,2048", *[f'name: "r{i}" type: "ReLU" bottom: "data" top: "r{i}"' for i in range(8)]),
        expect="refused", match="over the"),
    "run at a larger input size": dict(prototxt=net("1,3,32,32", 'name: "c" type: "Convolution" bottom: "data" top: "c" '
                                       'convolution_param { num_output: 64 kernel_size: 3 pad: 1 }'),
                                       run=(1, 3, 1024, 1024), expect="refused", match="forward pass"),
    "run with a float64 view of a huge batch": dict(prototxt=net("1,3,32,32", 'name: "r" type: "ReLU" bottom: "data" '
                                                 'top: "r"'), run=(100000, 3, 512, 512), dtype="float64",
                                                 expect="refused", match="at batch 100000"),
    "run at a larger batch": dict(prototxt=net("1,3,32,32", 'name: "c" type: "Convolution" bottom: "data" top: "c" '
                                  'convolution_param { num_output: 64 kernel_size: 3 pad: 1 }'),
                                  run=(1024, 3, 32, 32), expect="refused", match="at batch 1024"),
}


def attempt(case: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    import caffe2x
    from caffe2x.graph.checks import GraphError, SizeLimitError
    from caffe2x.graph.reference import run

    start = time.perf_counter()
    try:
        from caffe2x.caffe.reader import read_bytes

        graph = read_bytes(None, case["prototxt"], case.get("input_shape"), prototxt_name="net.prototxt")
        if "run" in case:
            # the caller's own array is theirs to allocate; broadcast a scalar so it costs nothing here
            x = np.broadcast_to(np.zeros((), case.get("dtype", "float32")), case["run"])
            run(graph, x)
        outcome, message = "ok", ""
        if "rows" in case:
            message = f"rows {graph.shapes[graph.outputs[0]][0]}"
    except SizeLimitError as exc:
        outcome, message = "refused", str(exc)
    except (GraphError, caffe2x.Caffe2xError) as exc:
        outcome, message = "invalid", str(exc)
    except BaseException as exc:  # noqa: BLE001 - an escape is what the test looks for
        outcome, message = "escaped", f"{type(exc).__name__}: {exc}"
    return {"outcome": outcome, "message": message, "seconds": round(time.perf_counter() - start, 2)}


def peak_rss_mb() -> int:
    """This process's own peak RSS: ``VmHWM`` of its memory map. (``ru_maxrss`` is no use here: Linux
    keeps the larger of the parent's RSS at fork and the child's across exec, so a driver started from
    a pytest worker holding TensorFlow would report the worker's 1 GB.)"""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> int:
    names = sys.argv[1:] or list(CASES)
    for name in names:
        result = attempt(CASES[name])
        result["case"] = name
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
