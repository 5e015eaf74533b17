"""ReproTrainer: transformers' Trainer killed mid-epoch resumes to the straight run, bitwise.

The runs (tests/frameworks/_transformers_run.py) train a tiny GPT-2 built from a config
for 12 optimizer steps with gradient accumulation 2, over several epochs, and record
every micro-batch's exact loss and tokens. Each straight run is made once per module.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from reproloader.exceptions import StateError, StateMismatchError
from tests.helpers import launcher

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # transformers' import-time notices are not ours
    transformers = pytest.importorskip("transformers")
    trainer_module = pytest.importorskip("reproloader.trainer")

SCRIPT = Path(__file__).with_name("_transformers_run.py")
KILL_AFTER = 8  # the runner's: checkpoint-8 is the last one before the kill (mid-epoch)


def launch(
    processes: int, out: Path, phase: str, *configs: str
) -> subprocess.CompletedProcess[str]:
    # stdout to a file: after a kill, orphaned workers hold no pipe of ours.
    log = out / f"{phase}-{'-'.join(configs)}.log"
    out.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        result = subprocess.run(
            [*launcher(processes), str(SCRIPT), str(out), phase, *configs],
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    return subprocess.CompletedProcess(result.args, result.returncode, log.read_text())


def records(directory: Path, phase: str, rank: int) -> list[dict[str, Any]]:
    lines = (directory / f"{phase}_rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return torch.load(directory / "final.pt", weights_only=True)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")  # not torn down when xdist interleaves other modules
def straight(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The uninterrupted runs, one launch per process count: {processes: out}."""
    runs = {1: ("map-w0", "iterable-w2"), 2: ("map-w2", "iterable-w0")}
    outs = {}
    for processes, configs in runs.items():
        out = tmp_path_factory.mktemp(f"straight{processes}")
        result = launch(processes, out, "straight", *configs)
        assert result.returncode == 0, result.stdout[-4000:]
        outs[processes] = out
    return outs


@pytest.mark.parametrize(
    ("processes", "config", "reference"),
    [
        (1, "map-w2", "map-w0"),  # and the same batches as with 0 workers
        (1, "iterable-w2", "iterable-w2"),
        (2, "map-w0", "map-w2"),
        (2, "iterable-w0", "iterable-w0"),
    ],
)
@pytest.mark.xdist_group("transformers_straight")  # the straight runs are made once
def test_killed_mid_epoch_and_resumed_trains_as_the_straight_run(
    straight: dict[int, Path], processes: int, config: str, reference: str, tmp_path: Path
) -> None:
    killed = launch(processes, tmp_path, "kill", config)
    if processes == 1:
        assert killed.returncode == -signal.SIGKILL, killed.stdout[-4000:]
    else:  # torchrun reports its killed workers
        assert killed.returncode != 0, killed.stdout[-4000:]
        assert "Signal 9 (SIGKILL)" in killed.stdout, killed.stdout[-4000:]
    assert sorted(p.name for p in (tmp_path / config / "checkpoints").iterdir()) == [
        "checkpoint-4",
        "checkpoint-8",
    ]
    resumed = launch(processes, tmp_path, "resume", config)
    assert resumed.returncode == 0, resumed.stdout[-4000:]

    for rank in range(processes):
        expected = records(straight[processes] / reference, "straight", rank)
        head = records(tmp_path / config, "kill", rank)
        tail = records(tmp_path / config, "resume", rank)
        # The killed run trained one step past its last checkpoint, as the straight run.
        assert head[-1]["step"] == KILL_AFTER
        assert head == expected[: len(head)]
        # The resumed run starts at the checkpoint: every later micro-batch is the straight
        # run's, tokens and exact loss.
        assert tail[0]["step"] == KILL_AFTER
        assert tail == [r for r in expected if r["step"] >= KILL_AFTER]
    final, reference_final = weights(tmp_path / config), weights(straight[processes] / reference)
    assert final.keys() == reference_final.keys()
    assert all(torch.equal(final[k], reference_final[k]) for k in final)


