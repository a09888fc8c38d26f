"""The fusion core: `FusionConfig` (validation, version, ablation) and `fuse`/`zscores`."""

import json
import math
from pathlib import Path

import pytest

from m3rec_graph.fusion import (
    DEFAULT_FUSION,
    DEFAULT_FUSION_PATH,
    FusionConfig,
    FusionConfigError,
    fuse,
    load_fusion_config,
    resolve_fusion,
    zscores,
)

IDS = ["a", "b", "c", "d"]


def write(tmp_path: Path, data: object, name: str = "fusion.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# --- FusionConfig ----------------------------------------------------------------------

def test_version_is_a_content_hash() -> None:
    one = FusionConfig(weights={"mar": 1.0, "text": 0.5})
    same = FusionConfig(weights={"text": 0.5, "mar": 1.0})  # key order does not count
    other = FusionConfig(weights={"mar": 1.0, "text": 0.6})
    refit = FusionConfig(weights={"mar": 1.0, "text": 0.5}, fitted={"method": "logistic"})
    assert len(one.version) == 12 and all(ch in "0123456789abcdef" for ch in one.version)
    assert one.version == same.version
    assert len({one.version, other.version, refit.version}) == 3


def test_a_dumped_config_loads_back_with_the_same_version(tmp_path: Path) -> None:
    config = FusionConfig(weights={"mar": 0.3, "prior": 1.2}, sampling="uniform", fitted={"users": 50})
    path = tmp_path / "fit.json"
    config.dump(path)
    loaded = load_fusion_config(path)
    assert loaded == config and loaded.version == config.version


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"weights": {"mar": 0.0, "text": 0.0}}, "non-zero"),
        ({"weights": {}}, "non-zero"),
        ({"weights": {"mar": 1.0, "popularity": 1.0}}, "weights.popularity"),
        ({"weights": {"mar": 1.0}, "colour": "red"}, "colour"),
        ({"weights": {"mar": "heavy"}}, "weights.mar"),
        ({"weights": {"mar": 1.0}, "normalisation": "rank"}, "normalisation"),
        ({}, "weights"),
    ],
)
def test_a_bad_config_file_raises_a_config_error_naming_the_problem(
    tmp_path: Path, data: object, names: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(FusionConfigError, match=names) as info:
        load_fusion_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "nan.json"
    path.write_text('{"weights": {"mar": NaN}}', encoding="utf-8")  # Python's json writes NaN
    with pytest.raises(FusionConfigError, match="finite"):
        load_fusion_config(path)
    with pytest.raises(ValueError, match="finite"):
        FusionConfig(weights={"mar": math.inf})


def test_missing_and_non_json_files_raise_config_errors(tmp_path: Path) -> None:
    with pytest.raises(FusionConfigError, match="does not exist"):
        load_fusion_config(tmp_path / "nowhere.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{weights:", encoding="utf-8")
    with pytest.raises(FusionConfigError, match=str(bad)):
        load_fusion_config(bad)


def test_without_switches_signals_off_and_revalidates() -> None:
    config = FusionConfig(weights={"mar": 1.0, "text": 0.5, "prior": 0.0})
    assert config.active() == ("mar", "text")
    ablated = config.without("mar")
    assert ablated.active() == ("text",) and ablated.version != config.version
    assert config.active() == ("mar", "text")  # the original is unchanged (frozen)
    with pytest.raises(FusionConfigError, match="non-zero") as info:
        config.without("mar", "text")  # only the zero-weight prior would be left
    assert isinstance(info.value, ValueError)


def test_the_shipped_default_is_hand_set_and_says_so() -> None:
    config = load_fusion_config(DEFAULT_FUSION_PATH)
    assert config.sampling is None and config.fitted["method"] == "hand-set"
    assert set(config.active()) == {"mar", "overlap", "text", "prior"}
    assert resolve_fusion(DEFAULT_FUSION) == config


def test_resolve_fusion_takes_none_a_path_a_mapping_or_a_config(tmp_path: Path) -> None:
    config = FusionConfig(weights={"text": 1.0})
    path = tmp_path / "text.json"
    config.dump(path)
    assert resolve_fusion(None) is None
    assert resolve_fusion(config) is config
    assert resolve_fusion(str(path)) == config
    assert resolve_fusion({"weights": {"text": 1.0}}) == config
    with pytest.raises(FusionConfigError, match="weights"):
        resolve_fusion({"weights": {"text": 0.0}})


# --- zscores ---------------------------------------------------------------------------

def test_zscores_have_mean_zero_and_unit_spread() -> None:
    z = zscores([1.0, 2.0, 3.0, 6.0])
    assert sum(z) == pytest.approx(0.0, abs=1e-12)
    assert math.sqrt(sum(v * v for v in z) / len(z)) == pytest.approx(1.0)
    assert z == sorted(z)


@pytest.mark.parametrize("value", [0.1, 1e-7, 0.3, 1e6 + 0.1, 0.0, -2.5])
def test_a_constant_signal_gives_zeros_even_with_rounding_noise(value: float) -> None:
    # The mean of seven 0.1s is not exactly 0.1, so an exact `sd == 0` test fails here.
    assert zscores([value] * 7) == [0.0] * 7


def test_a_small_but_real_spread_is_kept() -> None:
    z = zscores([1e-6, 2e-6, 3e-6])
    assert z[0] < 0 < z[2] and z[1] == pytest.approx(0.0, abs=1e-9)


def test_zscores_of_nothing_or_non_finite_values() -> None:
    assert zscores([]) == []
    assert zscores([1.0, math.nan, 2.0]) == [0.0, 0.0, 0.0]


# --- fuse ------------------------------------------------------------------------------

def test_fuse_is_the_weighted_sum_of_z_scores() -> None:
    mar = {"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.5}
    text = {"a": 0.0, "b": 0.2, "c": 0.4, "d": 0.6}
    config = FusionConfig(weights={"mar": 2.0, "text": 1.0})
    out = fuse({"mar": mar, "text": text}, config, IDS)
    z_mar = dict(zip(IDS, zscores([mar[i] for i in IDS]), strict=True))
    z_text = dict(zip(IDS, zscores([text[i] for i in IDS]), strict=True))
    for i in IDS:
        assert out[i].parts == pytest.approx({"mar": 2.0 * z_mar[i], "text": z_text[i]})
        assert out[i].fused == pytest.approx(2.0 * z_mar[i] + z_text[i])


def test_a_missing_signal_drops_out_and_the_weights_renormalise() -> None:
    text = {"a": 0.0, "b": 0.2, "c": 0.4, "d": 0.6}
    prior = {"a": 3.0, "b": 1.0, "c": 2.0, "d": 0.0}
    config = FusionConfig(weights={"mar": 1.0, "text": 1.0, "prior": 2.0})
    out = fuse({"text": text, "prior": prior}, config, IDS)  # no MAR signal
    scale = 4.0 / 3.0  # total |weight| 4 over the 3 present
    z_text = zscores([text[i] for i in IDS])
    z_prior = zscores([prior[i] for i in IDS])
    for n, i in enumerate(IDS):
        assert set(out[i].parts) == {"text", "prior"}
        assert out[i].parts["text"] == pytest.approx(scale * z_text[n])
        assert out[i].parts["prior"] == pytest.approx(scale * 2.0 * z_prior[n])


def test_a_zero_weight_signal_has_no_part() -> None:
    config = FusionConfig(weights={"mar": 0.0, "text": 1.0})
    out = fuse({"mar": dict.fromkeys(IDS, 0.5), "text": {"a": 1, "b": 0, "c": 0, "d": 0}}, config, IDS)
    assert all(set(f.parts) == {"text"} for f in out.values())
    assert max(out, key=lambda i: out[i].fused) == "a"


def test_a_constant_signal_contributes_nothing() -> None:
    config = FusionConfig(weights={"mar": 1.0, "text": 1.0})
    text = {"a": 0.1, "b": 0.1, "c": 0.1, "d": 0.1}
    mar = {"a": 0.2, "b": 0.8, "c": 0.4, "d": 0.6}
    out = fuse({"mar": mar, "text": text}, config, IDS)
    assert all(f.parts["text"] == 0.0 for f in out.values())
    assert sorted(IDS, key=lambda i: -out[i].fused) == ["b", "d", "c", "a"]


def test_fuse_raises_when_no_weighted_signal_is_present() -> None:
    # Silent all-zero scores would rank by the tie-break alone: a clear error instead.
    config = FusionConfig(weights={"prior": 1.0, "text": 0.0})
    with pytest.raises(FusionConfigError, match="prior") as info:
        fuse({"text": dict.fromkeys(IDS, 0.3)}, config, IDS)
    assert "present: text" in str(info.value)
