"""The pipeline stages as mldesigner components, importable in notebooks and AML/KFP pipelines.

from mnist_mlops.components import ingest, preprocess
"""

from mnist_mlops.components.deploy import deploy
from mnist_mlops.components.evaluate import evaluate
from mnist_mlops.components.ingest import ingest
from mnist_mlops.components.preprocess import preprocess
from mnist_mlops.components.register import register
from mnist_mlops.components.train import train

__all__ = ["deploy", "evaluate", "ingest", "preprocess", "register", "train"]
