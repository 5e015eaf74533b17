"""transformers' ``Trainer`` with a ReproLoader: exact mid-epoch resume in O(1).

:class:`ReproTrainer` is a ``transformers.Trainer`` whose training loader is a
:class:`~reproloader.ReproLoader` built from the ``TrainingArguments`` (batch size,
collator, workers, pin memory, drop_last, prefetch, persistent workers, and
``data_seed``, else ``seed``, as the loader's seed). Every checkpoint folder the
Trainer writes gets the loader's state (:data:`LOADER_STATE_NAME`, every rank's part,
written atomically before the Trainer's own files), and
``train(resume_from_checkpoint=...)`` loads it: the resumed epoch continues at the
saved batch without reading or replaying the ones before, instead of the Trainer's
``skip_first_batches``.

Needs transformers 5.25 or later (``pip install 'reproloader[transformers]'``), whose
``Trainer.get_resumed_dataloader`` is the hook that replaces the skipping. This module
imports transformers; ``import reproloader`` does not import this module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, Final

from torch.utils.data import IterableDataset

from reproloader.checkpoint import load_checkpoint, save_checkpoint
from reproloader.config import ReproConfig
from reproloader.distributed import gather_state
from reproloader.exceptions import StateError, StateMismatchError
from reproloader.loader import ReproLoader

try:
    from transformers import Trainer, TrainerState
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
except ModuleNotFoundError as missing:  # pragma: no cover - the integration session has it
    raise ModuleNotFoundError(
        "reproloader.trainer needs transformers, which is not installed: "
        "pip install 'reproloader[transformers]'",
        name=missing.name,
    ) from missing

__all__ = ["LOADER_STATE_NAME", "ReproTrainer"]

LOADER_STATE_NAME: Final = "reproloader_state.pt"
"""The file in each checkpoint folder that holds the training loader's state."""

_TRAINER_INTERNALS: Final = {
    "_save_checkpoint": "(model, trial): writes one checkpoint folder, on every rank",
    "_get_output_dir": "(trial): the folder checkpoint folders go in",
    "_train_batch_size": "the per-process batch size the Trainer's own loader uses",
    "_remove_unused_columns": "(dataset, description): a datasets.Dataset's unused columns",
    "_get_collator_with_removed_columns": "(collator, description): the same, for others",
    "set_initial_training_values": "(args, dataloader): [1] is the update steps per epoch",
    "get_resumed_dataloader": "(dataloader, num_batches): the resumed epoch's loader",
}
"""The Trainer's names ReproTrainer relies on beyond its documented hooks, with what for
(tests/frameworks/test_transformers.py checks each against the installed release)."""

if not hasattr(Trainer, "get_resumed_dataloader"):  # pragma: no cover - version guard
    import transformers

    raise ImportError(
        "reproloader.trainer needs transformers>=5.25 (Trainer.get_resumed_dataloader "
        f"replaces its batch skipping), found transformers {transformers.__version__}: "
        "pip install 'reproloader[transformers]'"
    )


