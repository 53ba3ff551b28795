"""NVFP4Experts without a GPU: argument checking, from_modelopt's conversion of a synthetic ModelOpt
checkpoint (bytes, 128x4 interleave, scales), and the forward pass with nvfp4_driver's kernels
replaced by the README example's reference backend (nvfp4_driver.reference: the kernels' bytes), held
to the error bound derived in tests/moe_example.py."""
import numpy as np
import pytest
import torch

import modelopt_checkpoint as ck
import moe_example as ex
from nvfp4_driver import experts as experts_module, layout
from nvfp4_driver.moe import NVFP4Experts


@pytest.fixture
def reference_kernels(monkeypatch):
    """The layer's GPU calls computed by nvfp4_driver.reference on CPU tensors."""
    backend = ex.reference_backend()
    gemm = backend.pop("group_gemm_nvfp4_nt_groupwise")
    for name, fn in backend.items():
        monkeypatch.setattr(experts_module, name, fn)
    monkeypatch.setattr(experts_module, "group_gemm_nvfp4_nt_groupwise",
                        lambda *args, out_dtype: gemm(*args).to(out_dtype))
    return ex.load_example(ex.reference_backend())["moe_bf16"]


def small_layer(seed, tokens=96, hidden=256, inter=128, experts=4, topk=2):
    return ex.make_layer(tokens, hidden, inter, experts, topk, seed, device="cpu")


def test_from_bf16_forward_within_the_derived_bound(reference_kernels):
    x, w13, w2, ids, wts = small_layer(7)
    layer = NVFP4Experts.from_bf16(w13, w2)
    out = layer(x, ids, wts)
    assert out.dtype == torch.bfloat16 and tuple(out.shape) == tuple(x.shape)
    exact64, nvfp4_64 = ex.layers_f64(x, w13, w2, ids, wts)
    print(ex.check_errors(out, reference_kernels(x, ids, wts, w13, w2), exact64, nvfp4_64))


@pytest.mark.parametrize("split_gate_up", [False, True])
def test_from_modelopt_forward_within_the_derived_bound(reference_kernels, split_gate_up):
    x, w13, w2, ids, wts = small_layer(11, experts=6, topk=3)
    in_amax, act_amax = ck.routed_amaxes(x, ids, wts, w13, w2)
    tensors, w13_dec, w2_dec = ck.make_checkpoint(w13, w2, in_amax, act_amax, split_gate_up=split_gate_up)
    layer = NVFP4Experts.from_modelopt(tensors, ck.PREFIX, device="cpu")
    assert (layer.up_scale_ratio is not None) == split_gate_up
    out = layer(x, ids, wts)
    want = ck.expected_layer_f64(tensors, x, ids, wts, w13_dec, w2_dec)
    exact64 = ex.moe_f64(x, ids, wts, w13.float().numpy(), w2.float().numpy())
    print(ex.check_errors(out, reference_kernels(x, ids, wts, w13, w2), exact64, want))
    if split_gate_up:  # the ratio matters: without it the up half is off by it, far beyond the bound
        layer.up_scale_ratio = None
        with pytest.raises(AssertionError, match="strays from the float64 NVFP4 pipeline"):
            ex.check_errors(layer(x, ids, wts), reference_kernels(x, ids, wts, w13, w2), exact64, want)


