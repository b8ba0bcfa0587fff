"""The break-even table: loading, interpolation, a safe default for GPUs it does not name, clear errors."""

import json

import pytest

from unisparse import breakeven as BE


def table(points, name="NVIDIA H200"):
    return BE.parse_table({"devices": {name: {"points": points}}})


def test_interpolates_in_log_length_and_clamps_outside():
    t = table([[32768, 0.9], [8192, 0.7]])["NVIDIA H200"]  # unordered input is sorted
    assert t.lengths == (8192, 32768)
    assert t.at(4096) == 0.7 and t.at(131072) == 0.9  # the nearest point outside the range
    assert t.at(16384) == pytest.approx(0.8)  # halfway in log(length)
    assert t.at(8192) == 0.7 and t.at(32768) == 0.9


def test_an_unknown_gpu_gets_the_safe_default_and_a_known_one_its_measurement():
    t = table([[8192, 0.7], [32768, 0.9]])
    assert BE.break_even_density("NVIDIA H200", 32768, t) == (0.9, "NVIDIA H200")
    assert BE.break_even_density("Some Future GPU", 32768, t) == (BE.SAFE_DENSITY, "default")
    assert BE.break_even_density("cpu", 32768, {}) == (BE.SAFE_DENSITY, "default")
    assert 0 < BE.SAFE_DENSITY <= 0.5  # low enough that an unmeasured kernel is not slower than dense


def test_an_unnamed_gpu_takes_the_entry_of_its_architecture_the_lowest_where_several_match():
    t = BE.parse_table({"devices": {
        "NVIDIA H200": {"points": [[8192, 0.7], [32768, 1.0]], "capability": "9.0"},
        "Other sm90": {"points": [[8192, 0.9], [32768, 0.8]], "capability": "9.0"},
        "NVIDIA A100": {"points": [[32768, 0.6]], "capability": "8.0"},
        "Unlabelled": {"points": [[32768, 0.3]]},
    }})
    assert BE.break_even_density("NVIDIA H100 80GB HBM3", 8192, t, capability="9.0") == (
        0.7, "NVIDIA H200 (same architecture, 9.0)")
    assert BE.break_even_density("NVIDIA H100 80GB HBM3", 32768, t, capability="9.0") == (
        0.8, "Other sm90 (same architecture, 9.0)")
    assert BE.break_even_density("NVIDIA A10", 32768, t, capability="8.6") == (BE.SAFE_DENSITY, "default")
    assert BE.break_even_density("NVIDIA H200", 32768, t, capability="8.0") == (1.0, "NVIDIA H200")  # its own first
    assert BE.break_even_density("Some GPU", 32768, t) == (BE.SAFE_DENSITY, "default")  # by name, no capability


def test_the_shipped_table_names_the_h100_and_h200_and_serves_other_hopper_gpus():
    table = BE.load_table()
    assert {"NVIDIA H200", "NVIDIA H100 80GB HBM3"} <= set(table)
    assert BE.break_even_density("NVIDIA H100 80GB HBM3", 32768) == (table["NVIDIA H100 80GB HBM3"].at(32768),
                                                                   "NVIDIA H100 80GB HBM3")
    # a Hopper GPU the table does not name takes the lowest break-even of the measured Hopper GPUs
    for seq_len in (4096, 32768):
        density, where = BE.break_even_density("NVIDIA H800", seq_len, capability="9.0")
        assert density == min(table[n].at(seq_len) for n in ("NVIDIA H200", "NVIDIA H100 80GB HBM3"))
        assert where.endswith("(same architecture, 9.0)") and table[where.split(" (")[0]].at(seq_len) == density


@pytest.mark.parametrize("data,match", [
    ({"devices": {"X": {"points": [[8192, 0.5]], "capability": 9}}}, "capability"),
    ({"devices": {"X": {"points": [[8192, 0.5]], "capability": "sm90"}}}, "capability"),
    ([], "devices"),
    ({"devices": {"X": {}}}, "points"),
    ({"devices": {"X": {"points": [[8192, 1.5]]}}}, "bad points"),
    ({"devices": {"X": {"points": [[0, 0.5]]}}}, "bad points"),
    ({"devices": {"X": {"points": [[8192, 0.5], [8192, 0.6]]}}}, "bad points"),
    ({"devices": {"X": {"points": [["a", 0.5]]}}}, "points"),
    ({"devices": {"X": {"points": []}}}, "bad points"),
])
def test_malformed_tables_are_refused_naming_the_entry(data, match):
    with pytest.raises(ValueError, match=match):
        BE.parse_table(data, "t.json")


def test_files_load_and_a_missing_file_is_an_empty_table(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"devices": {"G": {"points": [[4096, 0.5]]}}}))
    assert BE.load_table(path)["G"].at(4096) == 0.5
    assert BE.load_table(tmp_path / "missing.json") == {}
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        BE.load_table(bad)


def test_the_shipped_table_parses():
    for name, entry in BE.load_table().items():
        assert name and all(0 < d <= 1 for d in entry.densities)
