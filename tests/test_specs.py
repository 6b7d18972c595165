"""bench.core.specs: the shipped figures and their sources, matching (MIG slices too), user files, normalization,
link theory, the CLI."""
import argparse
import json
import math
import types
from pathlib import Path

import pynvml
import pytest

from bench.commands import specs as specs_command
from bench.core import identity, normalize, nvml, specs
from bench.core.specs import SpecError

DB = specs.load()

FIXTURES = Path(__file__).parent / "fixtures"
USER_FILE = FIXTURES / "specs_user.toml"


@pytest.fixture(scope="module")
def db():
    return specs.load()


# ---------------------------------------------------------------- the shipped data

SHIPPED_ENTRIES = 44


def test_every_shipped_figure_has_a_known_unit_and_a_source(db):
    assert len(db.entries) == SHIPPED_ENTRIES
    for e in db.entries:
        assert e.origin == "shipped"
        assert e.nvml_names and e.pci_device_ids, e.name
        if "memory_bandwidth" not in e.figures or "bf16_dense" not in e.figures:
            assert "Left out:" in e.note, e.name  # a card without the headline claims says why
        for key, f in e.figures.items():
            assert f.key == key and key in specs.FIGURES
            assert f.unit in specs.FIGURES[key][0], (e.name, key, f.unit)
            assert f.value > 0 and math.isfinite(f.value)
            assert f.source_refs and f.source == "; ".join(text for _, text in f.source_refs), (e.name, key)
            assert f.confidence in specs.CONFIDENCES, (e.name, key)
        for key, t in e.text_fields.items():
            assert t.value and t.source_refs and e.text[key] == t.value, (e.name, key)


def test_derived_figures_give_their_formula_and_disputed_ones_the_other_value(db):
    derived = [(e.name, k, f) for e in db.entries for k, f in e.figures.items() if f.confidence == "derived"]
    assert len(derived) > 10
    for name, key, f in derived:
        assert any(op in f.note for op in (" / ", " x ", " = ", "= ")), (name, key, f.note)  # the arithmetic
    for e in db.entries:
        for key, f in e.figures.items():
            if f.confidence == "disputed":
                assert f.note and any(ch.isdigit() for ch in f.note), (e.name, key)


def test_dense_is_never_above_sparse(db):
    pairs = 0
    for e in db.entries:
        for t in specs.TENSOR_TYPES:
            dense, sparse = e.figures.get(f"{t}_dense"), e.figures.get(f"{t}_sparse")
            if dense and sparse:
                pairs += 1
                assert dense.unit == sparse.unit and dense.value <= sparse.value, (e.name, t)
    assert pairs > 100


def test_sparse_figures_are_marked_and_never_alone_for_a_dtype_without_dense(db):
    for e in db.entries:
        for key, f in e.figures.items():
            assert f.sparsity == ("dense" if key.endswith("_dense") else "sparse" if key.endswith("_sparse") else "")
            if key.endswith("_sparse"):
                assert key.replace("_sparse", "_dense") in e.figures, (e.name, key)


