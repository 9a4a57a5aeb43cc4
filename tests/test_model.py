"""The MRFS network against the architecture spec and the authors' checkpoint manifest.

Key/shape checks use ``../shared/specs/official_checkpoint_keys.json``; the arithmetic checks
re-derive every block from the words of ``mrfs-architecture.md`` in float64 (hand-written
LayerNorm, attention with an explicit loop over heads, depthwise conv, GELU, batch norm and
bilinear resize), feeding in the module's own weights by their checkpoint names.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from conftest import SPECS, needs_shared  # noqa: E402
from model_factory import (  # noqa: E402
    B0_9,
    B2_15,
    load_manifest,
    seeded_state_dict,
    write_checkpoint,
)

from mrfs_edge.core.errors import CheckpointError, MrfsEdgeError  # noqa: E402
from mrfs_edge.model import MRFS, ModelConfig, load_checkpoint, variant_from_shapes  # noqa: E402

MANIFEST_PRESENT = needs_shared(SPECS / "official_checkpoint_keys.json")
CONFIGS = ["mit_b0_c9_e256", "mit_b2_c15_e512", "mit_b4_c9_e512", "mit_b5_c5_e768"]
# Spec table "Size and cost": parameters in millions (B5 is not in the table).
SPEC_PARAMS_M = {"mit_b0_c9_e256": 10.0, "mit_b2_c15_e512": 61.7, "mit_b4_c9_e512": 135.0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def b0_state() -> dict:
    return seeded_state_dict(*B0_9, seed=0)


@pytest.fixture(scope="module")
def b0_double(b0_state) -> MRFS:
    model = MRFS(ModelConfig(*B0_9))
    model.load_state_dict(b0_state, strict=True)
    return model.double().eval()


@pytest.fixture(scope="module")
def sd64(b0_double) -> dict:
    """The float64 weights by their checkpoint names."""
    return {k: v.detach() for k, v in b0_double.state_dict().items()}


# --------------------------------------------------------------------------- manifest
@MANIFEST_PRESENT
@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_matches_official_manifest(name: str) -> None:
    entry = load_manifest()[name]
    config = ModelConfig(entry["backbone"], entry["num_classes"], entry["decoder_embed_dim"])
    with torch.device("meta"):  # shapes only: B5 would otherwise allocate ~180M parameters
        model = MRFS(config)
    state = model.state_dict()
    expected = entry["keys"]
    assert list(state) == list(expected), "key order differs from the authors' state dict"
    shapes = {k: list(v.shape) for k, v in state.items()}
    wrong = {k: (shapes[k], expected[k]) for k in expected if shapes[k] != expected[k]}
    assert not wrong, f"shapes differ: {list(wrong.items())[:5]}"
    if name in SPEC_PARAMS_M:
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert round(params, 1) == SPEC_PARAMS_M[name]


@MANIFEST_PRESENT
@pytest.mark.parametrize("name", CONFIGS)
def test_variant_inferred_from_manifest_shapes(name: str) -> None:
    entry = load_manifest()[name]
    shapes = {k: tuple(v) for k, v in entry["keys"].items()}
    assert variant_from_shapes(shapes) == ModelConfig(entry["backbone"], entry["num_classes"],
                                                      entry["decoder_embed_dim"])


# --------------------------------------------------------------------------- loading
FORMS = ["model", "state_dict", "bare", "module", "half"]


@pytest.fixture(scope="module")
def b0_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("b0_forms")
    return {form: write_checkpoint(root / f"b0_{form}.pth", B0_9, seed=0, form=form) for form in FORMS}


@pytest.fixture(scope="module")
def probe() -> tuple:
    generator = torch.Generator().manual_seed(7)
    return torch.rand(1, 3, 64, 96, generator=generator), torch.rand(1, 1, 64, 96, generator=generator)


def test_every_accepted_form_loads_strictly_with_identical_outputs(b0_files, b0_state, probe) -> None:
    outputs = {}
    for form, path in b0_files.items():
        model = load_checkpoint(path)
        assert not model.training
        assert model.config == ModelConfig("mit_b0", 9, 256)
        loaded = model.state_dict()
        assert list(loaded) == list(b0_state)
        assert all(loaded[k].dtype == b0_state[k].dtype and torch.equal(loaded[k], b0_state[k]) for k in b0_state), form
        with torch.inference_mode():
            outputs[form] = model(*probe)
    seg0, fused0 = outputs["model"]
    assert seg0.abs().max() > 0.1 and fused0.std() > 1e-3  # the seeded weights do something
    for form, (seg, fused) in outputs.items():
        assert torch.equal(seg, seg0) and torch.equal(fused, fused0), form


def test_b2_with_15_classes_is_inferred(tmp_path) -> None:
    path = write_checkpoint(tmp_path / "b2.pth", B2_15, seed=1, form="half")
    model = load_checkpoint(path)
    assert model.config == ModelConfig("mit_b2", 15, 512)
    assert model.backbone.block3[5] is not None and len(model.backbone.extra_block3) == 6
    with torch.inference_mode():
        seg, fused = model(torch.rand(1, 3, 64, 64), torch.rand(1, 1, 64, 64))
    assert seg.shape == (1, 15, 64, 64) and fused.shape == (1, 3, 64, 64)


def test_other_class_counts_and_decoder_widths_are_inferred(tmp_path) -> None:
    path = write_checkpoint(tmp_path / "b0_c5_e768.pth", ("mit_b0", 5, 768), seed=2, form="bare")
    assert load_checkpoint(path).config == ModelConfig("mit_b0", 5, 768)


def test_bundled_demo_checkpoint_loads() -> None:
    from mrfs_edge.assets import DEMO_CHECKPOINT

    assert load_checkpoint(DEMO_CHECKPOINT).config == ModelConfig("mit_b0", 9, 256)


# --------------------------------------------------------------------------- errors
def _error(path: Path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, MrfsEdgeError)
    assert "\n" not in message, f"not one line: {message!r}"
    assert str(path) in message, f"does not name the file: {message!r}"
    return message


def test_error_missing_file(tmp_path) -> None:
    assert "no such file" in _error(tmp_path / "nope.pth")


def test_error_directory(tmp_path) -> None:
    assert "not a file" in _error(tmp_path)


def test_error_random_bytes_and_text(tmp_path) -> None:
    noise = bytearray(random.Random(0).randbytes(4096))
    noise[0] = 0x13  # not a zip or pickle header
    (tmp_path / "noise.pth").write_bytes(bytes(noise))
    assert "not a PyTorch checkpoint" in _error(tmp_path / "noise.pth")
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    assert "not a PyTorch checkpoint" in _error(tmp_path / "notes.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    assert "empty" in _error(tmp_path / "empty.pth")


def test_error_truncated_zip_and_legacy_pickle(tmp_path, b0_state) -> None:
    full = tmp_path / "full.pth"
    torch.save({"model": b0_state}, full)
    data = full.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in _error(tmp_path / "cut.pth")
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": b0_state}, legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    (tmp_path / "legacy_cut.pth").write_bytes(data[: len(data) // 3])
    assert "truncated or corrupt" in _error(tmp_path / "legacy_cut.pth")


def test_error_checkpoint_of_another_network(tmp_path) -> None:
    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.ones(64),
              "bn1.bias": torch.zeros(64), "layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3),
              "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    torch.save(resnet, tmp_path / "resnet18.pth")
    message = _error(tmp_path / "resnet18.pth")
    assert "not an MRFS checkpoint" in message
    assert "backbone.patch_embed1.proj.weight" in message  # a missing key
    assert "conv1.weight" in message                        # what the file holds instead


def test_error_near_miss_lists_missing_unexpected_and_shapes(tmp_path, b0_state) -> None:
    state = dict(b0_state)
    state["backbone.block1.0.attn.query.weight"] = state.pop("backbone.block1.0.attn.q.weight")
    state["decode_head.linear_fuse.0.weight"] = torch.zeros(256, 512, 1, 1)
    torch.save({"model": state}, tmp_path / "renamed.pth")
    message = _error(tmp_path / "renamed.pth")
    assert "1 missing" in message and "backbone.block1.0.attn.q.weight" in message
    assert "1 unexpected" in message and "backbone.block1.0.attn.query.weight" in message
    assert "decode_head.linear_fuse.0.weight" in message


def test_error_unsupported_variant(tmp_path, b0_state) -> None:
    state = dict(b0_state)
    state["backbone.patch_embed1.proj.weight"] = torch.zeros(48, 3, 7, 7)  # no MiT has width 48
    torch.save({"model": state}, tmp_path / "width48.pth")
    message = _error(tmp_path / "width48.pth")
    assert "unsupported MRFS variant" in message and "48" in message
    state = dict(b0_state)  # B0 widths with a third stage-1 block: depths [3,2,2,2]
    state.update({k.replace("block1.1.", "block1.2."): v for k, v in b0_state.items() if "backbone.block1.1." in k})
    torch.save(state, tmp_path / "depth3.pth")
    message = _error(tmp_path / "depth3.pth")
    assert "unsupported MRFS variant" in message and "[3, 2, 2, 2]" in message


class _NotATensor:
    pass


def test_error_pickled_objects_need_trust(tmp_path, b0_state) -> None:
    torch.save({"model": b0_state, "extra": _NotATensor()}, tmp_path / "objects.pth")
    message = _error(tmp_path / "objects.pth")
    assert "trust" in message
    assert load_checkpoint(tmp_path / "objects.pth", trusted=True).config.backbone == "mit_b0"


# --------------------------------------------------------------------------- forward contract
def test_forward_shapes_and_single_channel_infrared(b0_state) -> None:
    model = MRFS(ModelConfig(*B0_9))
    model.load_state_dict(b0_state)
    model.eval()
    generator = torch.Generator().manual_seed(3)
    rgb, ir = torch.rand(2, 3, 64, 96, generator=generator), torch.rand(2, 1, 64, 96, generator=generator)
    with torch.inference_mode():
        seg1, fused1 = model(rgb, ir)
        seg3, fused3 = model(rgb, ir.repeat(1, 3, 1, 1).contiguous())
    assert seg1.shape == (2, 9, 64, 96) and fused1.shape == (2, 3, 64, 96)
    assert seg1.dtype == fused1.dtype == torch.float32
    assert float(fused1.min()) > 0.0 and float(fused1.max()) < 1.0
    torch.testing.assert_close(seg1, seg3, rtol=0, atol=1e-6)
    torch.testing.assert_close(fused1, fused3, rtol=0, atol=1e-6)
    assert not torch.equal(seg1[0], seg1[1])  # batch items are independent inputs


def test_layernorm_and_batchnorm_eps_follow_the_spec(b0_double) -> None:
    eps = {name: m.eps for name, m in b0_double.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    assert eps
    for name, value in eps.items():
        leaf = name.rsplit(".", 1)[-1]
        if "patch_embed" in name or leaf == "norm" and (".attn." in name or "PCASCs" in name):
            assert value == 1e-5, name       # patch-embedding and spatial-reduction LayerNorms
        else:
            assert leaf in {"norm1", "norm2"} or leaf.startswith(("norm", "extra_norm")), name
            assert value == 1e-6, name       # block and stage LayerNorms
    for name, m in b0_double.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.eps == 1e-5, name


# --------------------------------------------------------------------------- references (spec words)
def ref_layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def ref_linear(x, sd, name, bias=True):
    y = x @ sd[f"{name}.weight"].T
    return y + sd[f"{name}.bias"] if bias else y


def ref_tokens(feature):          # N×C×H×W → N×(H·W)×C, row-major pixels
    n, c, h, w = feature.shape
    return feature.permute(0, 2, 3, 1).reshape(n, h * w, c)


def ref_map(tokens, h, w):        # N×(H·W)×C → N×C×H×W
    n, _, c = tokens.shape
    return tokens.reshape(n, h, w, c).permute(0, 3, 1, 2)


def ref_gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def ref_sigmoid(x):
    return 1.0 / (1.0 + torch.exp(-x))


def ref_softmax(x):
    e = torch.exp(x - x.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def ref_batchnorm(x, sd, name):
    shape = (1, -1, 1, 1)
    mean, var = sd[f"{name}.running_mean"].reshape(shape), sd[f"{name}.running_var"].reshape(shape)
    return (x - mean) / torch.sqrt(var + 1e-5) * sd[f"{name}.weight"].reshape(shape) + sd[f"{name}.bias"].reshape(shape)


def ref_conv1x1(x, sd, name):
    w = sd[f"{name}.weight"][:, :, 0, 0]
    return torch.einsum("oc,nchw->nohw", w, x) + sd[f"{name}.bias"].reshape(1, -1, 1, 1)


def ref_depthwise3x3(x, weight, bias):
    """out[c,y,x] = b[c] + Σ_ij w[c,i,j]·x[c, y+i−1, x+j−1] with zeros outside."""
    _, _, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1))
    out = torch.zeros_like(x) + bias.reshape(1, -1, 1, 1)
    for i in range(3):
        for j in range(3):
            out = out + weight[:, 0, i, j].reshape(1, -1, 1, 1) * padded[:, :, i:i + h, j:j + w]
    return out


def ref_resize(x, size):
    """Bilinear, align_corners False: source = (dst + ½)·in/out − ½, clamped at the borders."""
    def axis(n_in, n_out):
        src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
        i0 = src.floor().long().clamp(max=n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        return i0, i1, src - i0
    (y0, y1, ly), (x0, x1, lx) = axis(x.shape[2], size[0]), axis(x.shape[3], size[1])
    ly, lx = ly.reshape(1, 1, -1, 1), lx.reshape(1, 1, 1, -1)
    top = x[:, :, y0][:, :, :, x0] * (1 - lx) + x[:, :, y0][:, :, :, x1] * lx
    bottom = x[:, :, y1][:, :, :, x0] * (1 - lx) + x[:, :, y1][:, :, :, x1] * lx
    return top * (1 - ly) + bottom * ly


def ref_attention(query_tokens, source_tokens, h, w, sd, prefix, heads, sr, q_name, kv_name, bias):
    """softmax(q·kᵀ·(C/heads)^-½)·v per head; k/v from the (reduced) source; heads concatenated."""
    c = query_tokens.shape[-1]
    q = ref_linear(query_tokens, sd, f"{prefix}.{q_name}", bias)
    source = source_tokens
    if sr > 1:
        reduced = F.conv2d(ref_map(source, h, w), sd[f"{prefix}.sr.weight"], sd[f"{prefix}.sr.bias"], stride=sr)
        source = ref_layernorm(ref_tokens(reduced), sd[f"{prefix}.norm.weight"], sd[f"{prefix}.norm.bias"], 1e-5)
    kv = ref_linear(source, sd, f"{prefix}.{kv_name}", bias)
    k, v = kv[..., :c], kv[..., c:]
    d = c // heads
    out = []
    for head in range(heads):
        part = slice(head * d, (head + 1) * d)
        weights = ref_softmax(q[..., part] @ k[..., part].transpose(1, 2) * d ** -0.5)
        out.append(weights @ v[..., part])
    return torch.cat(out, dim=-1)


def ref_efficient_attention(x, h, w, sd, prefix, heads, sr):
    return ref_linear(ref_attention(x, x, h, w, sd, prefix, heads, sr, "q", "kv", True), sd, f"{prefix}.proj")


def ref_mixffn(x, h, w, sd, prefix):
    hidden = ref_linear(x, sd, f"{prefix}.fc1")
    hidden = ref_depthwise3x3(ref_map(hidden, h, w), sd[f"{prefix}.dwconv.dwconv.weight"],
                              sd[f"{prefix}.dwconv.dwconv.bias"])
    return ref_linear(ref_gelu(ref_tokens(hidden)), sd, f"{prefix}.fc2")


def ref_block(x, h, w, sd, prefix, heads, sr):
    x = x + ref_efficient_attention(ref_layernorm(x, sd[f"{prefix}.norm1.weight"], sd[f"{prefix}.norm1.bias"], 1e-6),
                                    h, w, sd, f"{prefix}.attn", heads, sr)
    return x + ref_mixffn(ref_layernorm(x, sd[f"{prefix}.norm2.weight"], sd[f"{prefix}.norm2.bias"], 1e-6),
                          h, w, sd, f"{prefix}.mlp")


HEADS, SRS = (1, 2, 5, 8), (8, 4, 2, 1)


def ref_stream_stage(x, sd, stream, stage, depth):
    """Patch embedding (7/4/3 then 3/2/1), ``depth`` blocks, stage LayerNorm → map."""
    kernel, stride = (7, 4) if stage == 1 else (3, 2)
    name = f"backbone.{stream}patch_embed{stage}"
    y = F.conv2d(x, sd[f"{name}.proj.weight"], sd[f"{name}.proj.bias"], stride=stride, padding=kernel // 2)
    h, w = y.shape[2:]
    tokens = ref_layernorm(ref_tokens(y), sd[f"{name}.norm.weight"], sd[f"{name}.norm.bias"], 1e-5)
    for i in range(depth):
        tokens = ref_block(tokens, h, w, sd, f"backbone.{stream}block{stage}.{i}", HEADS[stage - 1], SRS[stage - 1])
    norm = f"backbone.{stream}norm{stage}"
    return ref_map(ref_layernorm(tokens, sd[f"{norm}.weight"], sd[f"{norm}.bias"], 1e-6), h, w)


def ref_igm(v, t, sd, prefix):
    n, c, h, w = v.shape
    both = torch.cat([v, t], dim=1)
    gate = ref_tokens(both)
    gate = ref_sigmoid(ref_linear(torch.relu(ref_linear(gate, sd, f"{prefix}.gate.0")), sd, f"{prefix}.gate.2"))
    g = ref_map(gate, h, w)

    def mlp(z):
        return ref_linear(torch.relu(ref_linear(z, sd, f"{prefix}.MA.ca_gate.mlp.0")), sd, f"{prefix}.MA.ca_gate.mlp.2")
    ca = ref_sigmoid(mlp(both.mean(dim=(2, 3))) + mlp(both.amax(dim=(2, 3)))).reshape(n, 2 * c, 1, 1)
    ca_v, ca_t = ca[:, :c], ca[:, c:]
    stats = torch.cat([v.mean(1, keepdim=True), v.amax(1, keepdim=True),
                       t.mean(1, keepdim=True), t.amax(1, keepdim=True)], dim=1)
    sa = ref_sigmoid(ref_conv1x1(torch.relu(ref_conv1x1(stats, sd, f"{prefix}.MA.sa_gate.mlp.0")),
                                 sd, f"{prefix}.MA.sa_gate.mlp.2"))
    m_v, m_t = ca_v * sa[:, 0:1], ca_t * sa[:, 1:2]
    return v + (1 - g) * m_t * t, t + g * m_v * v


def ref_pc(v, t, sd, prefix, heads, sr):
    _, _, h, w = v.shape

    def self_att(x, name):
        return ref_linear(ref_attention(x, x, h, w, sd, f"{prefix}.{name}", heads, sr, "q", "kv", False) + x,
                          sd, f"{prefix}.{name}.proj")

    def cross_att(first, second, name):
        return ref_linear(ref_attention(first, second, h, w, sd, f"{prefix}.{name}", heads, sr, "q1", "kv2", False)
                          + first, sd, f"{prefix}.{name}.proj")
    a = self_att(ref_tokens(v), "SA_x1")
    b = cross_att(ref_tokens(t), a, "CA_x1toX2")
    c = self_att(b, "SA_x2")
    d = cross_att(a, c, "CA_x2toX1")
    return ref_map(ref_linear(d, sd, f"{prefix}.proj"), h, w)


def ref_decode_head(features, sd):
    size = features[0].shape[2:]
    projected = []
    for k in (4, 3, 2, 1):
        f = features[k - 1]
        y = ref_map(ref_linear(ref_tokens(f), sd, f"decode_head.linear_c{k}.proj"), *f.shape[2:])
        projected.append(ref_resize(y, size) if k != 1 else y)
    fused = torch.relu(ref_batchnorm(ref_conv1x1(torch.cat(projected, 1), sd, "decode_head.linear_fuse.0"),
                                     sd, "decode_head.linear_fuse.1"))
    return ref_conv1x1(fused, sd, "decode_head.linear_pred")


def ref_fusion_head(vision, rgb, modal_x, sd):
    size = rgb.shape[2:]
    maps = []
    for stage in range(1, 5):
        for i, stream in enumerate(("rgb", "ir")):
            name = f"aux_head.PointConv_{stage}_{stream}.pconv"
            y = torch.relu(ref_batchnorm(ref_conv1x1(vision[2 * stage - 2 + i], sd, f"{name}.0"), sd, f"{name}.1"))
            maps.append(ref_resize(y, size))
    x = torch.cat(maps + [rgb, modal_x], dim=1)
    assert x.shape[1] == 134
    x = F.conv2d(x, sd["aux_head.CNN_fuse.0.weight"], sd["aux_head.CNN_fuse.0.bias"], padding=1)
    x = torch.relu(ref_batchnorm(x, sd, "aux_head.CNN_fuse.1"))
    return ref_sigmoid(ref_conv1x1(x, sd, "aux_head.CNN_fuse.3"))


def ref_network(rgb, ir, sd, depths=(2, 2, 2, 2)):
    modal_x = ir.expand(-1, 3, -1, -1) if ir.shape[1] == 1 else ir
    v, t = rgb, modal_x
    vision, semantic = [], []
    for stage in range(1, 5):
        v = ref_stream_stage(v, sd, "", stage, depths[stage - 1])
        t = ref_stream_stage(t, sd, "extra_", stage, depths[stage - 1])
        v, t = ref_igm(v, t, sd, f"backbone.IGMAVCs.{stage - 1}")
        semantic.append(ref_pc(v, t, sd, f"backbone.PCASCs.{stage - 1}", HEADS[stage - 1], SRS[stage - 1]))
        vision += [v, t]
    seg = ref_resize(ref_decode_head(semantic, sd), rgb.shape[2:])
    return seg, ref_fusion_head(vision, rgb, modal_x, sd)


def _close(actual, expected) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-10)


def _tokens(n, hw, c, seed):
    return torch.randn(n, hw, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_efficient_self_attention_matches_reference(b0_double, sd64, stage) -> None:
    h, w = (16, 24) if stage == 1 else (8, 12)
    x = _tokens(2, h * w, b0_double.config.encoder.embed_dims[stage - 1], stage)
    prefix = f"backbone.block{stage}.1.attn"
    module = b0_double.backbone.get_submodule(f"block{stage}.1.attn")
    with torch.no_grad():
        _close(module(x, h, w), ref_efficient_attention(x, h, w, sd64, prefix, HEADS[stage - 1], SRS[stage - 1]))


@pytest.mark.parametrize("stage", [1, 3])
def test_mixffn_and_whole_block_match_reference(b0_double, sd64, stage) -> None:
    h, w = 16, 24
    x = _tokens(1, h * w, b0_double.config.encoder.embed_dims[stage - 1], 10 + stage)
    block = b0_double.backbone.get_submodule(f"extra_block{stage}.0")
    prefix = f"backbone.extra_block{stage}.0"
    with torch.no_grad():
        _close(block.mlp(x, h, w), ref_mixffn(x, h, w, sd64, f"{prefix}.mlp"))
        _close(block(x, h, w), ref_block(x, h, w, sd64, prefix, HEADS[stage - 1], SRS[stage - 1]))


@pytest.mark.parametrize("stage", [1, 2, 4])
def test_igm_att_matches_reference(b0_double, sd64, stage) -> None:
    c = b0_double.config.encoder.embed_dims[stage - 1]
    generator = torch.Generator().manual_seed(20 + stage)
    v = torch.randn(2, c, 6, 10, generator=generator, dtype=torch.float64)
    t = torch.randn(2, c, 6, 10, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        out_v, out_t = b0_double.backbone.IGMAVCs[stage - 1](v, t)
    ref_v, ref_t = ref_igm(v, t, sd64, f"backbone.IGMAVCs.{stage - 1}")
    _close(out_v, ref_v)
    _close(out_t, ref_t)


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_pc_att_matches_reference(b0_double, sd64, stage) -> None:
    c = b0_double.config.encoder.embed_dims[stage - 1]
    h, w = (16, 24) if stage == 1 else (8, 12)
    generator = torch.Generator().manual_seed(30 + stage)
    v = torch.randn(1, c, h, w, generator=generator, dtype=torch.float64)
    t = torch.randn(1, c, h, w, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        out = b0_double.backbone.PCASCs[stage - 1](v, t)
    _close(out, ref_pc(v, t, sd64, f"backbone.PCASCs.{stage - 1}", HEADS[stage - 1], SRS[stage - 1]))


def test_heads_match_reference(b0_double, sd64) -> None:
    generator = torch.Generator().manual_seed(40)
    dims, h, w = b0_double.config.encoder.embed_dims, 64, 96
    maps = [torch.randn(2, d, h // s, w // s, generator=generator, dtype=torch.float64)
            for d, s in zip(dims, (4, 8, 16, 32))]
    vision = [m for pair in zip(maps, [m.flip(1) for m in maps]) for m in pair]
    rgb = torch.rand(2, 3, h, w, generator=generator, dtype=torch.float64)
    modal_x = torch.rand(2, 1, h, w, generator=generator, dtype=torch.float64).expand(-1, 3, -1, -1)
    with torch.no_grad():
        _close(b0_double.decode_head(maps), ref_decode_head(maps, sd64))
        _close(b0_double.aux_head(vision, rgb, modal_x), ref_fusion_head(vision, rgb, modal_x, sd64))


def test_whole_network_matches_reference(b0_double, sd64) -> None:
    generator = torch.Generator().manual_seed(50)
    rgb = torch.rand(1, 3, 64, 96, generator=generator, dtype=torch.float64)
    ir = torch.rand(1, 1, 64, 96, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        seg, fused = b0_double(rgb, ir)
    ref_seg, ref_fused = ref_network(rgb, ir, sd64)
    assert seg.shape == (1, 9, 64, 96) and fused.shape == (1, 3, 64, 96)
    _close(seg, ref_seg)
    _close(fused, ref_fused)
    assert float(ref_seg.std()) > 0.1  # a check with teeth: logits vary across pixels and classes
