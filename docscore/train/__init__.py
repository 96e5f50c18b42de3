"""Training: a Hugging Face body + docscore head, fine-tuned on ``transformers.Trainer``.

- :mod:`~docscore.train.arguments`: the options (one dataclass, CLI and API), torch-free.
- :mod:`~docscore.train.dataset`: Arrow rows tokenised per batch, targets, class weights.
- :mod:`~docscore.train.trainer`: the ``Trainer`` subclass (loss, two learning rates) and the argument mapping.
- :mod:`~docscore.train.checkpoints`: resume checkpoints under ``OUTPUT/_training`` and the final publish.
- :mod:`~docscore.train.metrics`: macro-F1, per-class report, confusion matrix, the training curve.
- :mod:`~docscore.train.run`: ``train(args)``.
"""

from docscore.train.arguments import TrainingArguments
from docscore.train.run import EpochMetrics, Evaluation, TrainResult, train

__all__ = ["EpochMetrics", "Evaluation", "TrainResult", "TrainingArguments", "train"]