# (entry, figure, value, unit) as the cited vendor documents print them (dense unless _sparse)
SHIPPED = [
    ("H100 SXM5 80GB", "bf16_dense", 989.5, "TFLOP/s"),
    ("H100 SXM5 80GB", "bf16_sparse", 1979, "TFLOP/s"),
    ("H100 SXM5 80GB", "fp8_dense", 1979, "TFLOP/s"),
    ("H100 SXM5 80GB", "memory_bandwidth", 3350, "GB/s"),
    ("H100 SXM5 80GB", "nvlink_bidir", 900, "GB/s"),
    ("H100 SXM5 80GB", "nvlink_per_direction", 450, "GB/s"),
    ("H100 PCIe 80GB", "memory_bandwidth", 2000, "GB/s"),
    ("H100 PCIe 80GB", "fp8_dense", 1513, "TFLOP/s"),       # the article called this "with sparsity"
    ("H100 PCIe 80GB", "fp8_sparse", 3026, "TFLOP/s"),
    ("H100 PCIe 80GB", "sm_count", 114, "count"),
    ("H100 NVL 94GB", "bf16_dense", 835.5, "TFLOP/s"),       # single GPU, not the pair
    ("H100 NVL 94GB", "memory_bandwidth", 3900, "GB/s"),
    ("H200 SXM 141GB", "memory_bandwidth", 4800, "GB/s"),
    ("GH200 144GB HBM3e", "memory_bandwidth", 4900, "GB/s"),
    ("GH200 96GB HBM3", "memory_bandwidth", 4000, "GB/s"),
    ("B200", "memory_bandwidth", 7700, "GB/s"),              # the current HGX per-GPU column; 8 TB/s in the note
    ("B200", "memory_size_gb", 180, "GB"),
    ("B200", "fp4_dense", 9000, "TFLOP/s"),
    ("B200", "fp4_sparse", 18000, "TFLOP/s"),
    ("B300", "fp4_dense", 14000, "TFLOP/s"),
    ("RTX PRO 6000 Blackwell Workstation Edition", "memory_bandwidth", 1792, "GB/s"),
    ("RTX PRO 6000 Blackwell Workstation Edition", "memory_bus_width_bits", 512, "bit"),
    ("RTX PRO 6000 Blackwell Workstation Edition", "fp4_sparse", 4030.4, "TFLOP/s"),
    ("RTX PRO 6000 Blackwell Workstation Edition", "fp16_dense", 503.8, "TFLOP/s"),
    ("RTX PRO 6000 Blackwell Workstation Edition", "tdp_w", 600, "W"),
    ("RTX PRO 6000 Blackwell Max-Q Workstation Edition", "tdp_w", 300, "W"),
    ("RTX PRO 6000 Blackwell Server Edition", "memory_bandwidth", 1597, "GB/s"),
    ("A100 SXM4 40GB", "memory_bandwidth", 1555, "GB/s"),
    ("A100 SXM4 80GB", "memory_bandwidth", 2039, "GB/s"),
    ("A100 PCIe 80GB", "memory_bandwidth", 1935, "GB/s"),
    ("A100 SXM4 80GB", "int8_dense", 624, "TOPS"),
    ("L40S", "bf16_dense", 362.05, "TFLOP/s"),
    ("L40", "bf16_dense", 181.05, "TFLOP/s"),                # half the L40S
    ("L4", "memory_bandwidth", 300, "GB/s"),
    ("A10", "bf16_dense", 125, "TFLOP/s"),
    ("RTX 6000 Ada Generation", "fp8_sparse", 1457, "TFLOP/s"),
    ("GeForce RTX 4090", "bf16_dense", 165.2, "TFLOP/s"),    # FP32 accumulate, not Lightning's 82.6
    ("GeForce RTX 4090", "fp16_acc16_dense", 330.3, "TFLOP/s"),
    ("GeForce RTX 4090", "fp8_dense", 330.3, "TFLOP/s"),
    ("GeForce RTX 4090", "fp8_acc16_dense", 660.6, "TFLOP/s"),
    ("GeForce RTX 5090", "fp16_dense", 209.5, "TFLOP/s"),
    ("GeForce RTX 5090", "fp16_acc16_dense", 419, "TFLOP/s"),
    ("GeForce RTX 5090", "fp16_acc16_sparse", 838, "TFLOP/s"),
    ("GeForce RTX 5090", "fp4_dense", 1676, "TFLOP/s"),
    ("GeForce RTX 5090", "tf32_dense", 104.8, "TFLOP/s"),
    ("GeForce RTX 5090", "int8_dense", 838, "TOPS"),
    ("GeForce RTX 4090", "tf32_dense", 82.6, "TFLOP/s"),
    ("L40", "fp8_dense", 362, "TFLOP/s"),
    ("T4", "fp16_dense", 65, "TFLOP/s"),                    # Turing: no sparsity, the figure is dense
    ("T4", "memory_bandwidth", 320, "GB/s"),
    ("A100 PCIe 40GB", "memory_bandwidth", 1555, "GB/s"),
    ("A100 PCIe 40GB", "tdp_w", 250, "W"),
    ("A40", "bf16_dense", 149.7, "TFLOP/s"),
    ("A40", "memory_bandwidth", 696, "GB/s"),
    ("A30", "bf16_dense", 165, "TFLOP/s"),
    ("A30", "memory_bandwidth", 933, "GB/s"),
    ("V100 SXM2 16GB", "fp16_dense", 125, "TFLOP/s"),
    ("V100 PCIe 32GB", "fp16_dense", 112, "TFLOP/s"),
    ("GeForce RTX 3090", "bf16_dense", 71, "TFLOP/s"),      # FP32 accumulate: half the FP16-accumulate 142
    ("GeForce RTX 3090", "fp16_acc16_dense", 142, "TFLOP/s"),
    ("GeForce RTX 4080", "bf16_dense", 97.5, "TFLOP/s"),
    ("GeForce RTX 5080", "bf16_dense", 112.6, "TFLOP/s"),
    ("GeForce RTX 5080", "fp4_sparse", 1801, "TFLOP/s"),
    ("RTX A6000", "fp16_sparse", 309.7, "TFLOP/s"),
    ("GB200", "bf16_dense", 2500, "TFLOP/s"),               # per GPU, not the superchip or the rack
    ("GB200", "memory_bandwidth", 8000, "GB/s"),
    ("GB300", "fp4_dense", 15000, "TFLOP/s"),
    ("GB300", "memory_size_gb", 279, "GB"),
    ("RTX PRO 5000 Blackwell", "memory_bandwidth", 1344, "GB/s"),
    ("RTX PRO 4500 Blackwell", "memory_bandwidth", 896, "GB/s"),
    ("GB10 (DGX Spark)", "memory_bandwidth", 273, "GB/s"),
    ("GB10 (DGX Spark)", "fp4_sparse", 1000, "TFLOP/s"),
]


@pytest.mark.parametrize("name, key, value, unit", SHIPPED)
def test_shipped_figures(db, name, key, value, unit):
    f = db.find(name).figures[key]
    assert (f.value, f.unit) == (value, unit)


def test_text_fields_and_settled_figures(db):
    h100_pcie = db.find("H100 PCIe 80GB")
    assert h100_pcie.text["memory_type"] == "HBM2e"           # often misquoted as HBM3
    assert db.find("H100 SXM5 80GB").text["memory_type"] == "HBM3"
    b200_bw = db.find("B200").figures["memory_bandwidth"]
    assert b200_bw.confidence == "official" and "8 TB/s" in b200_bw.note   # the launch figure stays in the note
    assert db.find("B300").text["compute_capability"] == "10.3"
    assert db.find("RTX PRO 6000 Blackwell Workstation Edition").text["chip"] == "GB202"
    b300 = db.find("B300").figures
    assert b300["int8_dense"].confidence == b300["fp4_dense"].confidence == "disputed"
    server = db.find("RTX PRO 6000 Blackwell Server Edition").figures
    for key in ("bf16_dense", "fp16_dense", "fp8_dense", "fp4_dense", "int8_dense"):
        assert server[key].confidence == "derived" and "2,494 MHz" in server[key].note, key
    for name, key in (("GeForce RTX 4090", "tf32_dense"), ("GeForce RTX 5090", "tf32_dense"),
                      ("GeForce RTX 5090", "int8_dense"), ("L40", "fp8_dense")):
        assert db.find(name).figures[key].confidence == "official", (name, key)
    for name in ("GB200", "GB300"):
        assert "per-GPU column" in db.find(name).note and "rack" in db.find(name).note  # system vs GPU, said
    assert "unified" in db.find("GB10").note and db.find("GB10").figures["fp4_dense"].confidence == "derived"


def test_figures_no_document_prints_are_absent(db):
    assert "memory_bus_width_bits" not in db.find("H100 NVL 94GB").figures
    assert "sm_count" not in db.find("L4").figures
    for key in ("sm_count", "boost_clock_mhz", "fp32", "pcie_gen"):
        assert key not in db.find("B300").figures
    assert "fp6_dense" not in db.find("RTX PRO 6000 Blackwell Workstation Edition").figures
    for name in ("H100 SXM5 80GB", "A100 SXM4 80GB", "L40S"):
        assert "fp4_dense" not in db.find(name).figures
    assert "tdp_w" not in db.find("GH200 96GB HBM3").figures  # the 450-1000 W is CPU+GPU+memory
    assert "l2_cache_mb" not in db.find("H200 SXM 141GB").figures  # NVIDIA prints none; devices report 60 MiB
    for name in ("T4", "V100 SXM2 16GB"):                             # no BF16 tensor path
        assert "bf16_dense" not in db.find(name).figures
    for name in ("H20", "H800", "H800 PCIe", "L20", "H100 SXM5 94GB"):
        assert not db.find(name).figures and "Left out: every figure" in db.find(name).note
    assert "int8_dense" not in db.find("GB300").figures


