"""Training: one loop for every model, its options, state, selection and schedules."""

from genzoo.train.config import (
    PRECISIONS,
    TrainConfig,
    train_config,
)
from genzoo.train.loop import (
    Trainer,
    TrainingDiverged,
    train,
)
from genzoo.train.schedules import (
    LR_SCHEDULES,
    lr_factor,
)
from genzoo.train.selection import (
    SELECTION_FILE,
    Selection,
    check_scorable,
)
from genzoo.train.state import (
    OutputExists,
    prepare_output_dir,
    read_train_state,
    write_train_state,
)

__all__ = [
    "LR_SCHEDULES",
    "OutputExists",
    "PRECISIONS",
    "SELECTION_FILE",
    "Selection",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "check_scorable",
    "lr_factor",
    "prepare_output_dir",
    "read_train_state",
    "train",
    "train_config",
    "write_train_state",
]
