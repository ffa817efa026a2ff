"""QAT fine-tuning under a tf.distribute strategy: with labels (cross-entropy) or label-free (logit KL against
the float model as teacher).

Strategies: the default (one device), ``MirroredStrategy`` over local devices (GPUs, or N logical CPU devices),
and ``MultiWorkerMirroredStrategy`` configured by ``TF_CONFIG``. The batch size is global; each replica gets its
share, gradients are summed across replicas, and the folded BatchNorm statistics are all-reduced before the
freeze (SyncBN), so N replicas compute what one device would on the same global batch. The divergence of each
replica's local BN statistics from the synchronized ones is measured at every step before the freeze.

``train_isolated`` runs the compiled training steps in a child process (``edgeprep.isolation``), so a native
crash in TensorFlow is one line naming the step instead of a dead CLI; ``train`` runs them in this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprep import isolation
from edgeprep._util import quiet
from edgeprep.config.quantize import QATConfig
from edgeprep.data import Dataset
from edgeprep.errors import ConfigError

STRATEGY_NAMES = {"CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy",
                  "_DefaultDistributionStrategy": "default (one device)"}


def _cluster() -> dict | None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
        workers = cfg["cluster"]["worker"]
        task = cfg["task"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"TF_CONFIG is not a valid cluster description ({exc})",
                          'set TF_CONFIG to {"cluster": {"worker": [...]}, "task": {"type": "worker", "index": N}}')
    return {"workers": len(workers), "index": int(task.get("index", 0)), "type": task.get("type", "worker")}


def make_strategy(kind: str = "auto", replicas: int = 1):
    """Create the strategy *first*, before any other TensorFlow work (multi-worker collectives require it).

    ``auto``: multi-worker when TF_CONFIG names more than one worker, mirrored over ``replicas`` local devices
    when ``replicas`` > 1, else the default strategy. On a machine without GPUs, mirrored replicas are logical
    CPU devices (useful to exercise the distributed path; no speed-up).

    This is where a QAT command first imports TensorFlow, so its import-time logging (device discovery, CUDA,
    oneDNN) is silenced here, as ``edgeprep.models`` silences it for the other commands.
    """
    with quiet():
        return _make_strategy(kind, replicas)


def _make_strategy(kind: str, replicas: int):
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):  # take GPU memory as needed: a training child needs its share
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):
            pass  # already initialised
    cluster = _cluster()
    if kind == "auto":
        kind = "multiworker" if cluster and cluster["workers"] > 1 else ("mirrored" if replicas > 1 else "none")
    if kind == "multiworker":
        if cluster is None:
            raise ConfigError("--strategy multiworker needs TF_CONFIG", "set TF_CONFIG on every worker")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if len(gpus) >= replicas:
            return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(replicas)])
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
        except RuntimeError:
            pass  # already initialised (e.g. configured by the caller); use the logical devices that exist
        devices = [d.name for d in tf.config.list_logical_devices("CPU")][:replicas]
        if len(devices) < replicas:
            raise ConfigError(f"{replicas} replicas asked for but only {len(devices)} CPU device(s) exist",
                              "configure logical devices before TensorFlow starts, or use fewer replicas")
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type in ("chief", None) or (resolver.task_type == "worker" and resolver.task_id == 0)


@dataclass
class TrainResult:
    weights: list
    state: dict
    steps: int
    freeze_step: int
    replicas: int
    workers: int
    strategy: str
    objective: str
    loss_first: float
    loss_last: float
    seconds: float
    bn_divergence: dict = field(default_factory=dict)
    moving_stats_replica_spread: float = 0.0
    process: str = "main"           # "child": trained in a child process (train_isolated)
    wall_seconds: float = 0.0       # for a child: from the call to its result (start-up left over included)

    def describe(self) -> dict:
        return {"steps": self.steps, "bn_frozen_at_step": self.freeze_step, "replicas": self.replicas,
                "workers": self.workers, "strategy": self.strategy, "objective": self.objective,
                "loss_first": round(self.loss_first, 6), "loss_last": round(self.loss_last, 6),
                "seconds": round(self.seconds, 2), "bn_divergence": self.bn_divergence,
                "moving_stats_replica_spread": self.moving_stats_replica_spread, "process": self.process,
                **({"wall_seconds": round(self.wall_seconds, 2)} if self.wall_seconds else {})}


def teacher_logits(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The float model's logits (pre-softmax when the model ends in a softmax), for distillation."""
    from edgeprep.qat.model import Mode, QATModel

    probe = QATModel(model, ranges={}, _calibrating=True)
    return np.concatenate([np.asarray(probe(x[i:i + batch], Mode(quantize=False))[1])
                           for i in range(0, len(x), batch)]).astype(np.float32)


