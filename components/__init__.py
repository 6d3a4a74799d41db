"""The pipeline stages as mldesigner components, importable in notebooks and AML/KFP pipelines.

from mnist_mlops.components import ingest, preprocess
"""

from mnist_mlops.components.batch_score import batch_score
from mnist_mlops.components.deploy import deploy
from mnist_mlops.components.evaluate import evaluate
from mnist_mlops.components.ingest import ingest
from mnist_mlops.components.monitor import monitor
from mnist_mlops.components.preprocess import preprocess
from mnist_mlops.components.register import register
from mnist_mlops.components.train import train

__all__ = ["batch_score", "deploy", "evaluate", "ingest", "monitor", "preprocess", "register", "train"]