# ---------------------------------------------------------------- matching

# Every NVML name of the shipped entries with its PCI device id and the entry it must reach.
NVML = [
    ("NVIDIA H100 80GB HBM3", "0x2330", "H100 SXM5 80GB"),
    ("NVIDIA H100 PCIe", "0x2331", "H100 PCIe 80GB"),
    ("NVIDIA H100 NVL", "0x2321", "H100 NVL 94GB"),
    ("NVIDIA H200", "0x2335", "H200 SXM 141GB"),
    ("NVIDIA H200 NVL", "0x233B", "H200 NVL 141GB"),
    ("NVIDIA GH200 480GB", "0x2342", "GH200 96GB HBM3"),
    ("NVIDIA GH200 120GB", "0x2342", "GH200 96GB HBM3"),
    ("NVIDIA GH200 144G HBM3e", "0x2348", "GH200 144GB HBM3e"),
    ("NVIDIA B200", "0x2901", "B200"),
    ("NVIDIA B200", "0x2909", "B200"),
    ("NVIDIA B300 SXM6 AC", "0x3182", "B300"),
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "0x2BB1", "RTX PRO 6000 Blackwell Workstation Edition"),
    ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", "0x2BB4",
     "RTX PRO 6000 Blackwell Max-Q Workstation Edition"),
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "0x2BB5", "RTX PRO 6000 Blackwell Server Edition"),
    ("NVIDIA A100-SXM4-40GB", "0x20B0", "A100 SXM4 40GB"),
    ("NVIDIA A100-SXM4-80GB", "0x20B2", "A100 SXM4 80GB"),
    ("NVIDIA A100 80GB PCIe", "0x20B5", "A100 PCIe 80GB"),
    ("NVIDIA L40S", "0x26B9", "L40S"),
    ("NVIDIA L40", "0x26B5", "L40"),
    ("NVIDIA L4", "0x27B8", "L4"),
    ("NVIDIA A10", "0x2236", "A10"),
    ("NVIDIA RTX 6000 Ada Generation", "0x26B1", "RTX 6000 Ada Generation"),
    ("NVIDIA GeForce RTX 4090", "0x2684", "GeForce RTX 4090"),
    ("NVIDIA GeForce RTX 5090", "0x2B85", "GeForce RTX 5090"),
    ("Tesla T4", "0x1EB8", "T4"),
    ("NVIDIA A10G", "0x2237", "A10G"),
    ("NVIDIA A100-PCIE-40GB", "0x20F1", "A100 PCIe 40GB"),
    ("NVIDIA A40", "0x2235", "A40"),
    ("NVIDIA A30", "0x20B7", "A30"),
    ("Tesla V100-SXM2-16GB", "0x1DB1", "V100 SXM2 16GB"),
    ("Tesla V100-SXM2-32GB", "0x1DB5", "V100 SXM2 32GB"),
    ("Tesla V100-PCIE-32GB", "0x1DB6", "V100 PCIe 32GB"),
    ("NVIDIA GeForce RTX 3090", "0x2204", "GeForce RTX 3090"),
    ("NVIDIA GeForce RTX 4080", "0x2704", "GeForce RTX 4080"),
    ("NVIDIA RTX A6000", "0x2230", "RTX A6000"),
    ("NVIDIA L20", "0x26BA", "L20"),
    ("NVIDIA H20", "0x2329", "H20"),
    ("NVIDIA H800", "0x2324", "H800"),
    ("NVIDIA H800 PCIe", "0x2322", "H800 PCIe"),
    ("NVIDIA H100", "0x2339", "H100 SXM5 94GB"),
    ("NVIDIA GB200", "0x2941", "GB200"),
    ("NVIDIA GB300", "0x31C2", "GB300"),
    ("NVIDIA GeForce RTX 5080", "0x2C02", "GeForce RTX 5080"),
    ("NVIDIA RTX PRO 5000 Blackwell", "0x2BB3", "RTX PRO 5000 Blackwell"),
    ("NVIDIA RTX PRO 4500 Blackwell", "0x2C31", "RTX PRO 4500 Blackwell"),
    ("NVIDIA GB10", "0x2E12", "GB10 (DGX Spark)"),
]


def nvml_id(device: str) -> str:
    """The id as bench.core.telemetry writes it from NVML: device << 16 | vendor 0x10DE."""
    return f"0x{int(device, 16):04X}10DE"


@pytest.mark.parametrize("nvml_name, device, expected", NVML)
def test_every_nvml_name_and_pci_id_reaches_its_entry(db, nvml_name, device, expected):
    assert db.match(nvml_name).name == expected
    assert db.match(nvml_name, nvml_id(device)).name == expected
    assert db.match("", nvml_id(device)).name == expected        # the id alone
    assert db.match("NVIDIA Renamed", device).name == expected   # unknown name: the id decides
    assert db.find(nvml_name.lower()).name == expected


def test_the_three_h100_names_reach_three_entries(db):
    hits = {db.match(n).name for n in ("NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3", "NVIDIA H100 NVL")}
    assert hits == {"H100 PCIe 80GB", "H100 SXM5 80GB", "H100 NVL 94GB"}


def test_no_substring_or_fuzzy_match(db):
    for name in ("H100", "NVIDIA H100 80GB", "NVIDIA H100 PCIe 80GB", "NVIDIA GH200", "NVIDIA RTX PRO 6000"):
        assert db.match(name) is None, name
        assert db.find(name) is None, name
    assert db.match("NVIDIA L4").name == "L4" and db.match("NVIDIA L40").name == "L40"
    assert db.find("l4").name == "L4"
    assert db.match("NVIDIA H100").name == "H100 SXM5 94GB"       # 0x2339's own name, no prefix match
    assert db.match("nvidia h100 pcie") is None                    # NVML names are case-sensitive
    assert db.match("  NVIDIA H100 PCIe\n").name == "H100 PCIe 80GB"


def test_the_name_wins_over_a_conflicting_pci_id(db):
    assert db.match("NVIDIA H100 PCIe", nvml_id("0x2330")).name == "H100 PCIe 80GB"


