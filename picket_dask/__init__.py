"""picket-dask: PickET (template-free particle picking in cryo-ET) as a chunked Dask engine.

Public API: convert, simulate, run, collect, report, segment_tomogram, localize, evaluate_files, get_client,
classify_picks and the parameter models SegmentParams, LocalizeParams, RunConfig.
"""

from .cluster import get_client
from .collect import collect
from .config import ALL_WORKFLOWS, DEFAULT_WORKFLOWS, LocalizeParams, RunConfig, SegmentParams, load_config
from .errors import PicketError
from .evaluate import evaluate_files, score
from .io.tomogram import convert, open_tomogram
from .localize.extract import localize
from .segment.semantic import segment_tomogram
from .simulate import simulate
from .workflows import run

__version__ = "0.1.0"


def __getattr__(name: str):
    # classify and report (matplotlib) are imported on first use only: importing the package never loads them
    if name == "classify_picks":
        from .classify import classify_picks

        return classify_picks
    if name == "report":
        from .report import report

        return report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ALL_WORKFLOWS", "DEFAULT_WORKFLOWS", "LocalizeParams", "PicketError", "RunConfig", "SegmentParams",
           "classify_picks", "collect", "convert", "evaluate_files", "get_client", "load_config", "localize", "open_tomogram", "report", "run", "score",
           "segment_tomogram", "simulate"]