class ReproTrainer(Trainer):  # type: ignore[misc]  # transformers is not type-checked here
    """A ``transformers.Trainer`` that trains from a ReproLoader and resumes it exactly.

    Takes the Trainer's arguments, plus:

    Args:
        loader_config: the loader's :class:`~reproloader.ReproConfig` (or a mapping
            of its fields), e.g. ``{"rng_scope": "sample"}``.

    The loader is :attr:`repro_loader` once training started. Map-style datasets are
    shuffled and split over the processes by the loader itself (``shard=True``);
    an ``IterableDataset`` decides itself which samples each rank and worker reads
    (:func:`reproloader.get_context`). ``train_sampling_strategy`` must be
    ``"random"``: the loader's order is its own.

    Resuming from a checkpoint folder without :data:`LOADER_STATE_NAME` (written by a
    plain Trainer, or before adopting reproloader) raises a :class:`StateError`:
    the batches the Trainer skipped came in another order. Resume such a checkpoint
    with ``TrainingArguments(ignore_data_skip=True)``, which starts its epoch from the
    first batch (the Trainer's meaning of that option); the next checkpoint then
    carries the loader's state.
    """

    def __init__(
        self,
        *args: Any,
        loader_config: ReproConfig | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.loader_config = loader_config
        self.repro_loader: ReproLoader[Any] | None = None
        self._resume_from: str | None = None  # the checkpoint folder of the running train()
        self._resumed_at: tuple[int, int, bool] | None = None  # (epoch, position, finished)

    def train(
        self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        """``Trainer.train``; resuming also loads the loader's state from the checkpoint."""
        if resume_from_checkpoint is True:
            # Resolved here as the Trainer does, to know the folder the loader resumes from.
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir) or True
        self._resume_from = (
            os.fspath(resume_from_checkpoint)
            if isinstance(resume_from_checkpoint, (str, os.PathLike))
            else None
        )
        try:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            self._resume_from = None

    def get_train_dataloader(self) -> ReproLoader[Any]:
        """The training loader: a ReproLoader built from the ``TrainingArguments``."""
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        args = self.args
        if args.train_sampling_strategy != "random":
            raise ValueError(
                f"ReproTrainer: train_sampling_strategy is {args.train_sampling_strategy!r}, "
                "expected 'random' (the ReproLoader orders the data itself); leave "
                "train_sampling_strategy at its default"
            )
        dataset, collate_fn = self._training_data()
        iterable = isinstance(dataset, IterableDataset)
        loader: ReproLoader[Any] = ReproLoader(
            dataset,
            batch_size=self._train_batch_size,
            shuffle=not iterable,
            shard=not iterable,
            collate_fn=collate_fn,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            drop_last=args.dataloader_drop_last,
            multiprocessing_context=args.dataloader_multiprocessing_context,
            prefetch_factor=args.dataloader_prefetch_factor,
            persistent_workers=args.dataloader_persistent_workers,
            in_order=args.dataloader_in_order,
            seed=args.data_seed if args.data_seed is not None else args.seed,
            config=self.loader_config,
        )
        self._resumed_at = None
        if self._resume_from is not None and not args.ignore_data_skip:
            self._load_loader_state(loader, self._resume_from)
        prepared = self.accelerator.prepare(loader)
        if prepared is not loader:  # pragma: no cover - accelerate keeps loaders marked prepared
            raise TypeError(
                f"accelerate's prepare() replaced the ReproLoader with {type(prepared).__name__}; "
                "the installed accelerate does not honour _is_accelerate_prepared"
            )
        self.repro_loader = loader
        return loader  # type: ignore[no-any-return]  # prepared is loader

    def set_initial_training_values(self, args: Any, dataloader: Any) -> Any:
        """``Trainer.set_initial_training_values``; checks a resumed loader against the Trainer.

        The Trainer resumes at ``global_step // steps_per_epoch`` epochs plus
        ``global_step % steps_per_epoch`` times ``gradient_accumulation_steps`` batches;
        the loader's state must be there.
        """
        values = super().set_initial_training_values(args, dataloader)
        loader, resumed, checkpoint = self.repro_loader, self._resumed_at, self._resume_from
        if loader is not None and dataloader is loader and resumed and checkpoint:
            try:
                epoch_length = len(loader)
            except TypeError:  # an iterable dataset without __len__
                epoch_length = -1
            _check_resumed_position(
                checkpoint,
                resumed,
                steps_per_epoch=values[1],
                accumulation=args.gradient_accumulation_steps,
                epoch_length=epoch_length,
            )
        return values

    def get_resumed_dataloader(self, dataloader: Any, num_batches: int) -> Any:
        """The rest of the resumed epoch: the loader, at the saved batch (no skipping)."""
        if dataloader is not self.repro_loader or self._resumed_at is None:
            return super().get_resumed_dataloader(dataloader, num_batches)
        return _RestOfEpoch(self.repro_loader, self._resumed_at[0])

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        # Before the Trainer's own files: a checkpoint folder that has a
        # trainer_state.json has the loader's state too, even after a kill.
        if self.repro_loader is not None:
            state = gather_state(self.repro_loader)  # a collective: every rank calls it
            if self.args.should_save:
                folder = os.path.join(
                    self._get_output_dir(trial=trial),
                    f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}",
                )
                os.makedirs(folder, exist_ok=True)
                save_checkpoint(state, os.path.join(folder, LOADER_STATE_NAME))
        super()._save_checkpoint(model, trial)

    def _training_data(self) -> tuple[Any, Any]:
        # What the Trainer's own loader gets: unused columns of a datasets.Dataset
        # removed, or the collator wrapped to remove them.
        dataset, collate_fn = self.train_dataset, self.data_collator
        try:
            import datasets
        except ModuleNotFoundError:
            datasets = None
        if datasets is not None and isinstance(dataset, datasets.Dataset):
            dataset = self._remove_unused_columns(dataset, description="training")
        else:
            collate_fn = self._get_collator_with_removed_columns(collate_fn, description="training")
        return dataset, collate_fn

    def _load_loader_state(self, loader: ReproLoader[Any], checkpoint: str) -> None:
        path = os.path.join(checkpoint, LOADER_STATE_NAME)
        if not os.path.isfile(path):
            raise StateError(
                f"cannot resume the data order from {checkpoint}: it has no {LOADER_STATE_NAME} "
                "(a plain Trainer wrote it, or a run before reproloader), so the batches "
                "already trained on came in another order; resume it once with "
                "TrainingArguments(ignore_data_skip=True), which starts that epoch from its "
                "first batch, and the next checkpoint will carry the loader's state"
            )
        loader.load_state_dict(load_checkpoint(path))
        state = loader.state_dict()  # this rank's part, as loaded
        self._resumed_at = (state["epoch"], state["position"], state["finished"])


