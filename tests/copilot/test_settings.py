from pathlib import Path

import pytest

from copilot.errors import ConfigError, ModelMissingError
from copilot.settings import REPO_ROOT, load_settings, resolve_model_path


def test_defaults_load_and_map_insurance_outcomes(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.data_dir == tmp_path.resolve()
    assert settings.db_path == tmp_path.resolve() / "copilot.sqlite3"
    assert settings.audio.channels == {"left": "rep", "right": "customer"}
    assert settings.outcomes.polarity("buy") == 1
    assert settings.outcomes.polarity("Customer not interested") == -1
    assert settings.outcomes.polarity("no quote - ineligible customer") == 0
    assert settings.outcomes.polarity(None) == 0


def test_unknown_key_is_rejected_with_its_name(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("training:\n  lora_rank: 8\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown key 'training.lora_rank'"):
        load_settings(config, data_dir=tmp_path / "d")


def test_cross_field_rule_on_channels(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("audio:\n  channels: {left: rep, right: rep}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="audio.channels"):
        load_settings(config, data_dir=tmp_path / "d")


def test_data_dir_precedence_and_repo_guard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COPILOT_DATA_DIR", str(tmp_path / "from-env"))
    assert load_settings().data_dir == (tmp_path / "from-env").resolve()
    assert load_settings(data_dir=tmp_path / "flag").data_dir == (tmp_path / "flag").resolve()
    with pytest.raises(ConfigError, match="inside the repository"):
        load_settings(data_dir=REPO_ROOT / "state")


def test_recipe_overrides_are_validated(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.with_training({"max_steps": 7}).training.max_steps == 7
    with pytest.raises(ConfigError, match="max_steps"):
        settings.with_training({"max_steps": 0})


def test_missing_model_path_names_the_fix() -> None:
    with pytest.raises(ModelMissingError, match="does not exist"):
        resolve_model_path("embedder", "/nonexistent/model")
    assert (resolve_model_path("embedder", None) / "config.json").is_file()