def test_pci_ids_that_do_not_identify_a_card(db):
    assert db.match("", "0x233010B5") is None     # another vendor's device 0x2330
    assert db.match("", "0x1234") is None         # nobody's
    assert db.match("", "not hex") is None
    assert db.match("") is None


def test_old_driver_names_fall_back_to_the_pci_id(db):
    # drivers before the "NVIDIA " prefix reported "A100-SXM4-40GB"
    assert db.match("A100-SXM4-40GB", "0x20B010DE").name == "A100 SXM4 40GB"


def test_find_accepts_names_and_aliases_case_insensitively(db):
    for query in ("H100 SXM5 80GB", "h100 sxm", "H100-SXM5-80GB", "rtx 5090", "GeForce RTX 5090"):
        assert db.find(query) is not None, query
    assert db.find("h100 sxm").name == "H100 SXM5 80GB"
    assert "GH200 96GB HBM3" in db.close_names("GH200")


# ---------------------------------------------------------------- user files

def test_a_user_figure_wins_and_the_other_shipped_figures_stay():
    db = specs.load(USER_FILE)
    h100 = db.find("H100 SXM5 80GB")
    bw = h100.figures["memory_bandwidth"]
    assert (bw.value, bw.unit, bw.origin) == (3.2, "TB/s", str(USER_FILE))
    assert bw.source.startswith("Acceptance contract") and bw.note == "contracted figure"
    assert h100.figures["tdp_w"].source.startswith("NVIDIA H100 spec table")   # S1 from the shipped [sources]
    assert h100.figures["bf16_dense"].value == 989.5 and h100.figures["bf16_dense"].origin == "shipped"
    assert h100.name == "H100 SXM5 80GB" and h100.origin == str(USER_FILE)
    assert db.find("our-h100") is h100 and db.match("NVIDIA H100 80GB HBM3") is h100
    assert len(db.entries) == SHIPPED_ENTRIES + 1
    assert specs.load().find("H100 SXM5 80GB").figures["memory_bandwidth"].value == 3350  # shipped untouched


def test_a_user_entry_with_a_new_name_is_added_and_matched():
    db = specs.load(USER_FILE)
    card = db.match("NVIDIA Lab Card X")
    assert card.name == "Lab Card X" and card.origin == str(USER_FILE)
    assert card.pci_device_ids == ["0x2FF0"] and db.match("", "0x2FF010DE") is card
    assert card.figures["bf16_dense"].value == 300 and card.text["chip"] == "LX1"


def test_normalize_uses_the_user_figure_in_the_row_unit():
    db = specs.load(USER_FILE)
    out = normalize.spec_claim_columns(row("memory", "copy", "fp32", "GB/s", 2880.0), db.find("H100 SXM"))
    assert out["spec_value"] == pytest.approx(3200.0) and out["pct_of_spec"] == pytest.approx(90.0)
    assert out["spec_source"].startswith("Acceptance contract")


H100_OK = '''
[[gpu]]
name = "Lab Card Y"
memory_bandwidth = { value = 1000, unit = "GB/s", source = "S1" }
'''

# (file text, where, field, words in the message)
BROKEN = [
    ('[[gpu]]\nname = "X"\nbf16 = { value = 1, unit = "TFLOP/s", source = "S1" }\n',
     "entry 'X'", "bf16", "unknown field"),
    ('[[gpu]]\nname = "X"\nbf16_dense = { value = 1, unit = "TFLOP/s", source = "S1", sparse = false }\n',
     "entry 'X'", "bf16_dense", "unknown key 'sparse'"),
    ('[[gpu]]\nname = "X"\nmemory_bandwidth = { value = 1000, source = "S1" }\n',
     "entry 'X'", "memory_bandwidth", "missing unit"),
    ('[[gpu]]\nname = "X"\nbf16_dense = { value = 1, unit = "TFLOPS", source = "S1" }\n',
     "entry 'X'", "bf16_dense", "unknown unit 'TFLOPS'"),
    ('[[gpu]]\nname = "X"\nmemory_bandwidth = { value = 1, unit = "TFLOP/s", source = "S1" }\n',
     "entry 'X'", "memory_bandwidth", "does not fit"),
    ('[[gpu]]\nname = "X"\nfp8_dense = { value = -5, unit = "TFLOP/s", source = "S1" }\n',
     "entry 'X'", "fp8_dense", "positive"),
    ('[[gpu]]\nname = "X"\nfp8_dense = { value = "989.5", unit = "TFLOP/s", source = "S1" }\n',
     "entry 'X'", "fp8_dense", "not a number"),
    ('[[gpu]]\nname = "X"\nfp8_dense = { unit = "TFLOP/s", source = "S1" }\n',
     "entry 'X'", "fp8_dense", "missing value"),
    ('[[gpu]]\nname = "X"\nsm_count = { value = 132.5, unit = "count", source = "S1" }\n',
     "entry 'X'", "sm_count", "whole number"),
    ('[[gpu]]\nname = "X"\nbf16_dense = { value = 100, unit = "TFLOP/s", source = "S1" }\n'
     'bf16_sparse = { value = 50, unit = "TFLOP/s", source = "S1" }\n',
     "entry 'X'", "bf16_sparse", "below"),
    ('[[gpu]]\nname = "H100 SXM5 80GB"\nbf16_dense = { value = 2500, unit = "TFLOP/s", source = "S1" }\n',
     "entry 'H100 SXM5 80GB'", "bf16_dense", "below"),      # against the shipped sparse figure
    (H100_OK + H100_OK.replace("Lab Card Y", "lab card y"), "entry 'lab card y'", "name", "duplicate entry name"),
    ('[[gpu]]\nname = "X"\nnvml_names = ["NVIDIA H100 PCIe"]\n',
     "entry 'X'", "nvml_names", "already names entry 'H100 PCIe 80GB'"),
    ('[[gpu]]\nname = "X"\naliases = ["h100 sxm"]\n', "entry 'X'", "aliases", "already names entry 'H100 SXM5 80GB'"),
    ('[[gpu]]\nname = "H100 SXM"\naliases = ["L4"]\n', "entry 'H100 SXM'", "aliases", "already names entry 'L4'"),
    ('[[gpu]]\nname = "H100 SXM"\n[[gpu]]\nname = "H100 SXM5 80GB"\n',
     "entry 'H100 SXM5 80GB'", "name", "already defines or changes"),
    ('[[gpu]]\nname = "X"\nfp32 = { value = 10, unit = "TFLOP/s", source = "S99" }\n',
     "entry 'X'", "fp32", "source 'S99' is not a key of [sources]"),
    ('[[gpu]]\nname = "X"\nfp32 = { value = 10, unit = "TFLOP/s" }\n', "entry 'X'", "fp32", "missing source"),
    ('[[gpu]]\nname = "X"\nchip = "GH100"\n', "entry 'X'", "chip", "a text field is a table"),
    ('[[gpu]]\nname = "X"\nfp32 = { value = 10, unit = "TFLOP/s", source = "S1", confidence = "sure" }\n',
     "entry 'X'", "fp32", "confidence 'sure'"),
    ('[[gpu]]\nname = "X"\npci_device_ids = ["2330"]\n', "entry 'X'", "pci_device_ids", "not a PCI device id"),
    ('[[gpu]]\nname = "X"\nnvlink_bidir = { value = 900, unit = "GB/s", source = "S1" }\n'
     'nvlink_per_direction = { value = 900, unit = "GB/s", source = "S1" }\n',
     "entry 'X'", "nvlink_per_direction", "not half"),
    ('[[gpu]]\nmemory_bandwidth = { value = 1, unit = "GB/s", source = "S1" }\n', "entry #1", "name", "missing name"),
    ('[gpus]\nname = "X"\n', "", "gpus", "unknown top-level key"),
    ('[[gpu]]\nname = "X"\nfp32 = { value = 10, unit = "TFLOP/s", source = "S1" \n', "", "", "line 3"),
]