def _check_resumed_position(
    checkpoint: str,
    resumed: tuple[int, int, bool],
    *,
    steps_per_epoch: int,
    accumulation: int,
    epoch_length: int,
) -> None:
    """Refuse a loader state that is not where the checkpoint's Trainer state resumes."""
    saved = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
    epoch, steps = divmod(saved.global_step, steps_per_epoch)
    batches = steps * accumulation
    loaded_epoch, position, finished = resumed
    if (loaded_epoch, position) == (epoch, batches):
        return
    at_end = finished or position == epoch_length
    if batches == 0 and loaded_epoch == epoch - 1 and at_end:  # the end of the epoch before
        return
    raise StateMismatchError(
        f"cannot resume from {checkpoint}: its {LOADER_STATE_NAME} is after "
        f"{position} batches of epoch {loaded_epoch}, its trainer_state.json (global step "
        f"{saved.global_step}) after {batches} batches of epoch {epoch}; the two files "
        "come from different checkpoints: resume from a checkpoint folder ReproTrainer "
        "wrote whole",
        {"epoch": (loaded_epoch, epoch), "position": (position, batches)},
    )


class _RestOfEpoch:
    """The loader resumed mid-epoch, as the Trainer's ``_run_epoch`` uses it.

    The Trainer calls ``set_epoch(epoch)`` on what ``get_resumed_dataloader`` returns;
    on the loader that would restart the epoch from its first batch. Here it checks
    that the Trainer resumes the epoch the state holds, and keeps the position.
    """

    def __init__(self, loader: ReproLoader[Any], epoch: int) -> None:
        self.loader = loader
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            raise StateMismatchError(
                f"cannot resume: the loader's state is in epoch {self.epoch}, the Trainer "
                f"resumes epoch {epoch}; give the dataset a __len__ (the Trainer counts "
                "epochs only for loaders with a length)",
                {"epoch": (self.epoch, epoch)},
            )

    def __iter__(self) -> Iterator[Any]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)
