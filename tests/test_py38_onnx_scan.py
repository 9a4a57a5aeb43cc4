"""scan_onnx: what the target CLI knows of an ONNX without the onnx package (core install)."""
from __future__ import annotations

import pytest

from mrfs_edge.core.errors import ModelFileError
from mrfs_edge.core.onnx_scan import FLOAT16, scan_onnx


def test_scan_reads_qdq_fp16_and_metadata_as_onnx_does(tmp_path) -> None:
    onnx = pytest.importorskip("onnx", reason="the reference reading comes from the onnx package")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [helper.make_tensor("s", TensorProto.FLOAT16, [], [0.5])])
    model = helper.make_model(graph)
    helper.set_model_props(model, {"mrfs_edge.core.contract": "{}", "k": "v é"})
    onnx.save(model, str(tmp_path / "m.onnx"))
    scan = scan_onnx(tmp_path / "m.onnx")
    assert scan.op_types == {n.op_type for n in model.graph.node} and scan.has_qdq
    assert scan.initializer_types == {FLOAT16} and scan.is_fp16
    assert scan.metadata == {"mrfs_edge.core.contract": "{}", "k": "v é"}


def test_a_file_that_is_no_onnx_is_a_one_line_error(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x3a\xff\xff\xff\x0f")   # graph field whose length runs past the end
    with pytest.raises(ModelFileError, match="bad.onnx: not a readable ONNX protobuf"):
        scan_onnx(bad)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty file"):
        scan_onnx(tmp_path / "empty.onnx")
