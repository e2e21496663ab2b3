"""Training on several machines: TensorFlow's own ``MultiWorkerMirroredStrategy``, configured by ``TF_CONFIG``.

Every worker runs the same command with its own ``TF_CONFIG`` (as TensorFlow documents it)::

    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
                "task": {"type": "worker", "index": 0}}'

Worker 0 is the chief. Training is synchronous data parallelism: each step every worker takes
its share of the same global batch (``TrainConfig.batch_size``, so the recipe and its schedule
do not change with the number of workers) and the gradients are all-reduced over the network.
The chief writes the SavedModel; the other workers save into temporary folders that they
delete, as TensorFlow's multi-worker tutorial does.

The strategy must exist before TensorFlow runs its first op (it configures the collective ops
of the process), so callers create it first, before loading any data.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable

from host.errors import ConfigError

STRATEGIES = ("default", "multi-worker")
TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
# A collective that waits longer than this for a peer fails instead of hanging for ever.
COLLECTIVE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Task:
    """Which worker this process is, read from TF_CONFIG."""

    index: int
    workers: tuple[str, ...]

    @property
    def is_chief(self) -> bool:
        """Worker 0 writes the outputs (there is no separate ``chief`` task in this setup)."""
        return self.index == 0

    @property
    def count(self) -> int:
        """How many workers train together."""
        return len(self.workers)


def read_tf_config(environ: Any = None) -> Task:
    """Parse and check ``TF_CONFIG``; a ConfigError says in one line what is wrong and what to set."""
    env = os.environ if environ is None else environ
    text = env.get("TF_CONFIG")
    if not text:
        raise ConfigError(f"--strategy multi-worker needs TF_CONFIG in the environment of every worker, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}'")
    try:
        cfg = json.loads(text)
        workers = tuple(str(w) for w in cfg["cluster"]["worker"])
        task_type, index = cfg["task"]["type"], int(cfg["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"TF_CONFIG is not of the form {TF_CONFIG_EXAMPLE} ({type(e).__name__}: {e}). Got: {text!r}") from None
    other = sorted(set(cfg["cluster"]) - {"worker"})
    if other:
        raise ConfigError(f"TF_CONFIG: this trainer uses 'worker' tasks only (worker 0 is the chief). Got cluster jobs: {other}")
    if task_type != "worker":
        raise ConfigError(f"TF_CONFIG: task.type must be 'worker'. Got: {task_type!r}")
    if not workers:
        raise ConfigError("TF_CONFIG: cluster.worker lists no workers")
    if not 0 <= index < len(workers):
        raise ConfigError(f"TF_CONFIG: task.index must be 0..{len(workers) - 1} for {len(workers)} workers. Got: {index}")
    bad = [w for w in workers if ":" not in w or not w.rsplit(":", 1)[1].isdigit()]
    if bad:
        raise ConfigError(f"TF_CONFIG: every worker is host:port. Got: {bad}")
    return Task(index, workers)


def multi_worker_strategy(timeout_s: float = COLLECTIVE_TIMEOUT_S) -> tuple[Any, Task]:
    """The strategy for this process and its task; call before any other TensorFlow work."""
    task = read_tf_config()
    import tensorflow as tf

    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=timeout_s, implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as e:  # e.g. TensorFlow already ran an op in this process
        raise ConfigError(f"cannot start multi-worker training: {e}") from e
    return strategy, task


def shard_options() -> Any:
    """tf.data options for a multi-worker input: every worker builds the same batches and keeps its share."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def in_multi_worker() -> bool:
    """True inside the scope of a MultiWorkerMirroredStrategy with more than one worker."""
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return False
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return int(strategy.cluster_resolver.cluster_spec().num_tasks("worker") or 1) > 1


