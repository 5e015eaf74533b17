from __future__ import annotations

import json
import re
from pathlib import Path

import pydantic
import pytest

from reproloader import ConfigError, ReproConfig


def test_from_json_and_toml_files(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"seed": 3, "determinism": {"warn_only": True}}))
    (tmp_path / "c.toml").write_text("seed = 3\n[determinism]\nwarn_only = true\n")
    assert ReproConfig.from_file(tmp_path / "c.json") == ReproConfig.from_file(tmp_path / "c.toml")
    assert ReproConfig.from_file(tmp_path / "c.toml").determinism.warn_only is True


def test_pyproject_is_read_from_its_tool_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.reproloader]\nrng_scope = "sample"\n'
    )
    assert ReproConfig.from_file(tmp_path / "pyproject.toml").rng_scope == "sample"


def test_other_file_types_are_refused(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("seed: 1\n")
    with pytest.raises(ConfigError, match=r"use a \.json or \.toml file"):
        ReproConfig.from_file(tmp_path / "c.yaml")


def test_from_env_parses_values_and_nested_fields() -> None:
    config = ReproConfig.from_env(
        {
            "REPROLOADER_SEED": "12",
            "REPROLOADER_RNG_SCOPE": "sample",
            "REPROLOADER_RESEED_GLOBALS": "torch, numpy",
            "REPROLOADER_DETERMINISM__CUDNN_DETERMINISTIC": "false",
            "OTHER": "ignored",
        }
    )
    assert (config.seed, config.rng_scope) == (12, "sample")
    assert config.reseed_globals == frozenset({"torch", "numpy"})
    assert config.determinism.cudnn_deterministic is False


def test_unknown_environment_variable_is_named() -> None:
    with pytest.raises(
        ConfigError, match="environment variable REPROLOADER_RNG_SCOP names no ReproConfig field"
    ):
        ReproConfig.from_env({"REPROLOADER_RNG_SCOP": "sample"})


def test_precedence_defaults_file_environment_keywords(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        'seed = 1\nrng_scope = "sample"\n[determinism]\nwarn_only = true\nfill_uninitialized_memory = false\n'
    )
    environ = {"REPROLOADER_SEED": "2", "REPROLOADER_DETERMINISM__WARN_ONLY": "false"}
    config = ReproConfig.load(path, environ=environ, seed=3)
    assert config.seed == 3  # keyword beats environment beats file
    assert config.rng_scope == "sample"  # file beats default
    assert config.determinism.warn_only is False  # environment beats file, field by field
    assert config.determinism.fill_uninitialized_memory is False  # the file's other field stays
    assert ReproConfig.load(path, environ=environ).seed == 2


def test_validation_errors_name_the_source_field() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"determinism\.cudnn_benchmark"):
        ReproConfig.load(environ={"REPROLOADER_DETERMINISM__CUDNN_BENCHMARK": "maybe"})


@pytest.mark.parametrize(
    "config",
    [
        ReproConfig(),
        ReproConfig(
            seed=2**100,
            rng_scope="worker",
            reseed_globals=frozenset({"torch"}),
            determinism={"warn_only": True, "cublas_workspace_config": None},
        ),
    ],
)
def test_serialized_configs_read_back_equal(config: ReproConfig, tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(config.to_toml())
    (tmp_path / "c.json").write_text(config.to_json())
    assert ReproConfig.from_file(tmp_path / "c.toml") == config
    assert ReproConfig.from_file(tmp_path / "c.json") == config


def test_a_determinism_contradiction_inside_a_full_config() -> None:
    with pytest.raises(
        pydantic.ValidationError, match=re.escape("cudnn_benchmark=True contradicts")
    ):
        ReproConfig(determinism={"cudnn_benchmark": True})
