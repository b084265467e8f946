"""The CNN and the augmentation that makes it robust to canvas drawings.

The network keeps the original design (convolutions with pooling, dropout, dense
layers), sized so that a full run fits in ten minutes on two CPU cores: 5x5
convolutions see a whole stroke width at once, and the one dense layer is small.

Input contract (also written into every manifest): a batch of 28x28x1 float32
images, white ink on black, 0..255, digit centred by centre of mass as in MNIST.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers

INPUT_SPEC = "float32 (n, 28, 28, 1), white ink on black, 0..255, MNIST-centred"


def build(dropout: float = 0.4, classes: int = 10) -> keras.Model:
    """classes: 10 digits, or 11 with a last not-a-digit class (models/outputs.py)."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Rescaling(1 / 255),
            layers.Conv2D(32, 5, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 5, activation="relu"),
            layers.MaxPooling2D(),
            layers.Dropout(dropout / 2),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(dropout),
            layers.Dense(classes, activation="softmax"),
        ],
        name="digits_cnn",
    )


# Stroke thickness, as (probability, kernel): 0 erodes by one pixel, 1 leaves the
# strokes alone, k > 1 dilates with a k x k window. Canvas brushes are thick: a small
# digit drawn with a 20 px brush ends up with 5-6 px strokes in the 20 px box, where
# MNIST's are about 2 px.
THICKNESS = ((0.10, 0), (0.35, 1), (0.20, 2), (0.15, 3), (0.12, 4), (0.08, 5))


def augment(
    images: tf.Tensor,
    rotate_deg: float = 12.0,
    scale: float = 0.12,
    shear: float = 0.15,
    shift_px: float = 2.0,
) -> tf.Tensor:
    """Randomly distort a batch (n, 28, 28, 1) of float images, as people draw.

    Plain TensorFlow ops, so it always applies (unlike Keras' random layers,
    which are a no-op outside ``training=True``). One affine warp per image
    (rotation, scale, shear, shift: a single interpolation), then stroke
    thickness (THICKNESS). A dilated digit is first shrunk by as much as the
    dilation grows it, so that it still fits the 20 px box, as preprocessing
    would make it.
    """
    n = tf.shape(images)[0]

    def uniform(limit):
        return tf.random.uniform([n], -limit, limit)

    probs = tf.constant([p for p, _ in THICKNESS])
    kernels = [k for _, k in THICKNESS]
    choice = tf.random.categorical(tf.math.log(probs)[None, :], n)[0]
    grow = tf.gather(tf.constant([max(k - 1, 0) for k in kernels], tf.float32), choice)

    angle = uniform(math.radians(rotate_deg))
    zoom = (1.0 + uniform(scale)) * 20.0 / (20.0 + grow)
    sh = uniform(shear)
    tx, ty = uniform(shift_px), uniform(shift_px)
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # Output->input mapping about the image centre (13.5, 13.5).
    a0, a1 = cos, -sin + sh * cos
    b0, b1 = sin, cos + sh * sin
    c = 13.5
    a2 = c - a0 * c - a1 * c - tx
    b2 = c - b0 * c - b1 * c - ty
    zeros = tf.zeros([n])
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.constant([28, 28]),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    # Each image goes through its own kernel only (partition, filter, stitch back).
    # dilation2d with a flat kernel is a max filter, five times faster on CPU than a
    # stride-1 max_pool2d.
    choice = tf.cast(choice, tf.int32)
    parts = tf.dynamic_partition(warped, choice, len(kernels))
    indices = tf.dynamic_partition(tf.range(n), choice, len(kernels))
    shaped = []
    for part, k in zip(parts, kernels, strict=True):
        if k == 0:
            part = tf.nn.erosion2d(part, tf.zeros([2, 2, 1]), [1, 1, 1, 1], "SAME", "NHWC",
                                   [1, 1, 1, 1])
        elif k > 1:
            part = tf.nn.dilation2d(part, tf.zeros([k, k, 1]), [1, 1, 1, 1], "SAME", "NHWC",
                                    [1, 1, 1, 1])
        shaped.append(part)
    return tf.dynamic_stitch(indices, shaped)
