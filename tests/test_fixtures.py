"""The synthetic models must be structurally KaimingHe's nets, so what holds on them holds on the real ones."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from google.protobuf import text_format

from caffe2x import fixtures
from caffe2x.caffe import parse
from caffe2x.graph.counts import caffe_parameter_count

# sha256 of the canonical layer summary (name|type|bottoms|tops|params, one line per layer) of the public
# deploy prototxts ResNet-{50,101,152}-deploy.prototxt (KaimingHe/deep-residual-networks, a7026cb),
# computed once from those files; the files themselves are not shipped.
REFERENCE_DIGESTS = {
    50: (228, "fe0a4afd4fb660b6bfd0deaa7b7ea737586747d62faa7085135250947ffc79c2"),
    101: (449, "cb6a08bf904d764802b094e608e6923eff85f8e83cef90c1938a3b4d51d40503"),
    152: (670, "ce7b95459cb6135bb15a9da7aa58c544e95d76e37da35c3e5992bf9438451bc9"),
}


def layer_summary(net) -> list[str]:  # type: ignore[no-untyped-def]
    rows = []
    for layer in net.layer:
        params = [f"{fd.name}{{{text_format.MessageToString(v, as_one_line=True)}}}"
                  for fd, v in layer.ListFields() if fd.name.endswith("_param")]
        rows.append("|".join([layer.name, layer.type, ",".join(layer.bottom), ",".join(layer.top), ";".join(params)]))
    return rows


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_generated_resnet_prototxt_is_structurally_kaiminghes(depth: int) -> None:
    net = parse.parse_prototxt_text(fixtures.resnet_prototxt(depth))
    rows = layer_summary(net)
    count, digest = REFERENCE_DIGESTS[depth]
    assert len(rows) == count
    assert hashlib.sha256("\n".join(rows).encode()).hexdigest() == digest
    assert list(net.input) == ["data"] and list(net.input_dim) == [1, 3, 224, 224]


def test_synthetic_resnet50_has_the_real_parameter_count_and_bias_layout(resnet50_graph) -> None:
    g = resnet50_graph
    assert caffe_parameter_count(g) == 25_610_269
    convs = [n for n in g.nodes if n.op == "Convolution"]
    assert [n.name for n in convs if "bias" in n.params] == ["conv1"]
    assert g.shapes[g.value("pool1")] == (1, 64, 56, 56)  # ceil-mode 112 -> 56
    assert g.outputs == ["prob"]


def test_synthetic_caffemodel_stores_batchnorm_factor_not_one(resnet50_files) -> None:
    net = parse.parse_caffemodel_bytes(resnet50_files[0].read_bytes())
    factors = {l.name: parse.blob_array(l.blobs[2])[0] for l in net.layer if l.type == "BatchNorm"}
    assert len(factors) == 53
    assert all(f == pytest.approx(float(fixtures.BN_FACTOR)) for f in factors.values())
    bn = next(l for l in net.layer if l.name == "bn_conv1")
    graph_mean = fixtures.graph("tiny")  # touch the cache path too
    assert graph_mean.nodes
    stored = parse.blob_array(bn.blobs[0])
    assert not np.allclose(stored, stored / fixtures.BN_FACTOR)


def test_synthetic_resnet50_logits_are_well_conditioned(resnet50_graph, image_batch) -> None:
    import caffe2x

    logits = caffe2x.run(resnet50_graph, image_batch, outputs="fc1000")
    assert np.isfinite(logits).all()
    assert 0.3 < logits.std() < 30
    top = np.sort(logits, axis=1)[:, ::-1]
    gaps = top[:, :5] - top[:, 1:6]
    assert gaps.min() > 1e-4 * np.abs(logits).max()  # a clear top-5: no near-ties for rounding to flip


def test_fixture_generation_is_deterministic() -> None:
    a = fixtures.synthesize(fixtures.TINY_PROTOTXT, seed=3)
    b = fixtures.synthesize(fixtures.TINY_PROTOTXT, seed=3)
    c = fixtures.synthesize(fixtures.TINY_PROTOTXT, seed=4)
    assert a == b and a != c