def keras_fit_workarounds(model: Any) -> None:
    """Let Keras 3's ``Model.fit`` run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Keras 3 (up to 3.15 at least) breaks twice there: before the first step it all-reduces a
    whole input batch across workers just to learn its shapes, which TensorFlow's collective
    reduce refuses for a per-replica value; and each step it reduces the scalar metrics with
    ``axis=0``, which a 0-d tensor does not have. The first is replaced on this model by a build
    from the dataset's ``element_spec`` (shapes and dtypes, all the build uses), the second by
    a reduce over the right axis (None for scalars). Everything else is Keras's own code.

    The build must not draw a batch: that opens one more iterator over the dataset, and each
    iterator reshuffles (``reshuffle_each_iteration``) and redraws the augmentation seeds, so
    every worker's first epoch would be the one-worker run's second one.
    """
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    strategy = model.distribute_strategy

    def local_batch(value: Any) -> Any:
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def symbolic_build(iterator: Any = None, data_batch: Any = None) -> None:
        if data_batch is None and iterator is not None:
            adapter = getattr(iterator, "data_adapter", None)
            if adapter is not None and hasattr(adapter, "get_tf_dataset"):
                data_batch = adapter.get_tf_dataset().element_spec  # TensorSpecs: shape and dtype, no data drawn
            else:  # not a tf.data input (train() always passes one): Keras's way, one batch
                for _, _, it in iterator:
                    data_batch = tree.map_structure(local_batch, next(it))
                    break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = symbolic_build
    if getattr(tf_trainer.reduce_per_replica, "_edgekit_fixed", False):
        return
    keras_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=0 if v.shape.rank else None), values)
        return keras_reduce(values, strategy, reduction)

    reduce_per_replica._edgekit_fixed = True  # type: ignore[attr-defined]
    tf_trainer.reduce_per_replica = reduce_per_replica


def global_batch_dropout(model: Any) -> Callable[[], None]:
    """Make every Dropout layer draw the mask of the whole global batch and keep this replica's rows.

    Keras draws a dropout mask for the batch a layer sees; on a worker that is its share of the
    global batch, so every worker got the first rows of the mask one worker would draw (the
    same seed on every worker), and the workers' steps were not one worker's steps. With the
    global batch's mask (the same seed and shape one worker uses) and this replica's rows of it
    (worker ``i`` holds rows ``i * share`` on, as the input distribution splits the batch), two
    workers take one worker's training step exactly, up to float rounding. The shares are taken
    as equal (a last global batch that the workers cannot split evenly gets a valid but
    different mask). Layers with a ``noise_shape`` keep Keras's own call. Returns a function
    that puts Keras's own ``call`` back (do so before saving: the saved model is one worker's).
    """
    import keras
    import tensorflow as tf

    layers = [layer for layer in model._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.Dropout) and layer.noise_shape is None]

    def patched(layer: Any) -> Callable[..., Any]:
        keras_call = layer.call

        def call(inputs: Any, training: Any = False) -> Any:
            ctx = tf.distribute.get_replica_context()
            replicas = 1 if ctx is None else ctx.num_replicas_in_sync
            if not (training and layer.rate > 0) or replicas == 1 or layer.rate >= 1.0:
                return keras_call(inputs, training=training)
            share = tf.shape(inputs)[0]
            whole = tf.concat([[share * replicas], tf.shape(inputs)[1:]], axis=0)
            mask = keras.random.dropout(tf.ones(whole, inputs.dtype), layer.rate, seed=layer.seed_generator)
            start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * share
            return inputs * mask[start:start + share]

        return call

    for layer in layers:
        object.__setattr__(layer, "call", patched(layer))  # this instance only, past Keras's attribute tracking

    def restore() -> None:
        for layer in layers:
            if "call" in vars(layer):
                object.__delattr__(layer, "call")

    return restore


def synchronize_batch_norm(model: Any) -> Callable[[], None]:
    """Make every BatchNormalization layer use the global batch's statistics (Keras's ``synchronized``).

    Each worker sees only its share of a batch; with per-worker statistics the same recipe would
    train a different model (smaller, noisier batches for batch norm). With them all-reduced it
    trains the one-worker model, up to float rounding. Call before the first training step; it
    returns a function that switches the layers back, to call once fitting is done: the setting
    is part of the layer's config, and the saved model must be the one-worker model
    (``synchronized: false``), whatever strategy loads it.
    """
    import keras

    switched = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            switched.append(layer)

    def restore() -> None:
        for layer in switched:
            layer.synchronized = False

    return restore


def check_same_on_every_worker(what: str, value: float) -> None:
    """Refuse to train when the workers disagree on ``value`` (e.g. the number of images, the precision).

    The workers would otherwise hang at the first step one of them does not take, or average
    gradients of different computations. Sum and sum of squares over the workers decide it.
    """
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    n = strategy.num_replicas_in_sync
    sums = strategy.reduce("SUM", strategy.run(lambda: tf.constant([value, value * value], tf.float64)), axis=None).numpy()
    total, squares = float(sums[0]), float(sums[1])
    if abs(total * total - n * squares) > 1e-6 * max(1.0, squares * n):
        raise ConfigError(
            f"the {n} workers disagree on {what} (this worker: {value:g}); give every worker the same data, "
            "code and flags (e.g. --precision float32 on machines with and without bf16 units)"
        )


def barrier() -> None:
    """Wait until every worker gets here (an all-reduce of one number), so none leaves while others still save."""
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
