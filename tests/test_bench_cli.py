"""``python -m nvfp4_driver bench`` without a GPU, and the pure parts of benchmarks/bench_moe.py:
the shape table, the uneven split, the byte and FLOP counts behind the floors."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nvfp4_driver import __main__ as cli

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import bench_moe as bm  # noqa: E402
from benchmarks.common import Ceilings, floors_us  # noqa: E402


def _cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU even where there is one
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "nvfp4_driver", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_bench_without_cuda_fails_clearly():
    r = _cli("bench", "--quick")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "bench needs" in r.stderr and "CUDA" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


_BLOCK_TORCH = """
import runpy, sys
class _NoTorch:  # as if torch were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, _NoTorch())
sys.argv = [sys.argv[1]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
CPU_SCRIPTS = ("host_cost_cpu.py",)  # stand-ins for the GPU: they run anywhere
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py")
                 if '__name__ == "__main__"' in p.read_text() and p.name not in CPU_SCRIPTS)


def test_every_benchmark_script_is_listed():
    assert {p.name for p in SCRIPTS} >= {"bench_moe.py", "bench_overhead.py", "bench_quantize.py", "sweep_tiles.py"}


@pytest.mark.parametrize("missing", ["gpu", "torch"])
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_scripts_without_cuda_say_so_in_one_line(script, missing):
    """Every script in benchmarks/, run where there is no GPU (or no torch at all): exit status 2 and
    one line saying what is missing, not a traceback."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, str(script)] if missing == "gpu" else [sys.executable, "-c", _BLOCK_TORCH, str(script)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    said = (r.stdout + r.stderr).strip()
    assert r.returncode == 2, said
    assert "Traceback" not in said and len(said.splitlines()) == 1, said
    assert ("torch" if missing == "torch" else "GPU") in said, said


def test_host_cost_profile_runs_without_a_gpu():
    """The CPU profile of the host path (benchmarks/host_cost_cpu.py): every path runs and prints its line."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "host_cost_cpu.py"), "--quick"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [line for line in r.stdout.splitlines() if " | " in line]
    assert lines[0].startswith("path") and len(lines) >= 8, r.stdout
    assert lines[1].startswith("bare launch") and float(lines[1].split("|")[2]) == 1.0


def test_bench_list_and_help_need_no_gpu():
    r = _cli("bench", "--list")
    assert r.returncode == 0, r.stderr
    for shape in bm.SHAPES:
        assert shape.name in r.stdout
    assert "K 2880 padded to 2944" in r.stdout
    r = _cli("bench", "--help")
    assert r.returncode == 0 and "--quick" in r.stdout and "--shapes" in r.stdout, r.stderr


def test_bench_outside_a_checkout(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "_checkout_root", lambda: tmp_path)
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "source checkout" in err and str(tmp_path / "benchmarks" / "bench_moe.py") in err


