"""Quantisation-aware training: fake-quant placement, the rounding and its gradient, a short run
under DistributedDataParallel (world size 1), the Q/DQ ONNX it exports (TensorRT rules, ONNX
Runtime against the fake-quantised network) and the command line's argument checks."""
from __future__ import annotations

import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from model_factory import B0_9, write_checkpoint

from mrfs_edge.assets import SAMPLES
from mrfs_edge.calibration.qdq import quantized_nodes, trt_rule_violations
from mrfs_edge.core.onnx_scan import scan_onnx
from mrfs_edge.metrics.cost import COST_KEY
from mrfs_edge.model.checkpoint import load_checkpoint
from mrfs_edge.model.deploy_form import to_deploy_form
from mrfs_edge.train.__main__ import main as train_main
from mrfs_edge.train.distributed import close_process, init_process
from mrfs_edge.train.fake_quant import (
    QuantConv2d,
    QuantLinear,
    TensorQuantizer,
    calibrate,
    insert_attention_quant,
    insert_fake_quant,
    unquantized_layers,
)
from mrfs_edge.train.qat import QatConfig, QatTrainer

PAIRS = ["00147D", "00734N"]
SIZE = (64, 96)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- the quantizer
def test_quantizer_rounds_to_the_int8_grid_and_passes_gradients_inside_the_range() -> None:
    quantizer = TensorQuantizer()
    quantizer.amax = torch.tensor(1.27)                     # scale 0.01
    x = torch.tensor([0.004, 0.006, -0.333, 1.0, 2.0, -5.0], requires_grad=True)
    y = quantizer(x)
    np.testing.assert_allclose(y.detach().numpy(), [0.0, 0.01, -0.33, 1.0, 1.27, -1.28], atol=1e-6)
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]   # clipped straight-through estimator

    weight = torch.tensor([[0.5, -0.25], [0.02, 0.01]])
    per_channel = TensorQuantizer(axis=0, dynamic=True)
    out = per_channel(weight)
    assert out[0, 0].item() == 0.5                              # 127 steps of its own row's scale
    assert out[0, 1].item() == pytest.approx(-64 * 0.5 / 127, abs=1e-9)   # -63.5 steps, half to even
    assert out[1, 1].item() == pytest.approx(round(0.01 / (0.02 / 127)) * 0.02 / 127, abs=1e-9)


def test_calibration_sets_max_and_percentile_ranges() -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def forward(self, a, b):
            return self.layer(a + b)

    batches = [(torch.full((1, 4), 3.0), torch.zeros(1, 4)), (torch.tensor([[-7.0, 1, 1, 1]]), torch.zeros(1, 4))]
    for method, expected in (("max", 7.0), ("percentile", (3.0 + 7.0) / 2)):
        net = Net()
        insert_fake_quant(net)
        with pytest.raises(RuntimeError, match="before calibration"):
            net(*batches[0])
        assert calibrate(net, batches, method) == 2
        assert net.layer.input_quantizer.amax.item() == pytest.approx(expected, rel=1e-3)


def test_every_weighted_layer_of_the_deploy_form_is_quantised(tmp_path) -> None:
    model = to_deploy_form(load_checkpoint(write_checkpoint(tmp_path / "m.pth", B0_9, seed=1)))
    weighted = [n for n, m in model.named_modules() if type(m) in (torch.nn.Conv2d, torch.nn.Linear)]
    parameters = {id(p) for p in model.parameters()}
    replaced = insert_fake_quant(model)
    assert sorted(replaced) == sorted(weighted) and len(weighted) > 150
    assert unquantized_layers(model) == []
    assert {id(p) for p in model.parameters()} == parameters     # the same weights, nothing copied
    head = model.decode_head
    assert all(isinstance(getattr(head, f"linear_c{k}"), QuantConv2d) for k in range(1, 5))
    assert isinstance(model.backbone.block1[0].attn.q, QuantLinear)


def test_attention_products_are_quantised_on_request(tmp_path) -> None:
    model = to_deploy_form(load_checkpoint(write_checkpoint(tmp_path / "m.pth", B0_9, seed=1)))
    insert_fake_quant(model)
    reference = to_deploy_form(load_checkpoint(tmp_path / "m.pth"))
    insert_fake_quant(reference)
    attentions = insert_attention_quant(model)
    assert len(attentions) == 32              # 2 streams × 2 blocks × 4 stages + 4 PC-Att × 4 stages
    frame = (torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(0)),
             torch.rand(1, 1, *SIZE, generator=torch.Generator().manual_seed(1)))
    calibrate(model, [frame])
    calibrate(reference, [frame])
    products = [m.products for n, m in model.named_modules() if n in set(attentions)]
    assert all(p.calls == 2 and all(torch.isfinite(q.amax) for q in p.operands) for p in products)
    with torch.no_grad():
        quantised, plain = model(*frame)[0], reference(*frame)[0]
    assert 0 < (quantised - plain).abs().max() < 0.5 * plain.abs().max()   # rounded, not broken


