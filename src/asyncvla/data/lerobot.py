"""A LeRobot-v3-style dataset on disk: writer (`DatasetWriter`) and reader (`load_dataset`).

Layout (LeRobot codebase v3.0):
```
meta/info.json                               fps, features (dtype/shape), totals, paths
meta/tasks.parquet                           task (the instruction, the pandas index), task_index
meta/stats.json                              {feature: {min, max, mean, std, count, q01..q99}}
meta/episodes/chunk-000/file-000.parquet     episode_index, tasks, length, success, return,
                                             dataset_from_index, dataset_to_index,
                                             stats/<feature>/<stat>
data/chunk-000/file-000.parquet              one row per frame (below)
```
Frame columns: observation.image (the main camera: struct{bytes: PNG, path: null}, as Hugging
Face `datasets.Image` stores images inline), observation.images.<name> (each other camera,
the same way), observation.state (list<float32>), action
(list<float32>), episode_index, frame_index, index, timestamp (frame_index / fps),
task_index, next.reward, next.success, next.done. A row holds the observation at t, the
action taken at t, and what that action led to (next.*).

Reading for training:
```
ds = load_dataset("demos/")
ds.images        # [N, S, S, 3] uint8, right side up (the main camera)
ds.extra_images  # {camera name: [N, S, S, 3] uint8}
ds.proprio       # [N, P] float32
ds.actions       # [N, A] float32
ds.episode_index # [N] int64;  ds.frame_index [N] int64;  ds.task_index [N] int64
ds.instructions  # list[str] of N (ds.tasks[ds.task_index])
ds.episode_success, ds.episode_length  # [E] bool, [E] int64 (by episode index)
```
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from asyncvla.config import MAIN_CAMERA, ConfigError
from asyncvla.data.stats import aggregate_stats, feature_stats, to_json

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
VIDEO_CODEC = "av1"
"""LeRobot's default: libsvtav1, yuv420p, a keyframe every 2 frames, crf 30."""
_SCALARS = ("timestamp", "frame_index", "episode_index", "index", "task_index", "next.reward", "next.success", "next.done")
_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
MAIN_IMAGE = "observation.image"
EXTRA_IMAGE = "observation.images.{}"
"""Column of each camera besides the main one."""
_TASKS_PANDAS = {  # what pandas writes for a frame indexed by its task strings (LeRobot's tasks.parquet)
    "index_columns": ["task"],
    "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                        "metadata": {"encoding": "UTF-8"}}],
    "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
                {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
    "creator": {"library": "pyarrow", "version": pa.__version__},
    "pandas_version": "2.2.3",
}


@dataclass
class Episode:
    """One recorded episode: per-frame arrays of equal length T."""

    images: list[np.ndarray]
    """T images [S, S, 3] uint8."""
    proprio: list[np.ndarray]
    """T vectors [P] float32."""
    actions: list[np.ndarray]
    """T vectors [A] float32."""
    rewards: list[float]
    successes: list[bool]
    """next.success per frame: the task was solved after this frame's action."""
    instruction: str
    success: bool
    """The episode succeeded (at any step)."""
    extra_images: dict[str, list[np.ndarray]] = field(default_factory=dict)
    """The other cameras by name, T images each."""

    def __len__(self) -> int:
        return len(self.actions)


def encode_png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)  # level 1: fast, still ~3x smaller
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class DatasetWriter:
    """Collects episodes, then `finish()` writes data, tasks, episodes and info in one go."""

    def __init__(self, root: Path, fps: float, robot_type: str = "unknown", video: bool = False):
        self.root = Path(root)
        self.fps = fps
        self.robot_type = robot_type
        self.video = video
        """Cameras as mp4 video features (AV1, as LeRobot encodes them) instead of inline PNG images."""
        self._frames: dict[str, list[np.ndarray]] = {}
        """Video mode: every frame of each camera, encoded at finish()."""
        self._columns: dict[str, list] = {k: [] for k in (
            MAIN_IMAGE, "observation.state", "action", "episode_index", "frame_index", "index",
            "timestamp", "task_index", "next.reward", "next.success", "next.done")}
        self._episodes: list[dict] = []
        self._stats: list[dict[str, dict[str, np.ndarray]]] = []
        """Per episode: {feature: feature_stats}."""
        self._tasks: dict[str, int] = {}
        self._shapes: dict[str, list[int]] = {}
        self._cameras: list[str] | None = None

    @property
    def num_frames(self) -> int:
        return len(self._columns["index"])

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def episode_successes(self) -> list[bool]:
        return [e["success"] for e in self._episodes]

    def add_episode(self, ep: Episode) -> None:
        if len(ep) == 0:
            raise ValueError("add_episode: an episode needs at least one frame")
        if self._cameras is None:
            self._cameras = list(ep.extra_images)
            self._columns.update({EXTRA_IMAGE.format(k): [] for k in self._cameras})
        if list(ep.extra_images) != self._cameras:
            raise ValueError(f"add_episode: cameras {list(ep.extra_images)} differ from the dataset's {self._cameras}")
        task_index = self._tasks.setdefault(ep.instruction, len(self._tasks))
        ep_index, start, n = len(self._episodes), self.num_frames, len(ep)
        c = self._columns
        for col, images in ((MAIN_IMAGE, ep.images), *((EXTRA_IMAGE.format(k), v) for k, v in ep.extra_images.items())):
            if self.video:
                self._frames.setdefault(col, []).extend(images)
            else:
                c[col] += [{"bytes": encode_png(img), "path": None} for img in images]
            self._shapes[col] = list(images[0].shape)
        c["observation.state"] += [np.asarray(p, np.float32).tolist() for p in ep.proprio]
        c["action"] += [np.asarray(a, np.float32).tolist() for a in ep.actions]
        c["episode_index"] += [ep_index] * n
        c["frame_index"] += list(range(n))
        c["index"] += list(range(start, start + n))
        c["timestamp"] += [i / self.fps for i in range(n)]
        c["task_index"] += [task_index] * n
        c["next.reward"] += [float(r) for r in ep.rewards]
        c["next.success"] += [bool(s) for s in ep.successes]
        c["next.done"] += [False] * (n - 1) + [True]
        self._shapes.update({"observation.state": [len(ep.proprio[0])], "action": [len(ep.actions[0])]})
        stats = self._episode_stats(ep, start, n)
        self._stats.append(stats)
        self._episodes.append(dict(episode_index=ep_index, tasks=[ep.instruction], length=n, success=bool(ep.success),
                                   **{"return": float(np.sum(ep.rewards))}, dataset_from_index=start,
                                   dataset_to_index=start + n, **{"data/chunk_index": 0, "data/file_index": 0},
                                   **{"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0},
                                   **{f"videos/{col}/{k}": v for col in (self._image_columns if self.video else ())
                                      for k, v in (("chunk_index", 0), ("file_index", 0), ("from_timestamp", start / self.fps),
                                                   ("to_timestamp", (start + n) / self.fps))},
                                   **{f"stats/{f}/{k}": v.tolist() for f, st in stats.items() for k, v in st.items()}))

    def _episode_stats(self, ep: Episode, start: int, n: int) -> dict[str, dict[str, np.ndarray]]:
        """feature_stats of episode `ep` (frames start..start+n) for every image and numeric feature."""
        c = self._columns
        cams = ((MAIN_IMAGE, ep.images), *((EXTRA_IMAGE.format(k), v) for k, v in ep.extra_images.items()))
        out = {col: feature_stats(np.stack(images), image=True) for col, images in cams}
        for col in ("observation.state", "action", *_SCALARS):
            out[col] = feature_stats(np.asarray(c[col][start:start + n], np.float64))
        return out

    def finish(self) -> dict:
        """Writes everything; returns info.json's content."""
        if not self._episodes:
            raise ValueError("DatasetWriter.finish: no episodes were added")
        data_file = self.root / DATA_PATH.format(chunk_index=0, file_index=0)
        ep_file = self.root / EPISODES_PATH.format(chunk_index=0, file_index=0)
        for p in (data_file, ep_file):
            p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(self._data_table(), data_file)
        for col, frames in self._frames.items():
            encode_mp4(self.root / VIDEO_PATH.format(video_key=col, chunk_index=0, file_index=0), frames, self.fps)
        pq.write_table(pa.Table.from_pylist(self._episodes), ep_file)
        tasks = sorted(self._tasks.items(), key=lambda kv: kv[1])
        table = pa.table({"task_index": pa.array([i for _, i in tasks], pa.int64()), "task": [t for t, _ in tasks]})
        pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(_TASKS_PANDAS).encode()}), self.root / "meta/tasks.parquet")
        stats = {f: aggregate_stats([ep[f] for ep in self._stats]) for f in self._stats[0]}
        (self.root / "meta/stats.json").write_text(json.dumps(to_json(stats), indent=2))
        info = self._info()
        (self.root / "meta/info.json").write_text(json.dumps(info, indent=2))
        return info

    def _data_table(self) -> pa.Table:
        c = self._columns
        f32 = pa.list_(pa.float32())
        arrays = {
            **{col: pa.array(c[col], _IMAGE_TYPE) for col in (() if self.video else self._image_columns)},
            "observation.state": pa.array(c["observation.state"], f32),
            "action": pa.array(c["action"], f32),
            **{k: pa.array(c[k], pa.int64()) for k in ("episode_index", "frame_index", "index", "task_index")},
            "timestamp": pa.array(c["timestamp"], pa.float32()),
            "next.reward": pa.array(c["next.reward"], pa.float32()),
            "next.success": pa.array(c["next.success"], pa.bool_()),
            "next.done": pa.array(c["next.done"], pa.bool_()),
        }
        return pa.table(arrays)

    def _image_feature(self, shape: list[int]) -> dict:
        names = ["height", "width", "channels"]
        if not self.video:
            return {"dtype": "image", "shape": shape, "names": names}
        h, w, ch = shape
        return {"dtype": "video", "shape": shape, "names": names,
                "info": {"video.height": h, "video.width": w, "video.codec": VIDEO_CODEC, "video.pix_fmt": "yuv420p",
                         "video.is_depth_map": False, "video.fps": self._info_fps, "video.channels": ch, "has_audio": False}}

    @property
    def _info_fps(self) -> float | int:
        return int(self.fps) if float(self.fps).is_integer() else self.fps

    @property
    def _image_columns(self) -> list[str]:
        return [MAIN_IMAGE, *(EXTRA_IMAGE.format(k) for k in self._cameras or ())]

    def _info(self) -> dict:
        s = self._shapes
        scalar = lambda dtype: {"dtype": dtype, "shape": [1], "names": None}  # noqa: E731
        features = {
            **{col: self._image_feature(s[col]) for col in self._image_columns},
            "observation.state": {"dtype": "float32", "shape": s["observation.state"], "names": None},
            "action": {"dtype": "float32", "shape": s["action"], "names": None},
            "timestamp": scalar("float32"), "frame_index": scalar("int64"), "episode_index": scalar("int64"),
            "index": scalar("int64"), "task_index": scalar("int64"), "next.reward": scalar("float32"),
            "next.success": scalar("bool"), "next.done": scalar("bool"),
        }
        return {
            "codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type,
            "fps": self._info_fps,  # LeRobot writes an int
            "total_episodes": len(self._episodes), "total_frames": self.num_frames, "total_tasks": len(self._tasks),
            "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
            "splits": {"train": f"0:{len(self._episodes)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.video else None,
            "features": features,
        }


@dataclass
class DemoDataset:
    """A dataset loaded into memory (see the module docstring for the fields' shapes)."""

    images: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    episode_index: np.ndarray
    frame_index: np.ndarray
    task_index: np.ndarray
    rewards: np.ndarray
    successes: np.ndarray
    """[N] bool: next.success of each frame."""
    tasks: list[str]
    """Instruction of each task index."""
    episode_success: np.ndarray
    episode_length: np.ndarray
    fps: float
    info: dict = field(default_factory=dict)
    extra_images: dict[str, np.ndarray] = field(default_factory=dict)
    """The other cameras by name, each [N, S, S, 3] uint8."""

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_length)

    @property
    def instructions(self) -> list[str]:
        """[N] the instruction of every frame."""
        return [self.tasks[i] for i in self.task_index]