def test_other_commands_still_refuse_unknown_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["info", "--quick"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --quick" in capsys.readouterr().err


def test_shape_table_covers_the_issue():
    shapes = bm.select_shapes()
    assert 12 <= len(shapes) <= 16
    assert len({s.name for s in shapes}) == len(shapes)
    pairs = {(s.n, s.k_model or s.k) for s in shapes}
    assert {(4096, 7168), (7168, 2048), (3072, 4096), (4096, 1536), (5760, 2880)} <= pairs
    assert min(s.experts for s in shapes) == 8 and max(s.experts for s in shapes) == 256
    uniform = [s.rows for s in shapes if not s.skewed]
    assert min(uniform) == 1 and max(uniform) == 4096
    assert sum(s.skewed for s in shapes) >= 2
    for s in shapes:
        assert s.k % 128 == 0 and s.n % 8 == 0, s
        assert s.k == (s.k_model or s.k) + (-(s.k_model or s.k)) % 128, s  # padded to the next multiple
        rows = s.group_rows()
        assert len(rows) == s.experts and min(rows) >= 0 and sum(rows) == s.cum_m, s
        indptr = s.m_indptr()
        assert indptr[0] == 0 and indptr[-1] == s.cum_m and len(indptr) == s.experts + 1
    gptoss = [s for s in shapes if s.k_model]
    assert gptoss and all(s.k_model == 2880 and s.k == 2944 for s in gptoss)
    quick = bm.select_shapes(quick=True)
    assert len(quick) == 4 and all(s in shapes for s in quick)


def test_shape_filter():
    assert [s.name for s in bm.select_shapes(patterns="gptoss")] == [s.name for s in bm.SHAPES if "gptoss" in s.name]
    both = bm.select_shapes(patterns="dsv3-down, qwen3-up")
    assert both and all("dsv3-down" in s.name or "qwen3-up" in s.name for s in both)
    with pytest.raises(ValueError, match="matches none"):
        bm.select_shapes(patterns="llama")


def test_skewed_split_is_seeded_uneven_and_complete():
    a = bm.skewed_split(8192, 256, seed=7)
    assert a == bm.skewed_split(8192, 256, seed=7)
    assert a != bm.skewed_split(8192, 256, seed=8)
    assert len(a) == 256 and sum(a) == 8192 and min(a) >= 0
    assert max(a) >= 8 * (8192 / 256)  # Zipf: the top expert takes ~1/H(256) ~ 16% of the rows
    skewed = [s for s in bm.SHAPES if s.skewed]
    assert all(max(s.group_rows()) > 4 * s.cum_m / s.experts for s in skewed)


def test_bytes_flops_and_floor_by_hand():
    # 2 experts x 3 rows, N = 200 (b_scale padded to 256 rows), K = 128
    s = bm.MoeShape("t", "t", experts=2, rows=3, n=200, k=128)
    assert s.cum_m == 6 and s.m_indptr() == [0, 3, 6]
    assert s.flops == 2 * 6 * 200 * 128
    a = 6 * 64
    a_scale = 256 * 8      # ((6 + 127 * 2) // 128) * 128 = 256 scale rows of K/16 = 8 bytes
    b = 2 * 200 * 64
    b_scale = 2 * 256 * 8
    out = 6 * 200 * 2
    nbytes = bm.impl_bytes(s)
    assert nbytes["ours"] == a + a_scale + b + b_scale + 4 * 3 + 4 * 2 + out
    assert nbytes["bf16"] == 6 * 128 * 2 + 2 * 200 * 128 * 2 + 4 * 2 + out
    assert nbytes["fp8"] == 6 * 128 + 4 * 6 + 2 * 200 * 128 + 4 * 2 * 200 + 4 * 2 + out
    assert nbytes["deq+bf16"] == b + b_scale + 4 * 2 + 2 * (2 * 200 * 128 * 2) + 6 * 128 * 2 + 4 * 2 + out

    ceil = Ceilings(copy_gbps=2000.0, bf16_tflops=500.0)
    byte_us, flop_us = floors_us(nbytes["ours"], s.flops, ceil)
    assert byte_us == pytest.approx(nbytes["ours"] / 2000e9 * 1e6)  # 2000 GB/s
    assert flop_us == pytest.approx(s.flops / 500e12 * 1e6)
    assert bm.floor_us(s, ceil) == max(byte_us, flop_us) == byte_us
    big = bm.MoeShape("p", "p", experts=8, rows=4096, n=7168, k=2048)  # prefill: FLOP-bound
    assert bm.floor_us(big, ceil) == pytest.approx(big.flops / 500e12 * 1e6)


def test_report_rows_and_line():
    s = bm.SHAPES[0]
    ceil = Ceilings(copy_gbps=3000.0, bf16_tflops=800.0)
    results = {"ours": {"us": 50.0, "note": "", "err": 2e-3}, "bf16": {"us": 200.0, "note": "", "err": 0.0},
               "fp8": {"us": None, "note": "RuntimeError: no kernel", "err": None},
               "deq+bf16": {"us": 400.0, "note": "", "err": 0.0}}
    rows = bm.csv_rows(s, results, ceil)
    by = {r["impl"]: r for r in rows}
    assert by["ours"]["tflops"] == pytest.approx(s.flops / 50e-6 / 1e12)
    assert by["ours"]["gbps"] == pytest.approx(bm.impl_bytes(s)["ours"] / 50e-6 / 1e9)
    assert by["ours"]["pct_of_floor"] == pytest.approx(100 * bm.floor_us(s, ceil) / 50.0)
    assert by["bf16"]["peer_over_ours"] == pytest.approx(4.0)
    assert by["fp8"]["us"] is None and by["fp8"]["peer_over_ours"] is None
    line = bm.format_line(0, s, rows)
    assert "n/a" in line and "4.00" in line and "8.00" in line and "MISMATCH" not in line
    results["ours"]["err"] = float("nan")
    assert "MISMATCH" in bm.format_line(0, s, bm.csv_rows(s, results, ceil))


@pytest.mark.parametrize("name,regime", [("dsv3-up-e8-m16", "decode"), ("qwen3-down-e128-m64", "middle"),
                                         ("dsv3-up-e256-skew8192", "middle"), ("dsv3-up-e32-m1024", "prefill")])
def test_target_verdicts(name, regime):
    s = next(x for x in bm.SHAPES if x.name == name)
    assert bm.regime(s) == regime
    ceil = Ceilings(copy_gbps=3000.0, bf16_tflops=800.0)
    floor = bm.floor_us(s, ceil)

    def verdict(ours_us, bf16_us):
        results = {"ours": {"us": ours_us, "note": "", "err": 1e-3}, "bf16": {"us": bf16_us, "note": "", "err": 0.0},
                   "fp8": {"us": None, "note": "x", "err": None}, "deq+bf16": {"us": None, "note": "x", "err": None}}
        by = {r["impl"]: r for r in bm.csv_rows(s, results, ceil)}
        assert by["bf16"]["meets_target"] is None and by["ours"]["regime"] == regime
        return by["ours"]["meets_target"]

    if regime == "decode":      # 1.35x the floor, either side
        assert verdict(floor * 1.3, floor) and not verdict(floor * 1.4, floor * 10)
    elif regime == "middle":    # 50% of the floor and faster than bf16: both needed
        assert verdict(floor * 1.9, floor * 2) and not verdict(floor * 1.9, floor * 1.8)
        assert not verdict(floor * 2.1, floor * 10)
    else:                       # 600 TFLOP/s and 0.85x bf16: both needed
        fast = s.flops / 650e12 * 1e6
        assert verdict(fast, fast) and not verdict(fast, fast * 0.8)
        assert not verdict(s.flops / 550e12 * 1e6, 1e9)
