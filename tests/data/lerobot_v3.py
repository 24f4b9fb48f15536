"""LeRobot's v3.0 dataset layout, checked field by field from LeRobot's own source and docs
(lerobot/datasets/utils.py: DEFAULT_FEATURES, create_empty_dataset_info, the path templates,
get_hf_features_from_features; lerobot_dataset.py: the episodes metadata columns; the v3 blog
post). Nothing here calls asyncvla's reader: a dataset passes only if LeRobot's own libraries
(pandas, pyarrow, datasets, PyAV) read it as LeRobot does.

`check_v3(root)` raises AssertionError naming the first misfit.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

# lerobot/datasets/utils.py
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
INFO_KEYS = ("codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks", "chunks_size",
             "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits", "data_path", "video_path", "features")
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
# The columns LeRobotDataset reads from meta/episodes (lerobot_dataset.py and aggregate.py).
EPISODE_COLUMNS = ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                   "dataset_to_index", "meta/episodes/chunk_index", "meta/episodes/file_index")
VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
VIDEO_INFO = ("video.height", "video.width", "video.codec", "video.pix_fmt", "video.is_depth_map", "video.fps",
              "video.channels", "has_audio")
STATS = ("min", "max", "mean", "std", "count")
NUMPY_DTYPES = {"float32", "float64", "int64", "int32", "bool", "uint8", "string"}


def hf_features(features: dict):
    """LeRobot's get_hf_features_from_features, for 1-D features and images."""
    import datasets

    seq = getattr(datasets, "List", None) or datasets.Sequence
    out = {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        if ft["dtype"] == "image":
            out[key] = datasets.Image()
        elif list(ft["shape"]) == [1]:
            out[key] = datasets.Value(dtype=ft["dtype"])
        else:
            assert len(ft["shape"]) == 1, f"{key}: only 1-D vectors are checked here"
            out[key] = seq(datasets.Value(dtype=ft["dtype"]), length=ft["shape"][0])
    return datasets.Features(out)


def check_info(info: dict) -> None:
    missing = [k for k in INFO_KEYS if k not in info]
    assert not missing, f"meta/info.json lacks {missing}"
    assert info["codebase_version"] == "v3.0", info["codebase_version"]
    assert isinstance(info["fps"], int), f"fps {info['fps']!r}: LeRobot writes an int"
    assert info["data_path"] == DATA_PATH, info["data_path"]
    videos = [k for k, ft in info["features"].items() if ft["dtype"] == "video"]
    assert info["video_path"] == (VIDEO_PATH if videos else None), info["video_path"]
    assert info["splits"] == {"train": f"0:{info['total_episodes']}"}, info["splits"]
    for key, ft in DEFAULT_FEATURES.items():
        assert info["features"].get(key) == ft, f"feature {key}: {info['features'].get(key)} != {ft}"
    for key, ft in info["features"].items():
        assert "/" not in key, f"feature {key}: LeRobot refuses '/' in names"
        assert {"dtype", "shape", "names"} <= set(ft), f"feature {key} lacks dtype/shape/names"
        assert isinstance(ft["shape"], list) and all(isinstance(d, int) and d > 0 for d in ft["shape"]), f"{key}: shape {ft['shape']}"
        if ft["dtype"] in ("image", "video"):
            assert len(ft["shape"]) == 3 and ft["names"] == ["height", "width", "channels"], f"{key}: {ft}"
        else:
            assert ft["dtype"] in NUMPY_DTYPES, f"{key}: dtype {ft['dtype']}"
        if ft["dtype"] == "video":
            vi = ft.get("info") or {}
            assert all(k in vi for k in VIDEO_INFO), f"{key}: video info lacks {[k for k in VIDEO_INFO if k not in vi]}"
            assert [vi["video.height"], vi["video.width"], vi["video.channels"]] == ft["shape"], f"{key}: {vi}"
            assert vi["video.fps"] == info["fps"] and vi["video.codec"] in ("av1", "h264", "libsvtav1"), f"{key}: {vi}"


def check_v3(root: str | Path, cache_dir: str | Path | None = None) -> dict:
    """Checks the whole dataset at `root`; returns its info.json."""
    import av
    import datasets

    root = Path(root)
    info = json.loads((root / "meta/info.json").read_text())
    check_info(info)
    features, fps = info["features"], info["fps"]
    videos = [k for k, ft in features.items() if ft["dtype"] == "video"]

    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    assert tasks.index.name == "task", f"tasks.parquet index is {tasks.index.name!r}, LeRobot keeps the task there"
    assert list(tasks["task_index"]) == list(range(len(tasks))) == list(range(info["total_tasks"]))

    ep_files = sorted(root.glob("meta/episodes/*/*.parquet"))
    assert ep_files, "no meta/episodes/chunk-*/file-*.parquet"
    eps = pd.concat([pd.read_parquet(p) for p in ep_files], ignore_index=True)
    need = [*EPISODE_COLUMNS, *(f"videos/{k}/{c}" for k in videos for c in VIDEO_COLUMNS),
            *(f"stats/{k}/{s}" for k in features for s in STATS)]
    assert not (lacking := [c for c in need if c not in eps.columns]), f"meta/episodes lacks {lacking}"
    assert list(eps["episode_index"]) == list(range(info["total_episodes"]))
    assert int(eps["length"].sum()) == info["total_frames"]
    assert list(eps["dataset_to_index"] - eps["dataset_from_index"]) == list(eps["length"])
    assert all(t in tasks.index for ts in eps["tasks"] for t in ts), "an episode names a task not in tasks.parquet"
    for _, e in eps.iterrows():
        assert (root / EPISODES_PATH.format(chunk_index=e["meta/episodes/chunk_index"],
                                            file_index=e["meta/episodes/file_index"])).exists()
        assert list(e["stats/action/count"]) == [e["length"]]

    stats = json.loads((root / "meta/stats.json").read_text())
    for key, ft in features.items():
        assert all(s in stats.get(key, {}) for s in STATS), f"meta/stats.json lacks {key}'s {STATS}"
        if ft["dtype"] in ("image", "video"):
            assert np.shape(stats[key]["mean"]) == (ft["shape"][2], 1, 1), f"{key}: image stats are per channel [C,1,1]"
            assert 0.0 <= np.min(stats[key]["min"]) and np.max(stats[key]["max"]) <= 1.0, f"{key}: image stats in [0,1]"

    # The frames, opened as LeRobot opens them.
    data_files = sorted({str(root / DATA_PATH.format(chunk_index=c, file_index=f))
                         for c, f in zip(eps["data/chunk_index"], eps["data/file_index"])})
    assert all(Path(p).exists() for p in data_files), "a data file named in meta/episodes is missing"
    columns = set(pq.read_schema(data_files[0]).names)
    assert columns == {k for k in features if k not in videos}, f"data columns {sorted(columns)} != the non-video features"
    hf = datasets.load_dataset("parquet", data_files=data_files, split="train", features=hf_features(features),
                               cache_dir=str(cache_dir or root.parent / ".hf-cache"))
    assert len(hf) == info["total_frames"]
    assert list(hf["index"]) == list(range(len(hf)))
    for _, e in eps.iterrows():
        rows = hf.select(range(e["dataset_from_index"], e["dataset_to_index"]))
        assert set(rows["episode_index"]) == {e["episode_index"]}
        assert list(rows["frame_index"]) == list(range(e["length"]))
        np.testing.assert_allclose(rows["timestamp"], np.arange(e["length"]) / fps, atol=1e-6)

    # Each camera's video: a decodable mp4 of the feature's size at fps, covering every episode.
    for key in videos:
        for (chunk, file), group in eps.groupby([f"videos/{key}/chunk_index", f"videos/{key}/file_index"]):
            path = root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
            assert path.exists(), f"{path} missing"
            with av.open(str(path)) as c:
                st = c.streams.video[0]
                assert [st.height, st.width] == features[key]["shape"][:2], f"{path}: {st.width}x{st.height}"
                assert st.average_rate == Fraction(fps), f"{path}: {st.average_rate} fps"
                pts = [float(f.pts * f.time_base) for f in c.decode(st)]
            for _, e in group.iterrows():
                lo, hi = e[f"videos/{key}/from_timestamp"], e[f"videos/{key}/to_timestamp"]
                assert abs(hi - lo - e["length"] / fps) < 1e-6, f"{key}: episode {e['episode_index']} spans {lo}..{hi} s"
                inside = [t for t in pts if lo - 0.5 / fps <= t < hi - 0.5 / fps]
                assert len(inside) == e["length"], f"{path}: {len(inside)} frames in episode {e['episode_index']}, expected {e['length']}"
    return info
