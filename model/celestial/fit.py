"""Training: the guide-recipe baseline and the served model (seeded; TensorFlow op determinism is set by
`determinism`, which the entry points call before anything else touches TensorFlow)."""

from __future__ import annotations

import numpy as np

from .config import Guide, Served
from .networks import guide_model, served_model
from .preprocess import Preprocessing


def determinism(intra_threads: int = 2) -> None:
    """Deterministic TensorFlow ops on a fixed number of threads: a retrain reproduces the weights bit for bit."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_intra_op_parallelism_threads(intra_threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def train_guide(guide: Guide, x_tr, y_tr, x_va, y_va, classes):
    import keras

    keras.utils.set_random_seed(guide.seed)
    model = guide_model(guide, len(classes))
    model.compile(
        optimizer=keras.optimizers.Adam(guide.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")],
    )
    hist = model.fit(
        x_tr, y_tr, batch_size=guide.batch, epochs=guide.epochs, shuffle=True, validation_data=(x_va, y_va), verbose=2
    )
    return model, hist.history


def _targets(served: Served, y_pool, n_out: int, n_classes: int):
    """Label-smoothed one-hot targets for the pool, uniform ones for the outliers, and the sample weights."""
    ls = served.label_smoothing
    t_in = np.full((len(y_pool), n_classes), ls / n_classes, np.float32)
    t_in[np.arange(len(y_pool)), y_pool] += 1 - ls
    t = np.concatenate([t_in, np.full((n_out, n_classes), 1 / n_classes, np.float32)])
    w = np.concatenate([np.ones(len(y_pool), np.float32), np.full(n_out, served.oe_weight, np.float32)])
    return t, w


def train_served(served: Served, px_pool, y_pool, px_out, n_classes: int, pre: Preprocessing, x_va=None, y_va=None):
    """Train the served model on the augmented pool (HWC uint8) plus synthetic outliers (outlier
    exposure: their target is the uniform distribution over the classes, weight `served.oe_weight`)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(served.seed)
    scale, mean, std = pre.constants()

    def norm(px):
        return (px.astype(np.float32) * scale - mean) / std  # NHWC, the same float32 formula as to_tensor

    t, w = _targets(served, y_pool, len(px_out), n_classes)
    x = np.concatenate([norm(px_pool), norm(px_out)]) if len(px_out) else norm(px_pool)
    n = len(x)
    ds = (
        tf.data.Dataset.from_tensor_slices((x, t, w))
        .shuffle(n, seed=served.seed, reshuffle_each_iteration=True)
        .batch(served.batch)
        .prefetch(2)
    )
    steps = served.epochs * int(np.ceil(n / served.batch))
    schedule = keras.optimizers.schedules.CosineDecay(
        served.lr * 0.1, steps, warmup_target=served.lr, warmup_steps=steps // 20
    )
    model = served_model(served, n_classes, pre)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule, use_ema=served.ema > 0, ema_momentum=served.ema or 0.99),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy(name="acc")],
    )
    val = None
    if x_va is not None:
        val = (norm(x_va), np.eye(n_classes, dtype=np.float32)[y_va])
    hist = model.fit(ds, epochs=served.epochs, validation_data=val, verbose=2)
    return model, hist.history