def _fail(root: Path, what: str) -> ConfigError:
    return ConfigError(f"dataset {str(root)!r} is invalid: {what}")


def _tables(root: Path, pattern: str, what: str) -> pa.Table:
    files = sorted(root.glob(pattern))
    if not files:
        raise _fail(root, f"no {what} files ({pattern})")
    return pa.concat_tables([pq.read_table(p) for p in files], promote_options="permissive")


def _read_tasks(root: Path) -> dict[int, str]:
    """{task_index: task}: the task is LeRobot's pandas index (stored as a column named `task`, or
    `__index_level_0__` when the index had no name); asyncvla before v3 fidelity wrote a plain column."""
    path = root / "meta/tasks.parquet"
    if not path.exists():
        raise _fail(root, "meta/tasks.parquet is missing")
    t = pq.read_table(path)
    name = next((n for n in ("task", "__index_level_0__") if n in t.column_names), None)
    if name is None or "task_index" not in t.column_names:
        raise _fail(root, f"meta/tasks.parquet needs task_index and a task column or index; it has {t.column_names}")
    return dict(zip(t.column("task_index").to_pylist(), t.column(name).to_pylist()))


def load_dataset(root: str | Path, image_keys: dict[str, str] | None = None, state_key: str = "observation.state",
                 action_key: str = "action") -> DemoDataset:
    """Reads a LeRobot v3 dataset (written by `DatasetWriter` or by LeRobot; all data files, in index order).

    image_keys: camera name -> image feature (default: `main` is observation.image and every
    observation.images.<name> is camera <name>; a LeRobot dataset usually needs e.g.
    `{"main": "observation.images.image", "wrist": "observation.images.wrist_image"}`).
    next.reward / next.success, which LeRobot datasets lack, read as 0 / False; an episode's success
    is its `success` column, else whether any frame's next.success is set.
    """
    root = Path(root)
    info_path = root / "meta/info.json"
    if not info_path.exists():
        raise _fail(root, "meta/info.json is missing (not a LeRobot v3 dataset)")
    try:
        info = json.loads(info_path.read_text())
    except ValueError as e:
        raise _fail(root, f"meta/info.json is not JSON ({e})") from None
    dtypes = {f: spec.get("dtype") for f, spec in info.get("features", {}).items()}
    data = _tables(root, "data/chunk-*/file-*.parquet", "data")
    episodes = _tables(root, "meta/episodes/chunk-*/file-*.parquet", "episode metadata")
    for table, cols, where in ((data, ("index", "episode_index"), "the data"), (episodes, ("episode_index", "length"), "meta/episodes")):
        if missing := [c for c in cols if c not in table.column_names]:
            raise _fail(root, f"{where} has no {', '.join(missing)} column")
    data, episodes = data.sort_by("index"), episodes.sort_by("episode_index")
    tasks = _read_tasks(root)
    prefix = EXTRA_IMAGE.format("")
    if image_keys is None:  # video features have no data column
        cols = [*data.column_names, *(f for f, d in dtypes.items() if d == "video")]
        image_keys = {MAIN_CAMERA: MAIN_IMAGE, **{c[len(prefix):]: c for c in cols if c.startswith(prefix)}}
    if MAIN_CAMERA not in image_keys:
        raise _fail(root, f"image_keys {image_keys} name no {MAIN_CAMERA!r} camera")
    found = [f for f, d in dtypes.items() if d in ("image", "video")]
    videos = {col for col in image_keys.values() if dtypes.get(col) == "video"}
    for cam, col in image_keys.items():
        if col not in data.column_names and col not in videos:
            raise _fail(root, f"camera {cam!r} reads feature {col!r}, which is missing; image features: {found or 'none'}")
    for col in (state_key, action_key, "frame_index", "task_index"):
        if col not in data.column_names:
            raise _fail(root, f"feature {col!r} is missing; the data has {data.column_names}")
    if unknown := sorted(set(data.column("task_index").to_pylist()) - set(tasks)):
        raise _fail(root, f"task_index {unknown[:5]} not in meta/tasks.parquet")

    def vectors(name: str) -> np.ndarray:
        col = data.column(name).combine_chunks()
        return col.values.to_numpy().reshape(len(col), -1).astype(np.float32)

    def image(d: dict) -> np.ndarray:
        return decode_png(d["bytes"]) if d.get("bytes") is not None else np.asarray(Image.open(root / d["path"]).convert("RGB"))

    def images(column: str) -> np.ndarray:
        if column in videos:
            return video_frames(root, info, episodes, data, column)
        frames = [image(d) for d in data.column(column).to_pylist()]
        return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)

    def frame_column(name: str, dtype, default) -> np.ndarray:
        if name not in data.column_names:
            return np.full(len(data), default, dtype)
        return data.column(name).to_numpy(zero_copy_only=False).astype(dtype)

    ints = lambda name: data.column(name).to_numpy().astype(np.int64)  # noqa: E731
    episode_index, successes = ints("episode_index"), frame_column("next.success", bool, False)
    if "success" in episodes.column_names:
        episode_success = episodes.column("success").to_numpy(zero_copy_only=False).astype(bool)
    else:
        episode_success = np.isin(episodes.column("episode_index").to_numpy(), episode_index[successes])
    task_ids = sorted(tasks)
    remap = {t: i for i, t in enumerate(task_ids)}
    return DemoDataset(
        images=images(image_keys[MAIN_CAMERA]),
        proprio=vectors(state_key),
        actions=vectors(action_key),
        episode_index=episode_index,
        frame_index=ints("frame_index"),
        task_index=np.array([remap[t] for t in ints("task_index")], np.int64),
        rewards=frame_column("next.reward", np.float32, 0.0),
        successes=successes,
        tasks=[tasks[t] for t in task_ids],
        episode_success=episode_success,
        episode_length=episodes.column("length").to_numpy().astype(np.int64),
        fps=float(info["fps"]),
        info=info,
        extra_images={cam: images(col) for cam, col in image_keys.items() if cam != MAIN_CAMERA},
    )