@pytest.mark.parametrize("text, where, field, words", BROKEN)
def test_a_broken_user_file_names_file_entry_and_field(tmp_path, text, where, field, words):
    path = tmp_path / "myspecs.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        specs.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert where in message and words in message
    if field:
        assert f"field '{field}'" in message
    assert (err.value.file, err.value.where, err.value.field) == (str(path), where, field)


def test_a_missing_user_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        specs.load(tmp_path / "absent.toml")


def test_unknown_card_message_gives_a_file_that_loads(tmp_path):
    message = specs.unknown_card_message("NVIDIA Mystery GPU", "0x2F0010DE")
    assert "--specs FILE" in message and "spec columns" in message and "0x2F00" in message
    snippet = message[message.index("[sources]"):]
    assert 'name = "NVIDIA Mystery GPU"' in snippet and 'pci_device_ids = ["0x2F00"]' in snippet
    path = tmp_path / "mine.toml"
    path.write_text(snippet.replace("# memory_bandwidth = { value = 0,", "memory_bandwidth = { value = 900,"))
    db = specs.load(path)
    entry = db.match("NVIDIA Mystery GPU")
    assert entry is db.match("", "0x2F0010DE") and entry.figures["memory_bandwidth"].value == 900
    assert "pci_device_ids" not in specs.unknown_card_message("NVIDIA Mystery GPU")


# ---------------------------------------------------------------- normalization

def row(family, benchmark, dtype, unit, value, status="ok", **extra):
    return {"family": family, "benchmark": benchmark, "dtype": dtype, "unit": unit,
            "value": "" if value is None else repr(value), "status": status, **extra}


def test_claim_key_picks_the_dense_figure_of_the_dtype():
    assert normalize.claim_key("memory", "triad", "fp32") == "memory_bandwidth"
    assert normalize.claim_key("matmul", "torch", "bf16") == "bf16_dense"
    assert normalize.claim_key("matmul", "triton", "e4m3") == "fp8_dense"
    assert normalize.claim_key("matmul", "torch", "nvfp4") == "fp4_dense"
    assert normalize.claim_key("matmul", "torch", "mxfp4") == "fp4_dense"
    assert normalize.claim_key("matmul", "torch", "fp16_acc16") == "fp16_acc16_dense"
    assert normalize.claim_key("matmul", "torch", "fp32") == "fp32"
    assert normalize.claim_key("matmul", "torch", "int8") == "int8_dense"
    assert normalize.claim_key("transfer", "h2d_pinned", "") is None
    assert normalize.claim_key("collective", "all_reduce", "bf16") is None
    for dtype in normalize._DTYPE_FIGURE:
        assert not normalize.claim_key("matmul", "torch", dtype).endswith("_sparse")


def test_normalize_bf16_matmul_on_h100_sxm_uses_the_dense_989_5(db):
    out = normalize.spec_claim_columns(row("matmul", "torch", "bf16", "TFLOP/s", 791.6), db.match("NVIDIA H100 80GB HBM3"))
    assert set(out) == set(specs.NORMALIZE_KEYS)
    assert (out["spec_entry"], out["spec_figure"], out["spec_value"], out["spec_unit"]) == (
        "H100 SXM5 80GB", "bf16_dense", 989.5, "TFLOP/s")
    assert out["pct_of_spec"] == pytest.approx(80.0)
    assert out["spec_source"].startswith("NVIDIA H100 spec table")
    assert out["derived_peak"] == "" and out["pct_of_derived"] == ""


@pytest.mark.parametrize("dtype", ["tf32", "bf16", "fp16", "fp8", "fp4", "int8", "fp16_acc16"])
def test_normalize_never_uses_a_sparse_figure(db, dtype):
    for e in db.entries:
        out = normalize.spec_claim_columns(row("matmul", "torch", dtype, "TOPS" if dtype == "int8" else "TFLOP/s", 1.0), e)
        dense = e.figures.get(f"{dtype}_dense")
        assert out["spec_value"] == (dense.value if dense else ""), (e.name, dtype)


def test_geforce_normalizes_bf16_against_fp32_accumulate_and_acc16_against_its_own(db):
    rtx = db.match("NVIDIA GeForce RTX 5090")
    assert normalize.spec_claim_columns(row("matmul", "torch", "bf16", "TFLOP/s", 200.0), rtx)["spec_value"] == 209.5
    assert normalize.spec_claim_columns(row("matmul", "torch", "fp16_acc16", "TFLOP/s", 400.0), rtx)["spec_value"] == 419
    h100 = db.find("H100 SXM5 80GB")  # no FP16-accumulate figure in the sources: no claim
    assert normalize.spec_claim_columns(row("matmul", "torch", "fp16_acc16", "TFLOP/s", 400.0), h100)["spec_value"] == ""