def test_from_modelopt_buffers(rng):
    """The conversion, checked against NumPy: bytes kept, scales interleaved by layout.swizzle_scales,
    gsf = 1 / weight_scale_2 in float32, input gsf = 1 / max(gate, up input_scale), up / gate ratio."""
    experts, inter, hidden = 3, 128, 256
    w13 = torch.from_numpy(rng.standard_normal((experts, 2 * inter, hidden)) * 2.0 ** rng.integers(-6, 6, (experts, 2, 1)
                           ).repeat(inter, axis=1)).float()
    w2 = torch.from_numpy(rng.standard_normal((experts, hidden, inter))).float()
    in_amax, act_amax = rng.uniform(1, 10, experts), rng.uniform(1, 10, experts)
    tensors, _, _ = ck.make_checkpoint(w13, w2, in_amax, act_amax, split_gate_up=True)
    layer = NVFP4Experts.from_modelopt(tensors, ck.PREFIX, device="cpu")

    def get(e, proj, field):
        t = tensors[f"{ck.PREFIX}{e}.{proj}.{field}"]
        return t.view(torch.uint8).numpy() if field == "weight_scale" else t.numpy()

    for e in range(experts):
        np.testing.assert_array_equal(layer.w13[e].numpy(), np.concatenate([get(e, "gate_proj", "weight"),
                                                                             get(e, "up_proj", "weight")]))
        np.testing.assert_array_equal(layer.w2[e].numpy(), get(e, "down_proj", "weight"))
        plain13 = np.concatenate([get(e, "gate_proj", "weight_scale"), get(e, "up_proj", "weight_scale")])
        np.testing.assert_array_equal(layer.w13_scale[e].numpy(), layout.swizzle_scales(plain13))
        np.testing.assert_array_equal(layer.w2_scale[e].numpy(), layout.swizzle_scales(get(e, "down_proj",
                                                                                           "weight_scale")))
        one = np.float32(1)
        gate2, up2 = get(e, "gate_proj", "weight_scale_2"), get(e, "up_proj", "weight_scale_2")
        assert layer.w13_global_scale[e].item() == one / gate2
        assert layer.w2_global_scale[e].item() == one / get(e, "down_proj", "weight_scale_2")
        assert layer.up_scale_ratio[e].item() == np.float32(up2 / gate2)
        in_scale = max(get(e, "gate_proj", "input_scale"), get(e, "up_proj", "input_scale"))
        assert layer.input_global_scale[e].item() == one / in_scale
        assert layer.act_global_scale[e].item() == one / get(e, "down_proj", "input_scale")
        assert layer.w13_alpha[e].item() == one / (layer.input_global_scale[e].numpy() * (one / gate2))
    assert layer.w13_scale.shape == (experts, 2 * inter, hidden // 16)
    assert layer.w2_scale.shape == (experts, hidden, inter // 16)


def test_from_modelopt_reads_a_safetensors_file(tmp_path, rng):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    w13 = torch.from_numpy(rng.standard_normal((2, 256, 128))).float()
    w2 = torch.from_numpy(rng.standard_normal((2, 128, 128))).float()
    tensors, _, _ = ck.make_checkpoint(w13, w2, [3.0, 4.0], [1.0, 2.0], split_gate_up=False)
    path = tmp_path / "model-00001-of-00001.safetensors"
    safetensors_torch.save_file(tensors, str(path))
    loaded = NVFP4Experts.from_modelopt(safetensors_torch.load_file(str(path)), ck.PREFIX, device="cpu")
    direct = NVFP4Experts.from_modelopt(tensors, ck.PREFIX, device="cpu")
    for name, buf in direct.named_buffers():
        assert torch.equal(buf, getattr(loaded, name)), name


def test_from_modelopt_names_what_is_missing():
    w13, w2 = torch.randn(2, 256, 128), torch.randn(2, 128, 128)
    tensors, _, _ = ck.make_checkpoint(w13, w2, [1.0, 1.0], [1.0, 1.0], split_gate_up=False)
    with pytest.raises(ValueError, match=r"no tensor named 'model\.layers\.9\.<e>\.gate_proj\.weight'"):
        NVFP4Experts.from_modelopt(tensors, "model.layers.9.", device="cpu")
    del tensors[f"{ck.PREFIX}1.up_proj.weight_scale_2"]
    with pytest.raises(ValueError, match=r"'model\.layers\.1\.mlp\.experts\.1\.up_proj\.weight_scale_2' is missing"):
        NVFP4Experts.from_modelopt(tensors, ck.PREFIX, device="cpu")
    tensors, _, _ = ck.make_checkpoint(w13, w2, [1.0, 1.0], [1.0, 1.0], split_gate_up=False)
    tensors[f"{ck.PREFIX}0.down_proj.weight_scale"] = tensors[f"{ck.PREFIX}0.down_proj.weight_scale"].view(
        torch.uint8)
    with pytest.raises(ValueError, match=r"down_proj\.weight_scale' is \(128, 8\) torch\.uint8 but .*float8_e4m3fn"):
        NVFP4Experts.from_modelopt(tensors, ck.PREFIX, device="cpu")


def u8(*shape):
    return torch.zeros(shape, dtype=torch.uint8)


def f32(*shape):
    return torch.ones(shape, dtype=torch.float32)


@pytest.mark.parametrize("args,kwargs,match", [
    ((u8(2, 256, 64), u8(2, 256, 8), f32(2), u8(2, 128, 64), u8(2, 128, 8), f32(2)), {}, None),
    ((u8(2, 256, 96), u8(2, 256, 12), f32(2), u8(2, 192, 64), u8(2, 256, 8), f32(2)), {}, r"H=192.*multiples of 128"),
    ((u8(2, 256, 64), u8(2, 256, 8), f32(2), u8(2, 128, 32), u8(2, 128, 8), f32(2)), {},
     r"w2 is \(2, 128, 32\) torch\.uint8 but \(2, 128, 64\)"),
    ((u8(2, 256, 64), u8(2, 200, 8), f32(2), u8(2, 128, 64), u8(2, 128, 8), f32(2)), {},
     r"w13_scale is \(2, 200, 8\)"),
    ((u8(2, 256, 64), u8(2, 256, 8), f32(3), u8(2, 128, 64), u8(2, 128, 8), f32(2)), {}, r"w13_global_scale"),
    ((u8(2, 256, 64), u8(2, 256, 8), f32(2), u8(2, 128, 64), u8(2, 128, 8), f32(2)),
     {"input_global_scale": f32(3)}, r"input_global_scale is \(3,\).*\(E,\) = \(2,\)"),
])
def test_constructor_checks_shapes(args, kwargs, match):
    if match is None:
        layer = NVFP4Experts(*args, **kwargs)
        assert (layer.num_experts, layer.hidden_size, layer.intermediate_size) == (2, 128, 128)
        return
    with pytest.raises(ValueError, match=match):
        NVFP4Experts(*args, **kwargs)


def test_from_bf16_checks_that_the_weights_agree():
    with pytest.raises(ValueError, match=r"w13\.shape=\(2, 256, 128\) \(E, 2I, H\) and w2\.shape=\(2, 128, 64\)"):
        NVFP4Experts.from_bf16(torch.zeros(2, 256, 128), torch.zeros(2, 128, 64))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("static", [False, True])
def test_forward_traces_as_one_graph(static, fused):
    """torch.compile(fullgraph=True) over the layer (meta tensors: tracing only): every nvfp4_driver
    call becomes its torch.library op, and nothing breaks the graph; SiLU * up is the fused ops or
    torch's, as the layer's fuse_silu_mul says."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def meta(shape, dtype=torch.uint8):
        return torch.empty(shape, dtype=dtype, device="meta")

    e, h, i = 8, 256, 128
    scales = dict(input_global_scale=meta((e,), torch.float32), act_global_scale=meta((1,), torch.float32)) \
        if static else {}
    layer = NVFP4Experts(meta((e, 2 * i, h // 2)), meta((e, 2 * i, h // 16)), meta((e,), torch.float32),
                         meta((e, h, i // 2)), meta((e, h, i // 16)), meta((e,), torch.float32), **scales)
    layer.fuse_silu_mul = fused
    torch._dynamo.reset()
    out = torch.compile(layer, backend=backend, fullgraph=True)(meta((33, h), torch.bfloat16),
                                                               meta((33, 4), torch.int64), meta((33, 4), torch.float32))
    assert (tuple(out.shape), out.dtype) == ((33, h), torch.bfloat16)
    (gm,) = graphs
    targets = [str(n.target).removesuffix(".default") for n in gm.graph.nodes if n.op == "call_function"]
    ours = sorted(t for t in targets if t.startswith("nvfp4_driver."))
    second = "nvfp4_driver.silu_mul_" if fused else "nvfp4_driver."  # the down GEMM's quantization
    dynamic = [] if static else ["nvfp4_driver.alpha_from_global_scales"] * 2 + \
        ["nvfp4_driver.global_scale_from_amax", second + "global_scale_from_amax"]
    assert ours == sorted(dynamic + ["nvfp4_driver.group_gemm_nvfp4_nt_groupwise"] * 2 +
                          ["nvfp4_driver.quantize_activations", second + "quantize_activations"]), ours
    torch._dynamo.reset()
