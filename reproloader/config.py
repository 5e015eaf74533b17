"""``ReproConfig``: reproducibility settings as one validated, frozen object.

A config holds the loader's fields (seed, scope, start method, what to reseed) and a
``determinism`` section for torch's process-wide switches. A config can be shared by
several loaders and stored with a run; a field that does not apply to a loader, such
as ``start_method`` for ``num_workers=0``, simply has nothing to act on there.

Sources, from lowest to highest precedence (:meth:`ReproConfig.load`):

1. the defaults below;
2. a JSON or TOML file (a ``pyproject.toml`` is read from ``[tool.reproloader]``);
3. environment variables ``REPROLOADER_<FIELD>``, with ``__`` for the determinism
   section: ``REPROLOADER_RNG_SCOPE=sample``,
   ``REPROLOADER_DETERMINISM__CUDNN_BENCHMARK=true``;
4. keyword arguments.

An invalid value, or a key that names no field, raises :class:`ConfigError` naming
where it came from: the file's path, the environment variable, or the keyword.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from reproloader._runtime.discovery import DEFAULT_BUDGET
from reproloader.context import RngScope
from reproloader.determinism import FROZEN_MODEL, AppliedSettings, DeterminismConfig
from reproloader.exceptions import ConfigError
from reproloader.seeding import MAX_SEED

__all__ = ["DeterminismConfig", "GlobalRngName", "ReproConfig", "StartMethod"]

StartMethod = Literal["fork", "spawn", "forkserver"]
GlobalRngName = Literal["numpy", "random", "torch"]

ENV_PREFIX = "REPROLOADER_"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return "[" + ", ".join(_toml_value(v) for v in items) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _env_value(raw: str, field_type: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        if "frozenset" in field_type or "list" in field_type:
            return [part.strip() for part in raw.split(",") if part.strip()]
        return raw


class ReproConfig(BaseModel):
    """How a ReproLoader seeds its data, and torch's determinism switches.

    Attributes:
        seed: the root seed, an int in ``[0, 2**128)``. ``None`` draws one from
            torch's global RNG (or the loader's ``generator``) when the loader is
            built, so ``torch.manual_seed(s)`` before it makes the run repeatable.
        rng_scope: what one random stream covers. ``"batch"``: each batch's
            randomness derives from (seed, epoch, rank, batch index); results do not
            depend on ``num_workers`` or the start method. ``"sample"``: each
            sample's from (seed, epoch, dataset index); a sample's augmentation also
            does not depend on batch size or world size. ``"worker"``: one stream per
            worker per epoch, the classic model; results depend on ``num_workers``.
        start_method: the multiprocessing start method for workers; ``None`` keeps
            the platform's default (fork on Linux, which reseeding makes safe).
        reseed_globals: which process-wide RNGs are reseeded before each unit:
            python ``random``, numpy's legacy global RNG, torch's CPU generator. Drop
            one only if no dataset, transform or collate_fn draws from it: its draws
            would then depend on what ran before in the process.
        reseed_dataset_rngs: reseed, in place and before each unit, the numpy
            ``Generator``/``RandomState``, ``random.Random`` and ``torch.Generator``
            objects held by the dataset and the collate_fn (and by samplers you pass
            in). This fixes the classic bug of a Generator created in ``__init__``
            that every worker copies; turn it off if such an RNG must keep its own
            stream.
        rng_search_budget: how many objects the search for those RNG objects reads
            (through attributes, containers, ``__slots__``, closures) before it stops
            and warns, naming where. Plain data (strings, numbers, arrays, long lists
            of them) is not counted.
        iterable_resume: how an iterable dataset with its own ``state_dict`` (or
            whose iterator has one) resumes mid-epoch: ``"state"`` through that state
            (fast; as exact as the dataset's own state: randomness a generator draws
            as iteration starts, such as a shuffle buffer's, is not in it), or
            ``"replay"``: the pass is replayed from its start in each worker, with the
            same reseeding (exact whatever the dataset holds, at the cost of producing
            the skipped samples again).
        determinism: torch's process-wide switches (:class:`DeterminismConfig`).

    Example:
        >>> ReproConfig(seed=7, rng_scope="sample")
        ReproConfig(seed=7, rng_scope='sample', start_method=None, ...)
    """

    model_config = FROZEN_MODEL

    seed: int | None = Field(default=None, ge=0, lt=MAX_SEED, strict=True)
    rng_scope: RngScope = "batch"
    start_method: StartMethod | None = None
    reseed_globals: frozenset[GlobalRngName] = frozenset({"numpy", "random", "torch"})
    reseed_dataset_rngs: bool = Field(default=True, strict=True)
    rng_search_budget: int = Field(default=DEFAULT_BUDGET, ge=1, strict=True)
    iterable_resume: Literal["state", "replay"] = "state"
    determinism: DeterminismConfig = DeterminismConfig()

    def apply(self) -> AppliedSettings:
        """Apply the determinism section now; as a context manager, restore on exit."""
        return self.determinism.apply()

    # -- sources --------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ReproConfig:
        """A config from a ``.json`` or ``.toml`` file (``[tool.reproloader]`` of a pyproject).

        Raises:
            ConfigError: the file is not valid JSON/TOML, or a value in it is invalid or
                names no field (the message names the file and the field).
            OSError: the file cannot be read (``FileNotFoundError`` names the path).
        """
        return cls.load(path, environ={})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReproConfig:
        """A config from ``REPROLOADER_*`` environment variables (others default).

        Raises:
            ConfigError: a variable names no field, or its value is invalid (the
                message names the variable).
        """
        return cls.load(environ=environ)

    @classmethod
    def load(
        cls,
        file: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ReproConfig:
        """Defaults, then ``file``, then ``REPROLOADER_*`` variables, then ``overrides``.

        Each source overrides the fields it sets; the determinism section is merged
        field by field.

        Raises:
            ConfigError: a value is invalid, or a source names a field that does not
                exist. The message names the source of each bad value (the file's path,
                the environment variable, or the keyword) and the field; the pydantic
                ``ValidationError`` is its ``__cause__``.
            OSError: ``file`` cannot be read.

        .. versionchanged:: 0.1
            Invalid values raise ``ConfigError`` naming their source, not a bare
            ``pydantic.ValidationError``.
        """
        merged: dict[str, Any] = {}
        origins: dict[tuple[str, ...], str] = {}
        sources: list[tuple[dict[str, Any], _Label]] = []
        if file is not None:
            path = Path(file)
            sources.append((_read_file(path), _file_label(path)))
        env_data, env_names = _read_env(os.environ if environ is None else environ)
        sources.append((env_data, _env_label(env_names)))
        sources.append((overrides, _keyword_label))
        for data, label in sources:
            for key, value in data.items():
                if key == "determinism" and isinstance(value, Mapping):
                    base = merged.get("determinism", {})
                    merged["determinism"] = {**dict(base), **dict(value)}
                    for field in value:
                        origins[(key, field)] = label((key, field), value[field])
                else:
                    merged[key] = value
                    for loc in [loc for loc in origins if loc[0] == key]:
                        del origins[loc]
                    origins[(key,)] = label((key,), value)
        try:
            return cls.model_validate(merged)
        except ValidationError as error:
            raise ConfigError(_explain(error, origins)) from error

    # -- serialization ---------------------------------------------------------

    def to_json(self) -> str:
        """JSON that :meth:`from_file` (``.json``) reads back."""
        return self.model_dump_json(indent=2)

    def to_toml(self) -> str:
        """TOML that :meth:`from_file` (``.toml``) reads back.

        TOML has no null: a None whose default is None is left out, and
        ``cublas_workspace_config=None`` is written ``"none"``.
        """
        data = self.model_dump()
        determinism = data.pop("determinism")
        if determinism["cublas_workspace_config"] is None:
            determinism["cublas_workspace_config"] = "none"
        lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if v is not None]
        lines += ["", "[determinism]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in determinism.items()]
        return "\n".join(lines) + "\n"


_Label = Callable[[tuple[str, ...], Any], str]
"""Names where the value at a field path came from, e.g. ``environment variable X='1'``."""


def _dotted(loc: tuple[str, ...]) -> str:
    return ".".join(loc)


def _file_label(path: Path) -> _Label:
    where = f"{path} [tool.reproloader]" if path.name == "pyproject.toml" else str(path)
    return lambda loc, value: f"config file {where}, field {_dotted(loc)}"


def _env_label(names: Mapping[tuple[str, ...], tuple[str, str]]) -> _Label:
    def label(loc: tuple[str, ...], value: Any) -> str:
        name, raw = names[loc]
        return f"environment variable {name}={raw!r}"

    return label


def _keyword_label(loc: tuple[str, ...], value: Any) -> str:
    if len(loc) == 1:
        return f"keyword argument {loc[0]}={value!r}"
    return f"keyword argument {loc[0]}, field {_dotted(loc[1:])}={value!r}"


def _explain(error: ValidationError, origins: Mapping[tuple[str, ...], str]) -> str:
    """One line per invalid value: where it came from, and what is wrong with it."""
    lines = []
    for problem in error.errors(include_url=False):
        loc = tuple(str(part) for part in problem["loc"])
        # The source that set this field, or the part of it holding the bad value.
        label = next((origins[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origins), None)
        got = f", got {problem['input']!r}"
        if label is None:  # a check across a section's fields: name every source of it
            related = sorted({text for key, text in origins.items() if key[: len(loc)] == loc})
            label = f"{_dotted(loc) or 'config'} (set by {'; '.join(related) or 'the defaults'})"
            got = ""
        if problem["type"] == "extra_forbidden":
            model = DeterminismConfig if len(loc) > 1 else ReproConfig
            message = f"names no {model.__name__} field (known: {', '.join(model.model_fields)})"
        else:
            message = problem["msg"].removeprefix("Value error, ") + got
        lines.append(f"{label}: {message}")
    return "\n".join(lines)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not text: {error}") from error
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"config file {path} is not valid JSON: {error}") from error
    elif path.suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - exercised on Python 3.10 only
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {path} is not valid TOML: {error}") from error
        if path.name == "pyproject.toml":
            data = data.get("tool", {}).get("reproloader", {})
    else:
        raise ConfigError(f"cannot read a config from {path}: use a .json or .toml file")
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} holds a {type(data).__name__}, not a table of config fields"
        )
    return data


def _read_env(
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], dict[tuple[str, ...], tuple[str, str]]]:
    """The ``REPROLOADER_*`` variables as config data, and each field path's variable and text."""
    data: dict[str, Any] = {}
    names: dict[tuple[str, ...], tuple[str, str]] = {}
    sections = {
        "": ReproConfig.model_fields,
        "determinism__": DeterminismConfig.model_fields,
    }
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        section = "determinism__" if key.startswith("determinism__") else ""
        field = key[len(section) :]
        fields = sections[section]
        if field not in fields or field == "determinism":
            raise ConfigError(
                f"environment variable {name} names no ReproConfig field; known: "
                + ", ".join(
                    ENV_PREFIX + (section + f).upper() for f in fields if f != "determinism"
                )
            )
        value = _env_value(raw, str(fields[field].annotation))
        if section:
            data.setdefault("determinism", {})[field] = value
            names[("determinism", field)] = (name, raw)
        else:
            data[field] = value
            names[(field,)] = (name, raw)
    return data, names