def training_arrays(data: Dataset, distill: bool, teacher=None, samples: int | None = None):
    """The training inputs and targets: labels, or the teacher's logits for distillation."""
    x, y = data.arrays(samples)
    return x, (teacher_logits(teacher, x) if distill else y.astype(np.int64))


def train(model_path: Path, data: Dataset, cfg: QATConfig, ranges: dict, strategy, distill: bool,
          teacher=None, samples: int | None = None, progress=None) -> TrainResult:
    """Fine-tune a fresh copy of ``model_path`` with fake quantization, in this process; returns weights and
    quantizer state."""
    x, targets = training_arrays(data, distill, teacher, samples)
    return _fit(model_path, x, targets, cfg, ranges, strategy, distill, progress)


# strategies a child process can rebuild from (kind, replicas); others (multi-worker: collectives bound to this
# process's server at TF_CONFIG's address) train in this process
_CHILD_KINDS = {"_DefaultDistributionStrategy": "none", "MirroredStrategy": "mirrored"}
_PRELOAD = ("tensorflow", "keras", "edgeprep.qat.model")


def training_process(strategy):
    """A child process for ``train_isolated``, started now so that it imports TensorFlow while this process
    calibrates (a context manager: leaving it stops the child); ``nullcontext(None)`` where training stays in this
    process (a multi-worker strategy)."""
    if type(strategy).__name__ not in _CHILD_KINDS:
        return contextlib.nullcontext(None)
    return isolation.Child("QAT training", _PRELOAD)


def train_isolated(model_path: Path, data: Dataset, cfg: QATConfig, ranges: dict, strategy, distill: bool,
                   workdir: Path, teacher=None, samples: int | None = None, progress=None,
                   process: isolation.Child | None = None) -> TrainResult:
    """``train`` with the compiled training steps in a child process (``process``, or one started now): a native
    crash there (SIGSEGV, SIGABRT) raises ``ToolchainCrash`` naming the step. The training arrays go to the child
    as ``.npy`` files in ``workdir``. A multi-worker strategy trains in this process (see ``_CHILD_KINDS``)."""
    kind = _CHILD_KINDS.get(type(strategy).__name__)
    if kind is None:
        return train(model_path, data, cfg, ranges, strategy, distill, teacher, samples, progress)
    x, targets = training_arrays(data, distill, teacher, samples)
    paths = Path(workdir) / "qat-x.npy", Path(workdir) / "qat-targets.npy"
    np.save(paths[0], x)
    np.save(paths[1], targets)
    del x, targets
    start = time.perf_counter()
    try:
        with (process or isolation.Child("QAT training", _PRELOAD)) as child:
            result = child.call(_fit_in_child, str(model_path), str(paths[0]), str(paths[1]), cfg, ranges, kind,
                                strategy.num_replicas_in_sync, distill, progress=progress)
    finally:
        for p in paths:
            p.unlink(missing_ok=True)
    return dataclasses.replace(result, process="child", wall_seconds=time.perf_counter() - start)


def _fit_in_child(model_path: str, x_path: str, targets_path: str, cfg: QATConfig, ranges: dict, kind: str,
                  replicas: int, distill: bool, progress=None) -> TrainResult:
    strategy = make_strategy(kind, replicas)  # first, before any other TensorFlow work
    x, targets = np.load(x_path, mmap_mode="r"), np.load(targets_path, mmap_mode="r")
    return _fit(Path(model_path), x, targets, cfg, ranges, strategy, distill, progress)