def test_normalize_converts_units_and_refuses_mismatches(db):
    h100 = db.find("H100 SXM5 80GB")
    out = normalize.spec_claim_columns(row("memory", "copy", "fp32", "TB/s", 3.015), h100)
    assert out["spec_value"] == pytest.approx(3.35) and out["pct_of_spec"] == pytest.approx(90.0)
    out = normalize.spec_claim_columns(row("matmul", "torch", "int8", "TFLOP/s", 1583.2), h100)   # int8: TOPS == TFLOP/s
    assert out["spec_value"] == pytest.approx(1979.0) and out["pct_of_spec"] == pytest.approx(80.0)
    out = normalize.spec_claim_columns(row("matmul", "torch", "bf16", "TOPS", 800.0), h100)     # bf16 in TOPS: refused
    assert out["spec_value"] == out["pct_of_spec"] == out["spec_figure"] == "" and out["spec_entry"] == h100.name
    out = normalize.spec_claim_columns(row("matmul", "torch", "bf16", "GFLOP/s", 400.0), h100)
    assert out["spec_value"] == pytest.approx(989500.0)


def test_normalize_without_a_claim_or_without_a_value(db):
    h100 = db.find("H100 SXM5 80GB")
    out = normalize.spec_claim_columns(row("memory", "copy", "fp32", "GB/s", None, status="wrong"), h100)
    assert out["spec_value"] == 3350 and out["pct_of_spec"] == ""
    assert normalize.spec_claim_columns(row("transfer", "h2d", "", "GB/s", 50.0), h100)["spec_value"] == ""
    assert normalize.spec_claim_columns(row("matmul", "torch", "fp4", "TFLOP/s", 1.0), h100)["spec_value"] == ""
    out = normalize.spec_claim_columns(row("memory", "copy", "fp32", "GB/s", 29.7), None)   # CPU mode / unknown card
    assert all(v == "" for v in out.values())


