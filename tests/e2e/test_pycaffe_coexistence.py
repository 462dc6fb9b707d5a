"""caffe2x imports and converts next to pycaffe in one process, in either import order (issue 9).

pycaffe's ``caffe/proto/caffe_pb2.py`` registers ``caffe.proto`` with package ``caffe`` in protobuf's
default descriptor pool; caffe2x's schema is registered as ``caffe2x/caffe/proto/caffe.proto`` with package
``caffe2x_caffe`` so the two never clash. The stand-in for pycaffe's module is compiled here with
grpcio-tools from caffe2x's own ``proto/caffe.proto`` given back upstream's file and package names
(the same messages under the same full names as BVLC's ``caffe.proto``, which is what collided).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import sys
    sys.path[:0] = [{root!r}, {package_root!r}]  # the stand-in pycaffe, and the caffe2x under test
    from google.protobuf import text_format

    def import_pycaffe():
        from caffe.proto import caffe_pb2
        assert caffe_pb2.DESCRIPTOR.name == "caffe.proto" and caffe_pb2.DESCRIPTOR.package == "caffe"
        return caffe_pb2

    def use_caffe2x():
        import caffe2x
        graph = caffe2x.load({model!r}, prototxt={prototxt!r})
        caffe2x.save(graph, {out!r})
        return graph

    if {pycaffe_first!r}:
        pycaffe = import_pycaffe()
        graph = use_caffe2x()
    else:
        graph = use_caffe2x()
        pycaffe = import_pycaffe()
    # pycaffe still works: it parses the same net and the same weights
    net = text_format.Parse(open({prototxt!r}).read(), pycaffe.NetParameter())
    weights = pycaffe.NetParameter.FromString(open({model!r}, "rb").read())
    assert [l.name for l in net.layer][-1] == graph.nodes[-1].name
    assert sum(len(l.blobs) for l in weights.layer) > 0
    import caffe2x
    assert caffe2x.load({out!r}).nodes[-1].name == graph.nodes[-1].name
    print("ok", len(graph.nodes))
''')


@pytest.fixture(scope="module")
def pycaffe_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("grpc_tools")
    root = tmp_path_factory.mktemp("pycaffe")
    src = root / "src"
    src.mkdir()
    text = (REPO_ROOT / "proto" / "caffe.proto").read_text(encoding="utf-8")
    assert "package caffe2x_caffe;" in text
    (src / "caffe.proto").write_text(text.replace("package caffe2x_caffe;", "package caffe;"), encoding="utf-8")
    pkg = root / "caffe" / "proto"
    pkg.mkdir(parents=True)
    (root / "caffe" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    # protoc in a child process: it crashes beside onnx/torch already loaded in the test process
    code = ("import sys; from importlib import resources; from grpc_tools import protoc; "
            "sys.exit(protoc.main(['protoc', '-I' + sys.argv[1], '-I' + str(resources.files('grpc_tools') / '_proto'), "
            "'--python_out=' + sys.argv[2], sys.argv[1] + '/caffe.proto']))")
    subprocess.run([sys.executable, "-c", code, str(src), str(pkg)], check=True, timeout=120)
    assert (pkg / "caffe_pb2.py").exists()
    return root


@pytest.mark.parametrize("pycaffe_first", [True, False], ids=["pycaffe-then-caffe2x", "caffe2x-then-pycaffe"])
def test_caffe2x_loads_and_converts_next_to_pycaffe(pycaffe_root: Path, tiny_files: tuple[Path, Path],
                                                    tmp_path: Path, pycaffe_first: bool) -> None:
    model, prototxt = tiny_files
    import caffe2x

    package_root = str(Path(caffe2x.__file__).resolve().parent.parent)
    script = SCRIPT.format(root=str(pycaffe_root), package_root=package_root, model=str(model), prototxt=str(prototxt),
                           out=str(tmp_path / "tiny.safetensors"), pycaffe_first=pycaffe_first)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok ")


def test_caffe2x_does_not_register_upstream_names() -> None:
    from google.protobuf import descriptor_pool

    from caffe2x.caffe.proto import caffe_pb2

    assert caffe_pb2.DESCRIPTOR.name == "caffe2x/caffe/proto/caffe.proto"
    assert caffe_pb2.NetParameter.DESCRIPTOR.full_name == "caffe2x_caffe.NetParameter"
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("caffe.NetParameter")