def _fit(model_path: Path, x: np.ndarray, targets: np.ndarray, cfg: QATConfig, ranges: dict, strategy,
         distill: bool, progress=None) -> TrainResult:
    import keras
    import tensorflow as tf

    from edgeprep.qat.model import Mode, QATModel

    isolation.phase("while loading the model for training")
    replicas = strategy.num_replicas_in_sync
    cluster = _cluster()
    batch = max(cfg.batch_size - cfg.batch_size % replicas, replicas)
    steps = cfg.steps or max(1, cfg.epochs * (len(x) // batch))
    keras.utils.set_random_seed(cfg.seed)
    with strategy.scope():
        student = keras.models.load_model(model_path, compile=False)
        qat = QATModel(student, ranges, cfg.ema_decay, track_ranges=cfg.start != "ptq")
        optimizer = keras.optimizers.Adam(cfg.learning_rate)
        trainable = student.trainable_variables
        optimizer.build(trainable)
    ds = tf.data.Dataset.from_tensor_slices((x, targets)).shuffle(len(x), seed=cfg.seed).repeat()
    ds = ds.batch(batch, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    it = iter(strategy.experimental_distribute_dataset(ds.with_options(options)))
    temperature = cfg.temperature
    folded = [s.fold.name for s in qat.steps if s.fold is not None]

    def loss_fn(logits, t):
        if distill:
            p = tf.nn.softmax(t / temperature)
            logq = tf.nn.log_softmax(logits / temperature)
            per = tf.reduce_sum(p * (tf.math.log(p + 1e-12) - logq), axis=-1) * temperature ** 2
        else:
            per = tf.keras.losses.sparse_categorical_crossentropy(t, logits, from_logits=True)
        return tf.reduce_sum(per) / batch

    def make_step(batch_stats: bool):
        def replica_step(xb, tb):
            with tf.GradientTape() as tape:
                _, logits, div = qat(xb, Mode(training=True, batch_stats=batch_stats))
                loss = loss_fn(logits, tb)
            grads = tape.gradient(loss, trainable)
            optimizer.apply_gradients(zip(grads, trainable))
            div = tf.stack([div[n] for n in folded]) if (batch_stats and folded) else tf.zeros((0, 2))
            return loss, div[None]

        @tf.function(autograph=False)
        def step(inputs):
            loss, div = strategy.run(replica_step, args=inputs)
            return strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None), div
        return step

    steps_bn, steps_frozen = make_step(True), make_step(False)
    freeze = min(cfg.freeze_bn_steps, steps)
    div_max = np.zeros((len(folded), 2))
    div_sum = np.zeros((len(folded), 2))
    losses = []
    start = time.perf_counter()
    for i in range(steps):
        isolation.phase("in the first training step" if i == 0 else f"in training step {i + 1} of {steps}")
        loss, div = (steps_bn if i < freeze else steps_frozen)(next(it))
        losses.append(float(loss))
        if i < freeze and folded:
            d = np.concatenate([np.asarray(v) for v in strategy.experimental_local_results(div)])
            div_max = np.maximum(div_max, d.max(axis=0))
            div_sum += d.mean(axis=0)
        if progress:
            progress(1)
    isolation.phase("after the last training step")
    spread = 0.0
    for name in folded:
        for key in ("mean", "var"):
            local = [np.asarray(v) for v in strategy.experimental_local_results(qat.vars[f"{name}:{key}"])]
            spread = max(spread, max(float(np.max(np.abs(v - local[0]))) for v in local))
    divergence = {}
    if freeze and folded:
        for k, name in enumerate(folded):
            divergence[name] = {"max_mean_shift": round(float(div_max[k, 0]), 5),
                                "avg_mean_shift": round(float(div_sum[k, 0] / freeze), 5),
                                "max_std_ratio_dev": round(float(div_max[k, 1]), 5)}
    return TrainResult(
        weights=[np.asarray(w) for w in student.get_weights()], state=qat.state_numpy(), steps=steps,
        freeze_step=freeze, replicas=replicas, workers=cluster["workers"] if cluster else 1,
        strategy=STRATEGY_NAMES.get(type(strategy).__name__, type(strategy).__name__),
        objective="distillation (logit KL)" if distill else "labels",
        loss_first=losses[0], loss_last=float(np.mean(losses[-max(1, min(10, len(losses))):])),
        seconds=time.perf_counter() - start, bn_divergence=divergence,
        moving_stats_replica_spread=spread)


def steps_for(cfg: QATConfig, samples: int, replicas: int) -> int:
    batch = max(cfg.batch_size - cfg.batch_size % replicas, replicas)
    return cfg.steps or max(1, cfg.epochs * math.floor(samples / batch))
