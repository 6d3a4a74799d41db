"""What a trained model takes and answers: its image shape and its class names, in label order.

Train writes it into the MLflow model's metadata (the `MLmodel` file) from the dataset's manifest, and
derives the signature from it; everything that loads a model (evaluate, register, deploy's canaries, the
scoring server, batch scoring) reads it back from there, so no consumer assumes MNIST's 28x28 and ten
digits. A model saved before models described themselves is read from its signature's input shape, with
MNIST's class names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mnist_mlops.dataset import (
    MNIST_CLASSES,
    MNIST_IMAGE_SHAPE,
    classes_of,
    describe_shape,
    image_shape_of,
    listed,
)
from mnist_mlops.errors import UserInputError

MIN_IMAGE_SIDE = 10
"""The smallest height or width the CNN takes: two 3x3 convolutions and two 2x2 poolings leave 1 pixel."""


@dataclass(frozen=True)
class ModelInterface:
    image_shape: tuple[int, ...]
    """(height, width) for grayscale, (height, width, 3) for colour."""
    classes: tuple[str, ...]
    """Class names; a prediction's `class` is the index into this tuple, its `label` the name."""

    @classmethod
    def of_dataset(cls, manifest: dict[str, Any]) -> ModelInterface:
        """The interface a model trained on this (dataset, preprocessed or reference) manifest has."""
        return cls(image_shape_of(manifest), tuple(classes_of(manifest)))

    @classmethod
    def of_model(cls, model_dir: str | Path) -> ModelInterface:
        """Read from an MLflow model folder's `MLmodel` file, without importing MLflow or TensorFlow."""
        path = Path(model_dir) / "MLmodel"
        if not path.is_file():
            raise UserInputError(f"{model_dir}: not an MLflow model (no MLmodel file)")
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise UserInputError(f"{path}: cannot read the MLflow model description ({error})") from None
        metadata = document.get("metadata") or {}
        if "image_shape" in metadata and "classes" in metadata:
            return cls(tuple(int(side) for side in metadata["image_shape"]), tuple(metadata["classes"]))
        shape, outputs = _signature_shapes(document, path)
        if outputs not in (None, len(MNIST_CLASSES)):
            raise UserInputError(
                f"{path}: the model answers {outputs} classes but records no class names (metadata classes)"
            )
        return cls(shape, MNIST_CLASSES)

    @property
    def class_count(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.image_shape[2] if len(self.image_shape) == 3 else 1

    def metadata(self) -> dict[str, Any]:
        """The entries train adds to the MLflow model's metadata."""
        return {"image_shape": list(self.image_shape), "classes": list(self.classes)}

    @property
    def is_mnist(self) -> bool:
        """MNIST's description: 28x28 grayscale, classes "0" to "9" (what MNIST's defaults were made for)."""
        return self == MNIST

    def describe(self) -> str:
        """How messages and model cards name it: 32x32x3 images of 5 classes (apple, bread, ...)."""
        names = listed(self.classes)
        return f"{describe_shape(self.image_shape)} images of {self.class_count} classes ({names})"

    def check_trainable(self, source: str) -> None:
        """Refuse images the CNN cannot take, before TensorFlow is loaded."""
        if min(self.image_shape[:2]) < MIN_IMAGE_SIDE:
            raise UserInputError(
                f"{source}: {describe_shape(self.image_shape)} images are too small for the model "
                f"(at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}); resize them at ingest"
            )

    def check_answers(self, expected: tuple[str, ...] | list[str], source: str) -> None:
        """Refuse data labelled with classes this model was not trained for (the same names, same order)."""
        expected = tuple(expected)
        if expected == self.classes:
            return
        unknown = [name for name in expected if name not in self.classes]
        detail = (
            f"classes {listed(unknown)} unknown to the model"
            if unknown
            else f"the classes in another order or a subset ({listed(expected)})"
        )
        raise UserInputError(
            f"{source}: the model answers {self.class_count} classes ({listed(self.classes)}); "
            f"the data has {len(expected)}: {detail}"
        )

    def check_images(self, images: np.ndarray, source: str) -> None:
        """Refuse a batch of images of another shape than the model takes."""
        if images.shape[1:] != self.image_shape:
            raise UserInputError(
                f"{source}: the model takes {describe_shape(self.image_shape)} images, "
                f"got {describe_shape(images.shape[1:])}"
            )


MNIST = ModelInterface(MNIST_IMAGE_SHAPE, MNIST_CLASSES)


def _signature_shapes(document: dict[str, Any], path: Path) -> tuple[tuple[int, ...], int | None]:
    """The image shape of an MLflow signature's first tensor input ([-1, H, W] or [-1, H, W, C]) and the
    width of its first tensor output, if it records one."""
    import json

    signature = document.get("signature") or {}
    try:
        inputs = json.loads(signature["inputs"])
        shape = tuple(int(side) for side in inputs[0]["tensor-spec"]["shape"][1:])
    except (KeyError, TypeError, ValueError, IndexError, json.JSONDecodeError):
        raise UserInputError(
            f"{path}: the MLflow model records neither image_shape metadata nor a tensor signature"
        ) from None
    try:
        outputs = int(json.loads(signature["outputs"])[0]["tensor-spec"]["shape"][-1])
    except (KeyError, TypeError, ValueError, IndexError, json.JSONDecodeError):
        outputs = None
    return (shape[:2] if shape[2:] == (1,) else shape), outputs