def test_the_trainer_internals_relied_on_are_there() -> None:
    trainer = transformers.Trainer
    missing = [name for name in trainer_module._TRAINER_INTERNALS if not hasattr(trainer, name)]
    missing.remove("_train_batch_size")  # an instance attribute, set in __init__
    assert not missing, f"transformers {transformers.__version__} moved {missing}"
    expected = {
        "_save_checkpoint": ["self", "model", "trial"],
        "_get_output_dir": ["self", "trial"],
        "_remove_unused_columns": ["self", "dataset", "description"],
        "_get_collator_with_removed_columns": ["self", "data_collator", "description"],
        "set_initial_training_values": ["self", "args", "dataloader"],
        "get_resumed_dataloader": ["self", "dataloader", "num_batches"],
    }
    for name, parameters in expected.items():
        signature = inspect.signature(getattr(trainer, name))
        assert list(signature.parameters) == parameters, (name, signature)


# -- in this process: what a checkpoint without, or with a foreign, loader state does --


class _Rows(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = torch.full((4,), float(i))
        return {"x": x, "labels": x.sum().reshape(1)}


class _Regressor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": torch.nn.functional.mse_loss(self.linear(x), labels)}


def _train(cls: Any, directory: Path, resume: str | None = None, **options: Any) -> Any:
    args = transformers.TrainingArguments(
        output_dir=str(directory),
        per_device_train_batch_size=4,
        max_steps=6,
        save_steps=2,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        logging_strategy="no",
        **options,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Trainer's own notices (tokenizer, safetensors)
        trainer = cls(model=_Regressor(), args=args, train_dataset=_Rows())
        trainer.train(resume_from_checkpoint=resume)
    return trainer


@pytest.fixture(scope="session")  # not torn down when xdist interleaves other modules
def plain_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Checkpoints 2, 4, 6 written by a plain Trainer (no loader state)."""
    directory = tmp_path_factory.mktemp("plain")
    _train(transformers.Trainer, directory)
    return directory


def test_resuming_a_checkpoint_without_loader_state_raises_naming_the_fix(
    plain_checkpoints: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "checkpoint-4"
    shutil.copytree(plain_checkpoints / "checkpoint-4", checkpoint)
    with pytest.raises(StateError) as raised:
        _train(trainer_module.ReproTrainer, tmp_path, resume=str(checkpoint))
    assert str(raised.value) == (
        f"cannot resume the data order from {checkpoint}: it has no reproloader_state.pt "
        "(a plain Trainer wrote it, or a run before reproloader), so the batches already "
        "trained on came in another order; resume it once with "
        "TrainingArguments(ignore_data_skip=True), which starts that epoch from its first "
        "batch, and the next checkpoint will carry the loader's state"
    )
    # The named fix works, and the checkpoints written from then on carry the state.
    trainer = _train(
        trainer_module.ReproTrainer, tmp_path, resume=str(checkpoint), ignore_data_skip=True
    )
    assert trainer.state.global_step == 6
    assert (tmp_path / "checkpoint-6" / trainer_module.LOADER_STATE_NAME).is_file()


def test_a_loader_state_from_another_checkpoint_is_refused(tmp_path: Path) -> None:
    _train(trainer_module.ReproTrainer, tmp_path)  # 4 batches an epoch: 2 mid, 4 at the end
    for target in ("checkpoint-4", "checkpoint-6"):  # an epoch's start, mid-epoch
        shutil.copy(
            tmp_path / "checkpoint-2" / trainer_module.LOADER_STATE_NAME,
            tmp_path / target / trainer_module.LOADER_STATE_NAME,
        )
        step = int(target.partition("-")[2])
        with pytest.raises(StateMismatchError) as raised:
            _train(trainer_module.ReproTrainer, tmp_path, resume=str(tmp_path / target))
        assert str(raised.value) == (
            f"cannot resume from {tmp_path / target}: its reproloader_state.pt is after 2 "
            f"batches of epoch 0, its trainer_state.json (global step {step}) after {step - 4} "
            "batches of epoch 1; the two files come from different checkpoints: resume from "
            "a checkpoint folder ReproTrainer wrote whole"
        )


def test_a_sampling_strategy_of_the_trainer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^ReproTrainer: train_sampling_strategy is") as raised:
        _train(trainer_module.ReproTrainer, tmp_path, train_sampling_strategy="group_by_length")
    assert str(raised.value) == (
        "ReproTrainer: train_sampling_strategy is 'group_by_length', expected 'random' (the "
        "ReproLoader orders the data itself); leave train_sampling_strategy at its default"
    )
