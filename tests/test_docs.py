"""The docs a user reads first say what the code does: every environment variable, the contract's
place and numbering, the license, and speed figures copied from the measurements, not invented."""
import csv
import re
from pathlib import Path

from nvfp4_driver import config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_lists_every_environment_variable():
    table = README[README.index("## Environment variables"):]
    table = table[:table.index("\n## ")]
    listed = set(re.findall(r"^\| `(NVFP4_DRIVER_[A-Z_]+)=1` \|", table, re.M))
    assert listed == set(config.FLAG_NAMES)
    source = (ROOT / "nvfp4_driver" / "config.py").read_text()
    assert set(re.findall(r'"(NVFP4_DRIVER_[A-Z_]+)"', source)) == listed  # config reads no other


def test_the_contract_lives_in_the_project():
    assert "shared folder" not in README and "SPEC.md" not in README
    assert "docs/format.md" in README
    assert "SPEC.md" not in (ROOT / "docs" / "design.md").read_text()
    fmt = (ROOT / "docs" / "format.md").read_text()
    titles = re.findall(r"^## (\d)\. (.+)$", fmt, re.M)
    assert [n for n, _ in titles] == ["1", "2", "3", "4", "5"]
    assert '"SPEC §1" … "SPEC §5"' in fmt
    assert "a_scale_group_bases" in fmt and "sf_base(g) = ((m_indptr[g] + 127 * g) // 128) * 128" in fmt


def test_blackwell_status_comes_first():
    first = README.index("not**\n  been run on Blackwell hardware")
    assert first < README.index("## Install and try it")
    assert "python -m nvfp4_driver selftest" in README[:first + 300]


def test_license_is_apache_2():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) == 202
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()


def test_readme_speed_table_is_copied_from_the_committed_bench_csv():
    """Every row of the README's speed table is one shape of docs/bench/h200.csv: ours µs, ours over the
    floor, and the bf16 and FP8 ratios, as that CSV rounds them."""
    section = README[README.index("### Speed on an H200"):README.index("## Install and try it")]
    assert "NVIDIA H200" in section and "docs/bench/h200.csv" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| shape")
            and "---" not in line]  # every data row: the header's first cell is "shape"
    assert len(rows) >= 6
    with open(ROOT / "docs" / "bench" / "h200.csv", newline="") as f:
        table = list(csv.DictReader(f))
    shapes = {}
    for r in table:
        shapes.setdefault(r["shape"], {})[r["impl"]] = r

    def cells(by):
        us = float(by["ours"]["us"])
        return (f"{us:,.0f}" if us >= 1000 else f"{us:.1f}", f"{us / float(by['ours']['floor_us']):.2f}",
                f"{float(by['bf16']['peer_over_ours']):.2f}", f"{float(by['fp8']['peer_over_ours']):.2f}")

    expected = {cells(by) for by in shapes.values()}
    for row in rows:
        got = tuple(c.strip() for c in row.strip("|").split("|")[3:7])
        assert got in expected, row
    assert "FlashInfer" not in section.replace("FlashInfer itself was not timed", "")
