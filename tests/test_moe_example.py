"""The README's MoE example on the CPU: its code, run with a backend built on nvfp4_driver.reference
(the bytes the GPU kernels write), within the error bound that the GPU test asserts (see
tests/moe_example.py for how that bound is chosen)."""
import moe_example as ex


def test_readme_moe_example_with_the_reference_backend():
    ns = ex.load_example(ex.reference_backend())
    x, w13, w2, ids, wts = ex.make_layer(tokens=96, hidden=256, inter=128, experts=4, topk=2, seed=7, device="cpu")
    out = ns["moe_nvfp4"](x, ids, wts, *ns["quantize_experts"](w13, w2))
    ref = ns["moe_bf16"](x, ids, wts, w13, w2)
    exact64, nvfp4_64 = ex.layers_f64(x, w13, w2, ids, wts)
    report = ex.check_errors(out, ref, exact64, nvfp4_64)
    print(report)
