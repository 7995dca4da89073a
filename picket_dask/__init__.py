"""picket-dask: PickET (template-free particle picking in cryo-ET) as a chunked Dask engine.

Public API: convert, simulate, run, segment_tomogram, localize, evaluate_files, get_client and
the parameter models SegmentParams, LocalizeParams, RunConfig.
"""

from .cluster import get_client
from .config import ALL_WORKFLOWS, DEFAULT_WORKFLOWS, LocalizeParams, RunConfig, SegmentParams, load_config
from .errors import PicketError
from .evaluate import evaluate_files, score
from .io.tomogram import convert, open_tomogram
from .localize.extract import localize
from .segment.semantic import segment_tomogram
from .simulate import simulate
from .workflows import run

__version__ = "0.1.0"

__all__ = ["ALL_WORKFLOWS", "DEFAULT_WORKFLOWS", "LocalizeParams", "PicketError", "RunConfig", "SegmentParams",
           "convert", "evaluate_files", "get_client", "load_config", "localize", "open_tomogram", "run", "score",
           "segment_tomogram", "simulate"]