# --------------------------------------------------------------------------- a short run, exported
@pytest.fixture(scope="module")
def two_pairs(tmp_path_factory) -> Path:
    """Two bundled pairs at 64×96, so calibration on full frames and the crops stay small."""
    root = tmp_path_factory.mktemp("qat_data")
    for folder, interpolation in (("vi", cv2.INTER_AREA), ("ir", cv2.INTER_AREA), ("label", cv2.INTER_NEAREST)):
        (root / folder).mkdir()
        for name in PAIRS:
            image = cv2.imread(str(SAMPLES / folder / f"{name}.png"), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(root / folder / f"{name}.png"), cv2.resize(image, SIZE[::-1], interpolation=interpolation))
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(two_pairs, tmp_path_factory):
    """Three steps under DistributedDataParallel in a gloo group of one (the torchrun path), then export."""
    out = tmp_path_factory.mktemp("qat_run")
    init = write_checkpoint(out / "init.pth", B0_9, seed=2)
    config = QatConfig(data=str(two_pairs), init=str(init), out_dir=str(out), iterations=3, batch_size=1,
                       crop=SIZE, scales=(1.0,), warmup=1, lr=1e-4, calib_count=1, threads=1, seed=0,
                       save_every=3, log_every=1, height=SIZE[0], width=SIZE[1])
    with pytest.MonkeyPatch.context() as env:
        for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": str(_free_port())}.items():
            env.setenv(key, value)
        context = init_process(device="cpu")
        try:
            trainer = QatTrainer(config, context)
            trainer.start()
            before = {k: v.clone() for k, v in trainer.student.state_dict().items()}
            history = trainer.run()
            ddp = isinstance(trainer.model, torch.nn.parallel.DistributedDataParallel)
        finally:
            close_process(context)
    path = trainer.export(out / "qat.int8.onnx", "qat")
    return trainer, before, history, ddp, path


def test_short_run_trains_the_fake_quantised_network_under_ddp(trained) -> None:
    trainer, before, history, ddp, _ = trained
    assert ddp and trainer.context.world_size == 1
    assert trainer.iteration == 3 and len(history) == 3
    assert all(np.isfinite(h["loss"]) and h["loss"] > 0 for h in history)
    after = trainer.student.state_dict()
    changed = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert len(changed) > 100
    # activation ranges are calibrated and stay fixed while the weights train
    amax = [k for k in before if k.endswith("input_quantizer.amax")]
    assert amax and all(torch.equal(before[k], after[k]) and torch.isfinite(after[k]) for k in amax)
    saved = torch.load(trainer.last_path, map_location="cpu", weights_only=True)
    assert saved["iteration"] == 3 and torch.equal(saved["model"][amax[0]], after[amax[0]])


def test_export_is_a_trt_conformant_qdq_graph_that_onnx_runtime_runs_like_the_torch_model(trained) -> None:
    trainer, _, _, _, path = trained
    graph = onnx.load(str(path))
    assert trt_rule_violations(graph) == []
    assert len(quantized_nodes(graph)) >= len(trainer.layers)
    scan = scan_onnx(path)
    assert scan.has_qdq                                  # what build_engine.py --onnx detects
    assert COST_KEY in scan.metadata and "mrfs_edge.quantization" in scan.metadata
    weights = {i.name for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    producer = {o: n for n in graph.graph.node for o in n.output}
    weight_q = [n for n in graph.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in weights]
    assert len(weight_q) >= len(trainer.layers)          # float weights behind Q/DQ pairs
    assert all(producer.get(n.input[1]) is None for n in graph.graph.node if n.op_type == "DequantizeLinear")

    rng = np.random.default_rng(0)
    visible = rng.random((1, 3, *SIZE), dtype=np.float32)
    infrared = rng.random((1, 1, *SIZE), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    seg, fused = session.run(None, {"visible": visible, "infrared": infrared})
    student = trainer.student.eval()
    with torch.no_grad():
        t_seg, t_fused = (x.numpy() for x in student(torch.from_numpy(visible), torch.from_numpy(infrared)))
        f_seg, _ = (x.numpy() for x in trainer.teacher(torch.from_numpy(visible), torch.from_numpy(infrared)))
    onnx_vs_torch = np.abs(seg - t_seg).max()
    int8_vs_float = np.abs(t_seg - f_seg).max()
    assert onnx_vs_torch < 0.2 * int8_vs_float           # ORT computes the fake-quantised network, not the float one
    assert (seg.argmax(1) == t_seg.argmax(1)).mean() > 0.98
    assert np.abs(fused - t_fused).max() < 0.05


# --------------------------------------------------------------------------- the command line
@pytest.mark.parametrize(("extra", "message"), [
    (["--distill", "1"], "--distill needs --qat"),
    (["--calib-method", "max"], "--calib-method needs --qat"),
    (["--quantize-attention"], "--quantize-attention needs --qat"),
    (["--qat", "--ship", "x.pth"], "--ship cannot be combined with --qat"),
    (["--qat", "--bf16"], "--bf16 cannot be combined with --qat"),
    (["--qat", "--eval-only"], "--eval-only cannot be combined with --qat"),
    (["--qat", "--height", "100"], "--height 100 is not a positive multiple of 32"),
    (["--qat", "--distill", "-1"], "--distill -1.0 is negative"),
])
def test_qat_argument_errors_are_one_line_exit_2(extra, message, two_pairs, tmp_path, capsys) -> None:
    code = train_main(["--data", str(two_pairs), "--out-dir", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "o").exists()
