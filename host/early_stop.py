"""Early stopping on validation accuracy, a tie broken by the lower validation loss.

Keras's ``EarlyStopping(monitor="val_accuracy")`` keeps the *first* epoch of the best accuracy.
A small validation set (a folder of a hundred photos keeps a few dozen) reaches 100 % long
before the model converges, so that kept a half-trained model: in a run of the loop test, 19
validation images tied at 100 % from epoch 8 (loss 0.38) while the loss went on to 0.29, and in
a CI run the model so kept got one class's fresh frames right 23 times in 30. Here an epoch is
better when its accuracy is higher, or equal with a lower loss; patience counts epochs without such an improvement, and the
best epoch's weights are restored when training ends. On a large validation set exact ties are
rare, so this seldom differs from Keras's rule.
"""

from __future__ import annotations

import math
from typing import Any, Optional


def is_better(acc: float, loss: float, best: Optional[tuple[float, float]]) -> bool:
    """Whether (``acc``, ``loss``) beats ``best``: higher accuracy, or the same with lower loss."""
    if best is None:
        return True
    return acc > best[0] or (acc == best[0] and loss < best[1])


def callback(patience: int, start_from_epoch: int = 0) -> Any:
    """A Keras callback: stop after ``patience`` epochs without a better epoch, restore the best one.

    Epochs before ``start_from_epoch`` (zero-based) never count towards patience, but a best epoch
    among them is still kept (Keras's ``EarlyStopping`` argument of that name ignores them altogether).
    """
    import keras

    class BestOnValidation(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.best: Optional[tuple[float, float]] = None
            self.best_epoch = -1  # zero-based, as Keras counts
            self.best_weights: Optional[list[Any]] = None
            self.wait = 0

        def on_epoch_end(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
            logs = logs or {}
            if "val_accuracy" not in logs:
                return
            acc, loss = float(logs["val_accuracy"]), float(logs.get("val_loss", math.inf))
            if math.isnan(loss):  # a diverged epoch's loss ranks last
                loss = math.inf
            if is_better(acc, loss, self.best):
                self.best, self.best_epoch, self.wait = (acc, loss), epoch, 0
                self.best_weights = self.model.get_weights()
                return
            if epoch < start_from_epoch:
                return
            self.wait += 1
            if self.wait >= patience:
                self.model.stop_training = True

        def on_train_end(self, logs: Optional[dict[str, Any]] = None) -> None:
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return BestOnValidation()
