"""Print the latest benchmark results as markdown tables (for benchmarks/README.md).

    python benchmarks/report.py
"""

from pathlib import Path

import pandas as pd

R = Path(__file__).parent / "results"


def md(df: pd.DataFrame) -> str:
    """A markdown table (pandas' to_markdown needs tabulate; not worth a dependency for this)."""
    fmt = lambda v: (f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}") if isinstance(v, float) else str(v)
    rows = [" | ".join(map(str, df.columns))] + [" | ".join(["---"] * len(df.columns))]
    rows += [" | ".join(fmt(v) for v in r) for r in df.itertuples(index=False)]
    return "\n".join(f"| {r} |" for r in rows)


def table(name: str, cols: list[str], last: int | None = None, where=None) -> str:
    p = R / f"{name}.csv"
    if not p.exists():
        return f"(no {name} results yet)\n"
    df = pd.read_csv(p)
    if where is not None:
        df = df[where(df)]
    if last:
        df = df.tail(last)
    cols = [c for c in cols if c in df.columns]
    return md(df[cols]) + "\n"


if __name__ == "__main__":
    print("### convert (1 GiB MRC -> OME-Zarr)\n")
    print(table("convert", ["date", "shape", "mrc_GiB", "chunks", "wall_s", "cpu_s", "peak_rss_MiB"], 1))
    print("### step 1 (semantic segmentation), per feature mode x clusterer\n")
    print(table("step1", ["shape", "segmentation", "max_fit_voxels", "wall_s", "cpu_s", "peak_rss_MiB", "stages"], 14))
    print("### step 1 memory vs volume (gabor-kmeans)\n")
    print(table("step1_memory", ["shape", "segmentation", "wall_s", "peak_rss_MiB", "stages"], 2))
    print("### step 2 (100k blobs)\n")
    print(table("step2", ["shape", "blobs", "chunks", "extractor", "min_distance", "wall_s", "cpu_s", "peak_rss_MiB", "instances", "stages"], 2))
    print("### scaling\n")
    print(table("scaling", ["shape", "voxels", "stage", "max_fit_voxels", "wall_s", "cpu_s", "peak_rss_MiB", "stages"], 6))
    print("### workers\n")
    print(table("workers", ["shape", "workflow", "workers", "wall_s", "chunked_stages_s", "fit_s", "peak_rss_MiB"], 3))
    print("### twelve workflows vs one blur\n")
    print(table("vs_blur", ["shape", "max_fit_voxels", "blur_wall_s", "twelve_wall_s", "ratio", "twelve_chunked_only_ratio", "fit_s", "features_and_labels_s", "peak_rss_MiB"], 1))
    print("### larger than memory\n")
    print(table("larger_than_memory", ["shape", "tomogram_GiB", "worker_limit", "wall_s", "peak_rss_MiB", "worker_restart_lines", "picks"], 3))
    s = R / "accuracy_summary.csv"
    if s.exists():
        df = pd.read_csv(s)
        for tag, g in df.groupby(df["tag"].fillna("")):
            print(f"### accuracy, median over tomograms ({tag or 'per-tomogram fit, size orientation'})\n")
            cols = ["workflow", "f1_sparse", "f1_crowded", "precision_sparse", "recall_sparse", "precision_crowded",
                    "recall_crowded", "relative_recall_sparse", "relative_recall_crowded", "n_picks_sparse", "n_picks_crowded"]
            print(md(g[[c for c in cols if c in g.columns]].round(3)) + "\n")
