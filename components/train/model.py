"""The CNN and its input pipeline. Keras objects only; imported lazily by the executor.

The model takes raw uint8 images of the dataset's shape ((N, H, W) grayscale or (N, H, W, 3) colour),
answers one probability per class, and applies the normalization constants that preprocess measured
inside the graph, so serving never has to repeat (or get wrong) the scaling.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mnist_mlops.model_interface import ModelInterface

MAX_SHIFT_PIXELS = 2
"""Augmentation: each training image is moved by up to this many pixels in x and y."""
HIDDEN_UNITS = 128
"""Width of the dense layer between the convolutions and the class logits."""


def build_model(interface: ModelInterface, mean: float, std: float) -> keras.Model:
    """The keras.io MNIST convnet's two conv blocks, then a hidden dense layer between two dropouts: the
    hidden layer is what takes MNIST test accuracy from 99.4 % to 99.5 %, for a little more cost per
    image (most of it stays in the convolutions)."""
    images = keras.Input(interface.image_shape, dtype="uint8", name="images")
    # Rescaled before the channel axis is added: ONNX Runtime applies a scalar to a [N, 28, 28, 1] tensor
    # ~90x slower than to the same [N, 28, 28] one (17% of an exported model's call); same numbers.
    x = keras.layers.Rescaling(1.0 / (255.0 * std), offset=-mean / std)(images)
    x = keras.layers.Reshape((*interface.image_shape[:2], interface.channels))(x)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.Dense(HIDDEN_UNITS, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    logits = keras.layers.Dense(interface.class_count, name="logits")(x)
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    return keras.Model(images, probabilities, name="mnist_cnn")


def shift_images(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Move each image by a random whole number of pixels (stateless: the same seed, the same shifts);
    `images` is uint8 (N, H, W) or (N, H, W, C)."""
    grayscale = images.shape.rank == 3
    count = tf.shape(images)[0]
    shifts = tf.round(
        tf.random.stateless_uniform((count, 2), seed, -MAX_SHIFT_PIXELS - 0.49, MAX_SHIFT_PIXELS + 0.49)
    )
    ones, zeros = tf.ones((count, 1)), tf.zeros((count, 1))
    transforms = tf.concat([ones, zeros, shifts[:, :1], zeros, ones, shifts[:, 1:], zeros, zeros], axis=1)
    moved = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images[..., None] if grayscale else images, tf.float32),
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        interpolation="NEAREST",
        fill_mode="CONSTANT",
        fill_value=0.0,
    )
    return tf.cast(moved[..., 0] if grayscale else moved, tf.uint8)


def training_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """Shuffled each epoch (seeded), batched, prefetched; sharded by data under a multi-worker strategy."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
    dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=True).prefetch(2)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return dataset.with_options(options)
