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


KNOWN = (
    "seed, rng_scope, start_method, reseed_globals, reseed_dataset_rngs, rng_search_budget, "
    "iterable_resume, determinism"
)


def message(error: pytest.ExceptionInfo[ConfigError]) -> str:
    assert isinstance(error.value.__cause__, pydantic.ValidationError)
    return str(error.value)


def test_a_bad_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError) as error:
        ReproConfig.load(environ={"REPROLOADER_SEED": "abc"})
    assert message(error) == (
        "environment variable REPROLOADER_SEED='abc': Input should be a valid integer, got 'abc'"
    )
    with pytest.raises(ConfigError) as error:
        ReproConfig.from_env({"REPROLOADER_DETERMINISM__CUDNN_BENCHMARK": "maybe"})
    assert message(error) == (
        "environment variable REPROLOADER_DETERMINISM__CUDNN_BENCHMARK='maybe': "
        "Input should be a valid boolean, got 'maybe'"
    )


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("c.toml", 'seed = 1\nrng_scop = "sample"\n'),
        ("c.json", '{"seed": 1, "rng_scop": "sample"}'),
    ],
)
def test_an_unknown_key_in_a_file_names_the_path(name: str, text: str, tmp_path: Path) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as error:
        ReproConfig.load(tmp_path / name)
    assert message(error) == (
        f"config file {tmp_path / name}, field rng_scop: names no ReproConfig field (known: {KNOWN})"
    )


def test_an_unknown_determinism_key_in_a_pyproject_names_the_path_and_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.reproloader.determinism]\nwarnonly = true\n")
    with pytest.raises(ConfigError) as error:
        ReproConfig.from_file(path)
    assert message(error) == (
        f"config file {path} [tool.reproloader], field determinism.warnonly: names no "
        "DeterminismConfig field (known: deterministic_algorithms, warn_only, "
        "cudnn_deterministic, cudnn_benchmark, cublas_workspace_config, "
        "fill_uninitialized_memory, float32_matmul_precision, cudnn_allow_tf32)"
    )


def test_a_bad_value_in_a_file_names_the_path_and_field(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('rng_scope = "epoch"\n')
    with pytest.raises(ConfigError) as error:
        ReproConfig.load(path)
    assert message(error) == (
        f"config file {path}, field rng_scope: Input should be 'batch', 'sample' or 'worker', "
        "got 'epoch'"
    )


def test_a_toml_syntax_error_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("seed = 1\nrng_scope = \n")
    with pytest.raises(ConfigError) as error:
        ReproConfig.load(path)
    assert str(error.value).startswith(f"config file {path} is not valid TOML: ")
    assert "line 2" in str(error.value)


def test_a_json_syntax_error_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"seed": 1,}')
    with pytest.raises(ConfigError) as error:
        ReproConfig.from_file(path)
    assert str(error.value).startswith(f"config file {path} is not valid JSON: ")
    assert ": line 1 column " in str(error.value)


def test_a_file_that_is_not_a_table_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError) as error:
        ReproConfig.from_file(path)
    assert str(error.value) == f"config file {path} holds a list, not a table of config fields"


def test_bad_keywords_are_named() -> None:
    with pytest.raises(ConfigError) as error:
        ReproConfig.load(seed=-1, seedx=1)
    assert message(error) == (
        "keyword argument seed=-1: Input should be greater than or equal to 0, got -1\n"
        f"keyword argument seedx=1: names no ReproConfig field (known: {KNOWN})"
    )
    with pytest.raises(ConfigError) as error:
        ReproConfig.load(determinism={"warn_only": 3})
    assert message(error) == (
        "keyword argument determinism, field warn_only=3: Input should be a valid boolean, got 3"
    )


def test_a_later_source_replaces_the_blame_of_an_earlier_one(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("seed = 1\n")
    with pytest.raises(ConfigError) as error:
        ReproConfig.load(path, environ={"REPROLOADER_SEED": "-2"})
    assert message(error) == (
        "environment variable REPROLOADER_SEED='-2': "
        "Input should be greater than or equal to 0, got -2"
    )


def test_a_contradiction_across_sources_names_each_of_them(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[determinism]\ncudnn_benchmark = true\n")
    environ = {"REPROLOADER_DETERMINISM__CUDNN_DETERMINISTIC": "false"}
    with pytest.raises(ConfigError) as error:
        ReproConfig.load(path, environ=environ)
    assert message(error).startswith(
        f"determinism (set by config file {path}, field determinism.cudnn_benchmark; "
        "environment variable REPROLOADER_DETERMINISM__CUDNN_DETERMINISTIC='false'): "
        "cudnn_benchmark=True contradicts deterministic_algorithms=True: "
    )


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
