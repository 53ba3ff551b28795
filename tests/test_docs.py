"""The docs a user reads first say what the code does: every environment variable, the contract's
place and numbering, the license, and speed figures copied from the measurements, not invented."""
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


def test_readme_speed_table_is_copied_from_perf_notes():
    section = README[README.index("### Speed on an H100"):README.index("## Install and try it")]
    assert "NVIDIA H100 80GB HBM3" in section
    rows = [line for line in section.splitlines() if re.match(r"^\| [A-Z]", line) and "---" not in line][1:]
    assert len(rows) >= 6
    notes = (ROOT / "docs" / "perf-notes.md").read_text()
    for row in rows:
        ours, x_bf16, x_fp8 = [c.strip() for c in row.strip("|").split("|")][3:6]
        # the same three numbers on one line of a perf-notes table: ours µs, then the bf16 and FP8 ratios
        pattern = (rf"\| {re.escape(ours)} \|.*\| {re.escape(x_bf16)} \| [\d,.]+ \| {re.escape(x_fp8)} \|")
        assert re.search(pattern, notes), row
    assert "FlashInfer" not in section.replace("FlashInfer itself was not timed", "")