def encode_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Frames [H, W, 3] uint8 as an AV1 mp4, encoded as LeRobot encodes its video features (PyAV)."""
    import fractions

    import av

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole config to stderr at level 3 (info)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = fractions.Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as c:
        st = c.add_stream("libsvtav1", rate=rate, options={"crf": "30", "g": "2", "preset": "12"})
        st.width, st.height, st.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        st.time_base = 1 / rate
        for k, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts = k
            c.mux(st.encode(f))
        c.mux(st.encode())


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames [F, H, W, 3] uint8, presentation times [F] in s) of an mp4, with PyAV (LeRobot's decoder too)."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = [(f.to_ndarray(format="rgb24"), float(f.time)) for f in c.decode(stream)]
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0)
    return np.stack([f for f, _ in frames]), np.array([t for _, t in frames])


def video_frames(root: Path, info: dict, episodes: pa.Table, data: pa.Table, key: str) -> np.ndarray:
    """Every data row's frame of video feature `key`, as LeRobot v3 finds it: the episode's mp4
    (`video_path` with the episode's `videos/<key>/chunk_index|file_index`) at the episode's
    `videos/<key>/from_timestamp` plus the row's `timestamp`, within half a frame."""
    cols = [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp")]
    if missing := [c for c in cols if c not in episodes.column_names]:
        raise _fail(root, f"video feature {key!r}: meta/episodes has no {', '.join(missing)} column")
    if "timestamp" not in data.column_names or not info.get("video_path"):
        raise _fail(root, f"video feature {key!r} needs the data's timestamp column and info.json's video_path")
    ep_rows = {e: i for i, e in enumerate(episodes.column("episode_index").to_pylist())}
    chunk, file, start = (episodes.column(c).to_pylist() for c in cols)
    tolerance = 0.5 / float(info["fps"]) + 1e-4
    decoded: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
    out = []
    for e, ts in zip(data.column("episode_index").to_pylist(), data.column("timestamp").to_pylist()):
        i = ep_rows[e]
        path = root / info["video_path"].format(video_key=key, chunk_index=chunk[i], file_index=file[i])
        if path not in decoded:
            if not path.exists():
                raise _fail(root, f"video feature {key!r}: {path.relative_to(root)} is missing")
            decoded[path] = _decode(path)
        frames, times = decoded[path]
        j = int(np.abs(times - (start[i] + ts)).argmin()) if len(times) else -1
        if j < 0 or abs(times[j] - (start[i] + ts)) > tolerance:
            raise _fail(root, f"video feature {key!r}: no frame at {start[i] + ts:.3f} s in {path.relative_to(root)}")
        out.append(frames[j])
    return np.stack(out) if out else np.zeros((0, 0, 0, 3), np.uint8)