@pytest.fixture
def h100_identity(monkeypatch):
    """bench.core.telemetry's identity of the recorded H100 SXM5 NVML answers (tests/fixtures/nvml_h100.json)."""
    dev = json.loads((FIXTURES / "nvml_h100.json").read_text())["devices"][0]
    nv = types.ModuleType("fake_pynvml")  # only the calls the identity needs; the rest answer "unknown"
    nv.__dict__.update({k: getattr(pynvml, k) for k in dir(pynvml) if k.startswith("NVML_")})
    nv.nvmlInit = lambda: None
    nv.nvmlDeviceGetHandleByIndex = lambda i: dev
    nv.nvmlDeviceGetName = lambda h: h["name"]
    nv.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=h["pci_bus_id"],
                                                              pciDeviceId=int(h["pci_device_id"], 16))
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=h["memory_total_bytes"])
    nv.nvmlDeviceGetMemoryBusWidth = lambda h: h["memory_bus_width_bits"]
    nv.nvmlDeviceGetMaxClockInfo = lambda h, kind: h["max_clock_mhz"]["mem" if kind == pynvml.NVML_CLOCK_MEM else "sm"]
    monkeypatch.setattr(nvml, "_module", nv)
    monkeypatch.setattr(nvml, "_state", None)
    monkeypatch.setattr(nvml, "torch_props", lambda index: None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return identity.device_identity(0)


def test_derived_peak_from_a_recorded_nvml_reading(db, h100_identity):
    # max memory clock 2619 MHz x 5120 bit / 8 x 2 = 3352.32 GB/s
    assert (h100_identity["mem_clock_max_mhz"], h100_identity["mem_bus_width_bits"]) == ("2619", "5120")
    entry = db.match(h100_identity["device_name"], h100_identity["pci_device_id"])
    assert entry.name == "H100 SXM5 80GB"
    out = normalize.spec_claim_columns(row("memory", "copy", "fp32", "GB/s", 3016.8, **h100_identity), entry)
    assert out["derived_peak"] == pytest.approx(3352.32)
    assert out["pct_of_derived"] == pytest.approx(3016.8 / 3352.32 * 100)
    assert out["pct_of_spec"] == pytest.approx(3016.8 / 3350 * 100)
    unknown = normalize.spec_claim_columns(row("memory", "copy", "fp32", "GB/s", 3016.8, **h100_identity), None)
    assert unknown["derived_peak"] == pytest.approx(3352.32) and unknown["spec_value"] == ""
    assert specs.cross_check(entry, h100_identity) is None


def b200_identity(bus_width_bits: int) -> dict[str, str]:
    mem_mhz = 4000  # made up: a clock at which a 7680-bit bus gives 7.68 TB/s (B200's driver reports 7680 bits)
    return {"mem_clock_max_mhz": str(mem_mhz), "mem_bus_width_bits": str(bus_width_bits),
            "mem_peak_bytes_per_s": str(mem_mhz * 1_000_000 * bus_width_bits * 2 // 8),
            "memory_total_bytes": str(183 * 10**9)}


def test_cross_check_warns_when_spec_and_nvml_differ_by_over_5_percent(db):
    b200 = db.find("B200")
    warning = specs.cross_check(b200, b200_identity(8192))   # 8.19 TB/s against 7.7: +6.4%
    assert warning and "memory bandwidth" in warning and "B200" in warning and "above" in warning
    assert "8192.0 GB/s" in warning and "4000 MHz x 8192-bit" in warning
    assert specs.cross_check(b200, b200_identity(7680)) is None   # 7.68 against 7.7
    assert specs.cross_check(None, b200_identity(8192)) is None
    assert specs.cross_check(b200, {}) is None


def test_cross_check_warns_when_the_memory_size_says_another_card(db, h100_identity):
    forty = dict(h100_identity, memory_total_bytes=str(40 * 2**30))
    warning = specs.cross_check(db.find("H100 SXM5 80GB"), forty)
    assert warning and "memory size" in warning and "memory bandwidth" not in warning


# ---------------------------------------------------------------- link theory

def test_pcie_per_direction_after_encoding():
    assert normalize.pcie_bytes_per_s(5, 16) == pytest.approx(63.0e9, rel=1e-3)
    assert normalize.pcie_bytes_per_s(5, 16) == pytest.approx(64e9 * 128 / 130, rel=1e-12)  # raw 64 GB/s
    assert normalize.pcie_bytes_per_s(4, 16) == pytest.approx(31.5e9, rel=1e-3)
    assert normalize.pcie_bytes_per_s(3, 16) == pytest.approx(15.75e9, rel=1e-3)
    assert normalize.pcie_bytes_per_s(4, 8) == normalize.pcie_bytes_per_s(4, 16) / 2
    assert normalize.pcie_bytes_per_s(6, 16) == pytest.approx(121e9)     # FLIT mode: 242 of 256 bytes carry data
    assert normalize.pcie_bytes_per_s(1, 16) == pytest.approx(4e9)       # 8b/10b
    with pytest.raises(ValueError):
        normalize.pcie_bytes_per_s(7, 16)
    with pytest.raises(ValueError):
        normalize.pcie_bytes_per_s(5, 0)


def test_nvlink_per_direction(db):
    assert normalize.nvlink_per_direction_bytes_per_s(db.find("H100 SXM5 80GB")) == 450e9
    assert normalize.nvlink_per_direction_bytes_per_s(db.find("H100 PCIe 80GB")) == 300e9  # bridge: half of 600
    assert normalize.nvlink_per_direction_bytes_per_s(db.find("B200")) == 900e9
    assert normalize.nvlink_per_direction_bytes_per_s(db.find("L4")) is None
    assert normalize.nvlink_per_direction_bytes_per_s(None) is None
    assert normalize.nvlink_link_bytes_per_s(4, db) == 25e9 and normalize.nvlink_link_bytes_per_s(5, db) == 50e9
    assert normalize.nvlink_link_bytes_per_s(9, db) is None


# ---------------------------------------------------------------- `cardbench specs`

def specs_cli(*argv):
    parser = argparse.ArgumentParser(prog="cardbench")
    specs_command.add_arguments(parser.add_subparsers(dest="command").add_parser("specs"))
    return specs_command.main(parser.parse_args(["specs", *argv]))


def test_specs_lists_every_entry(capsys):
    assert specs_cli() == 0
    out = capsys.readouterr().out
    for e in specs.load().entries:
        assert e.name in out
    assert "989.5" in out and "NVIDIA H100 80GB HBM3" in out


def test_specs_name_shows_every_figure_with_its_source(capsys):
    assert specs_cli("h100 pcie") == 0
    out = capsys.readouterr().out
    assert out.startswith("H100 PCIe 80GB")
    assert "HBM2e" in out and "1513" in out and "3026" in out and "sparse" in out
    assert "S2: NVIDIA H100 PCIe GPU Product Brief" in out
    for key in specs.load().find("H100 PCIe 80GB").figures:
        assert key in out


def test_specs_json(capsys):
    assert specs_cli("--json") == 0
    listing = json.loads(capsys.readouterr().out)
    assert len(listing["entries"]) == SHIPPED_ENTRIES
    assert specs_cli("H100 SXM", "--json") == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["name"] == "H100 SXM5 80GB" and entry["nvml_names"] == ["NVIDIA H100 80GB HBM3"]
    bf16 = entry["figures"]["bf16_dense"]
    assert (bf16["value"], bf16["unit"], bf16["sparsity"], bf16["source_keys"]) == (989.5, "TFLOP/s", "dense", ["S1", "S6"])
    assert entry["figures"]["bf16_sparse"]["sparsity"] == "sparse"
    assert entry["text"]["memory_type"]["value"] == "HBM3"
    assert set(bf16) == {"value", "unit", "sparsity", "source", "source_keys", "note", "confidence", "origin"}


def test_specs_with_a_user_file(capsys):
    assert specs_cli("Lab Card X", "--specs", str(USER_FILE)) == 0
    assert f"from {USER_FILE}" in capsys.readouterr().out


def test_specs_unknown_name_suggests_and_exits_2(capsys):
    assert specs_cli("H100") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no entry named 'H100'" in captured.err and "H100 PCIe 80GB" in captured.err


def test_specs_broken_file_exits_2_with_the_message(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[[gpu]]\nname = "X"\nfp8_dense = { value = -1, unit = "TFLOP/s", source = "S1" }\n')
    assert specs_cli("--specs", str(path)) == 2
    err = capsys.readouterr().err
    assert f"{path}: entry 'X', field 'fp8_dense'" in err


def test_one_rule_normalizes_a_link_row_against_the_link_and_a_spec_row_against_the_claim():
    db = specs.load()
    h100 = db.match("NVIDIA H100 80GB HBM3")
    transfer_row = {"family": "transfer", "benchmark": "h2d", "dtype": "", "unit": "GB/s", "status": "ok",
                    "value": "55.0", "spec_entry": ""}
    cols = normalize.columns(transfer_row, h100, db)  # the entry's PCIe Gen5 x16, per direction
    assert cols["spec_entry"] == "H100 SXM5 80GB" and cols["spec_figure"] == "pcie_per_direction"
    assert cols["spec_value"] == pytest.approx(63.0154, abs=1e-3) and cols["pct_of_spec"] == pytest.approx(87.28, abs=0.01)
    assert cols["derived_peak"] == ""  # no link reading under load on the row
    memory_row = {"family": "memory", "benchmark": "copy", "dtype": "fp32", "unit": "GB/s", "status": "ok",
                  "value": "3015.0"}
    cols = normalize.columns(memory_row, h100, DB)
    assert cols["spec_value"] == 3350 and cols["pct_of_spec"] == pytest.approx(90.0)


# ---------------------------------------------------------------- MIG slices

MIG = "NVIDIA H200 MIG 1g.18gb"


def test_mig_slice_names_are_recognized():
    for name in (MIG, "NVIDIA A100-SXM4-40GB MIG 1c.2g.10gb", "NVIDIA H100 80GB HBM3 MIG 1g.10gb+me",
                 "NVIDIA RTX PRO 6000 Blackwell Server Edition MIG 2g.48gb"):
        assert specs.mig_slice(name), name
    for name in ("NVIDIA H200", "NVIDIA GB200", "Tesla T4", ""):
        assert not specs.mig_slice(name), name


def test_a_mig_slice_is_never_matched_to_its_whole_card(db):
    # NVML gives a slice its card's PCI id: the id must not score a 1/7 slice against the card's peak.
    assert db.match("NVIDIA H200", nvml_id("0x2335")).name == "H200 SXM 141GB"
    assert db.match(MIG, nvml_id("0x2335")) is None
    assert db.match(MIG) is None and db.match("NVIDIA A100-SXM4-40GB MIG 3g.20gb", "0x20B0") is None
    message = specs.unknown_card_message(MIG, nvml_id("0x2335"))
    assert specs.MIG_NO_ENTRY in message and "pci_device_ids" not in message   # a slice entry must not claim the id
    assert f'nvml_names = ["{MIG}"]' in message


def test_the_run_spec_line_and_the_rows_say_why_a_slice_has_no_claim(db):
    from bench.commands import run

    target = types.SimpleNamespace(device="cuda:0", is_cuda=True, spec=db.match(MIG, nvml_id("0x2335")),
                                   identity={"device_name": MIG, "pci_device_id": nvml_id("0x2335")})
    assert specs.MIG_NO_ENTRY in run.spec_line(target)
    measured = row("memory", "copy", "fp32", "GB/s", 600.0, device_name=MIG, message="noisy: p10..p90 12%")
    cols = normalize.columns(measured, None, DB)
    assert cols["spec_value"] == cols["pct_of_spec"] == cols["spec_entry"] == ""
    assert cols["message"] == f"noisy: p10..p90 12%; {specs.MIG_NO_ENTRY}"
    stored = {**measured, **cols}
    stored.update(normalize.columns(stored, None, DB))   # `report --specs` normalizes stored rows again
    assert stored["message"].count(specs.MIG_NO_ENTRY) == 1
    quiet = row("memory", "copy", "fp32", "GB/s", 600.0, device_name=MIG, message="")
    assert normalize.columns(quiet, None, DB)["message"] == specs.MIG_NO_ENTRY  # the only note: no "; " before it
    whole_card = row("memory", "copy", "fp32", "GB/s", 4000.0, device_name="NVIDIA H200", message="")
    assert "message" not in normalize.columns(whole_card, db.match("NVIDIA H200"), DB)


def test_a_spec_entry_naming_the_slice_is_used(tmp_path):
    message = specs.unknown_card_message(MIG, nvml_id("0x2335"))
    path = tmp_path / "slice.toml"
    path.write_text(message[message.index("[sources]"):].replace(
        "# memory_bandwidth = { value = 0,", "memory_bandwidth = { value = 600,"))
    db = specs.load(path)
    entry = db.match(MIG, nvml_id("0x2335"))
    assert entry.name == MIG and entry.figures["memory_bandwidth"].value == 600
    out = normalize.columns(row("memory", "copy", "fp32", "GB/s", 540.0, device_name=MIG), entry, DB)
    assert out["pct_of_spec"] == pytest.approx(90.0) and "message" not in out
    assert db.match("NVIDIA H200", nvml_id("0x2335")).name == "H200 SXM 141GB"   # the card keeps its entry


def test_a_row_without_a_unit_is_compared_in_the_figure_s_unit():
    entry = specs.load().find("H100 SXM5 80GB")
    row = {"family": "memory", "benchmark": "copy", "dtype": "fp32", "status": "ok", "value": "3015.0",
           "mem_peak_bytes_per_s": "3352000000000"}
    cols = normalize.columns(row, entry, None)
    assert (cols["spec_figure"], cols["spec_value"], cols["spec_unit"]) == ("memory_bandwidth", 3350.0, "GB/s")
    assert cols["pct_of_spec"] == pytest.approx(90.0) and cols["derived_peak"] == pytest.approx(3352.0)  # GB/s
    assert normalize.columns(dict(row, mem_peak_bytes_per_s="1"), entry, None)["derived_peak"] == pytest.approx(1e-9)


def test_a_figure_in_another_unit_is_converted_to_the_row_s():
    lab = specs.Entry("Lab Card", ["Lab Card"], [], [], {}, {
        "memory_bandwidth": specs.Figure("memory_bandwidth", 0.05, "TB/s", "lab sheet")}, "lab.toml")
    row = {"family": "memory", "benchmark": "copy", "dtype": "fp32", "status": "ok", "value": "40.0", "unit": "GB/s"}
    cols = normalize.columns(row, lab, None)
    assert (cols["spec_value"], cols["spec_unit"], cols["spec_source"]) == (50.0, "GB/s", "lab sheet")
    assert cols["pct_of_spec"] == pytest.approx(80.0)


@pytest.mark.parametrize("status, value", [("ok", "inf"), ("ok", "nan"), ("wrong", "3015.0"), ("ok", "")])
def test_only_a_finite_ok_value_gets_a_percentage(status, value):
    entry = specs.load().find("H100 SXM5 80GB")
    row = {"family": "memory", "benchmark": "copy", "dtype": "fp32", "unit": "GB/s", "status": status,
           "value": value, "mem_peak_bytes_per_s": "nan" if value == "inf" else "3352000000000"}
    cols = normalize.columns(row, entry, None)
    assert cols["spec_value"] == 3350.0 and cols["pct_of_spec"] == "" and cols["pct_of_derived"] == ""
    assert cols["derived_peak"] == ("" if value == "inf" else pytest.approx(3352.0))


def test_which_rows_get_which_claim():
    entry = specs.load().find("H100 SXM5 80GB")
    matmul = {"family": "matmul", "benchmark": "bf16", "dtype": "bf16", "unit": "TFLOP/s", "status": "ok",
              "value": "700.0"}
    cols = normalize.columns(matmul, entry, None)
    assert (cols["spec_figure"], cols["spec_value"]) == ("bf16_dense", 989.5)
    # a latency row, a closing row, a family with no claim: the card named, nothing compared
    latency = {"family": "transfer", "benchmark": "p2p_latency", "unit": "us", "status": "ok", "value": "2.5",
               "params": json.dumps({"nvlinks": 18, "compute_capability": "9.0"})}
    for row in (latency, {"family": "run", "benchmark": "end", "status": "ok", "value": "12"},
                {"family": "llm", "benchmark": "decode", "status": "ok", "value": "1.0", "unit": "tokens/s"}):
        cols = normalize.columns(row, entry, None)
        assert cols["spec_entry"] == "H100 SXM5 80GB" and not any(v for k, v in cols.items() if k != "spec_entry")
    # params that are not a JSON object are no params
    p2p = {"family": "transfer", "benchmark": "p2p", "unit": "GB/s", "status": "ok", "value": "40.0",
           "params": "[18, 9.0]"}
    assert normalize.columns(p2p, None, None)["spec_value"] == ""
