"""LeRobot v3 fidelity both ways: what LeRobot reads from our datasets (with pandas, as LeRobot
does), and reading a dataset in LeRobot's own layout."""

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asyncvla.config import ConfigError
from asyncvla.data import load_dataset
from asyncvla.data.lerobot import DatasetWriter, Episode, decode_png, encode_png
from asyncvla.data.stats import aggregate_stats, feature_stats
from lerobot_v3 import check_v3, hf_features


def _episode(n: int, rng, instruction: str, wrist: bool = False) -> Episode:
    img = lambda: rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)  # noqa: E731
    return Episode(images=[img() for _ in range(n)], proprio=[rng.standard_normal(3).astype(np.float32) for _ in range(n)],
                   actions=[rng.standard_normal(2).astype(np.float32) for _ in range(n)], rewards=[0.5] * n,
                   successes=[False] * n, instruction=instruction, success=False,
                   extra_images={"wrist": [img() for _ in range(n)]} if wrist else {})


@pytest.fixture
def written(tmp_path):
    rng = np.random.default_rng(0)
    eps = [_episode(3, rng, "reach", wrist=True), _episode(5, rng, "push", wrist=True), _episode(2, rng, "reach", wrist=True)]
    w = DatasetWriter(tmp_path, fps=10)
    for e in eps:
        w.add_episode(e)
    w.finish()
    return tmp_path, eps


def test_tasks_parquet_is_indexed_by_the_task_as_lerobot_reads_it(written):
    root, _ = written
    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    assert list(tasks.index) == ["reach", "push"]
    assert tasks.iloc[1].name == "push"  # LeRobot: meta.tasks.iloc[task_index].name
    assert tasks.loc["push", "task_index"] == 1


def test_stats_json_matches_numpy_over_all_frames(written):
    root, eps = written
    stats = json.loads((root / "meta/stats.json").read_text())
    actions = np.concatenate([np.stack(e.actions) for e in eps]).astype(np.float64)
    a = stats["action"]
    np.testing.assert_allclose(a["mean"], actions.mean(0), rtol=1e-6)
    np.testing.assert_allclose(a["std"], actions.std(0), rtol=1e-6)  # pooled over episodes = over all frames
    np.testing.assert_allclose(a["min"], actions.min(0))
    np.testing.assert_allclose(a["max"], actions.max(0))
    assert a["count"] == [10] and np.shape(a["q50"]) == (2,)
    pixels = np.concatenate([np.stack(e.images) for e in eps]).reshape(-1, 3) / 255.0
    img = stats["observation.image"]
    assert np.shape(img["mean"]) == (3, 1, 1)  # per channel, channel first, as LeRobot normalises images
    np.testing.assert_allclose(np.ravel(img["mean"]), pixels.mean(0), rtol=1e-6)
    assert 0.0 <= np.min(img["min"]) and np.max(img["max"]) <= 1.0
    assert stats["next.reward"]["mean"] == [0.5] and np.shape(stats["observation.images.wrist"]["std"]) == (3, 1, 1)


def test_episode_metadata_carries_each_episodes_stats(written):
    root, eps = written
    ep = pd.read_parquet(root / "meta/episodes/chunk-000/file-000.parquet")
    np.testing.assert_allclose(ep["stats/action/mean"][1], np.stack(eps[1].actions).mean(0), rtol=1e-6)
    assert list(ep["stats/action/count"].map(list)) == [[3], [5], [2]]
    assert list(ep["dataset_to_index"] - ep["dataset_from_index"]) == [3, 5, 2]
    info = json.loads((root / "meta/info.json").read_text())
    assert info["fps"] == 10 and isinstance(info["fps"], int)


def test_aggregate_of_two_halves_is_the_whole():
    x = np.random.default_rng(1).standard_normal((40, 3))
    whole, halves = feature_stats(x), aggregate_stats([feature_stats(x[:15]), feature_stats(x[15:])])
    for k in ("min", "max", "mean", "std", "count"):
        np.testing.assert_allclose(halves[k], whole[k], rtol=1e-9)


def _lerobot_dataset(root, video: bool = False):
    """A dataset laid out as LeRobot v3 writes one: cameras only under observation.images.*, the
    tasks as a pandas index, and no next.reward / next.success columns."""
    rng = np.random.default_rng(2)
    n = 4
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    image = {"dtype": "video" if video else "image", "shape": [6, 6, 3], "names": ["height", "width", "channels"]}
    info = {"codebase_version": "v3.0", "fps": 20, "features": {
        "observation.images.image": image, "observation.images.wrist_image": image,
        "observation.state": {"dtype": "float32", "shape": [3]}, "action": {"dtype": "float32", "shape": [2]}}}
    (root / "meta/info.json").write_text(json.dumps(info))
    pd.DataFrame({"task_index": [0]}, index=pd.Index(["open the drawer"], name="task")).to_parquet(root / "meta/tasks.parquet")
    pd.DataFrame({"episode_index": [0], "length": [n]}).to_parquet(root / "meta/episodes/chunk-000/file-000.parquet")
    imgs = {k: [{"bytes": encode_png(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)), "path": None} for _ in range(n)]
            for k in ("observation.images.image", "observation.images.wrist_image")}
    table = pa.table({**imgs, "observation.state": [list(rng.standard_normal(3)) for _ in range(n)],
                      "action": [[0.1, 0.2]] * n, "episode_index": [0] * n, "frame_index": list(range(n)),
                      "index": list(range(n)), "task_index": [0] * n, "timestamp": [i / 20 for i in range(n)]})
    pq.write_table(table, root / "data/chunk-000/file-000.parquet")
    return imgs


def test_reads_a_dataset_in_lerobots_own_layout(tmp_path):
    imgs = _lerobot_dataset(tmp_path)
    ds = load_dataset(tmp_path, image_keys={"main": "observation.images.image", "wrist": "observation.images.wrist_image"})
    assert len(ds) == 4 and ds.instructions == ["open the drawer"] * 4 and ds.fps == 20
    assert ds.images.shape == (4, 6, 6, 3) and set(ds.extra_images) == {"wrist"}
    np.testing.assert_array_equal(ds.extra_images["wrist"][0], decode_png(imgs["observation.images.wrist_image"][0]["bytes"]))
    np.testing.assert_array_equal(ds.rewards, 0.0)  # LeRobot has no next.reward / next.success
    np.testing.assert_array_equal(ds.episode_success, [False])


@pytest.mark.parametrize("kwargs,video,match", [
    ({}, False, r"camera 'main' reads feature 'observation.image', which is missing; image features: \['observation.images.image'"),
    ({"image_keys": {"main": "observation.images.image"}}, True,
     "video feature 'observation.images.image': meta/episodes has no videos/observation.images.image/chunk_index"),
    ({"image_keys": {"wrist": "observation.images.wrist_image"}}, False, "name no 'main' camera"),
    ({"image_keys": {"main": "observation.images.image"}, "state_key": "observation.proprio"}, False,
     "feature 'observation.proprio' is missing"),
])
def test_foreign_datasets_get_one_line_naming_what_is_missing(tmp_path, kwargs, video, match):
    _lerobot_dataset(tmp_path, video=video)
    with pytest.raises(ConfigError, match=match) as e:
        load_dataset(tmp_path, **kwargs)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


def test_sft_trains_on_a_lerobot_layout_dataset_with_mapped_cameras(tmp_path, capsys):
    from asyncvla.cli import main

    _lerobot_dataset(tmp_path / "ds")
    args = ["sft", "--env", "metaworld/reach-v3", "--demos", str(tmp_path / "ds"), "--out", str(tmp_path / "ck"),
            "--steps", "2", "--batch-size", "4", "--json", "--policy.cameras", "main", "wrist",
            "--image-key", "main=observation.images.image", "wrist=observation.images.wrist_image"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 4 and summary["episodes"] == 1 and (tmp_path / "ck/model.safetensors").exists()
    assert main(args[:-3]) == 2  # without the mapping: one line naming the missing observation.image
    assert "camera 'main' reads feature 'observation.image', which is missing" in capsys.readouterr().err


def test_the_data_opens_as_lerobot_opens_it(written, tmp_path):
    """`datasets.load_dataset("parquet", ...)` with the features LeRobot derives from info.json."""
    import datasets
    root, eps = written
    info = json.loads((root / "meta/info.json").read_text())
    hf = datasets.load_dataset("parquet", data_files=[str(p) for p in sorted((root / "data").glob("*/*.parquet"))],
                               split="train", features=hf_features(info["features"]), cache_dir=str(tmp_path / "hf"))
    assert len(hf) == info["total_frames"] == 10
    row = hf[3]  # episode 1, frame 0
    assert row["episode_index"] == 1 and row["frame_index"] == 0 and row["task_index"] == 1
    np.testing.assert_array_equal(np.asarray(row["observation.image"]), eps[1].images[0])
    np.testing.assert_array_equal(np.asarray(row["observation.images.wrist"]), eps[1].extra_images["wrist"][0])
    np.testing.assert_allclose(row["action"], eps[1].actions[0])
    assert row["timestamp"] == pytest.approx(0.0) and hf[4]["timestamp"] == pytest.approx(1 / info["fps"])


def test_torn_metadata_is_one_line(tmp_path):
    _lerobot_dataset(tmp_path)
    (tmp_path / "meta/info.json").write_text('{"fps": ')
    with pytest.raises(ConfigError, match="meta/info.json is not JSON"):
        load_dataset(tmp_path)
    _lerobot_dataset(tmp_path / "b")
    pd.DataFrame({"episode_index": [0]}).to_parquet(tmp_path / "b/meta/episodes/chunk-000/file-000.parquet")
    with pytest.raises(ConfigError, match="meta/episodes has no length column"):
        load_dataset(tmp_path / "b", image_keys={"main": "observation.images.image"})


def _encode_mp4(path, frames, fps):
    """An mp4 as LeRobot encodes one (libsvtav1, yuv420p, a keyframe every 2 frames)."""
    import fractions

    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        st = c.add_stream("libsvtav1", rate=fps, options={"crf": "30", "g": "2"})
        st.width, st.height, st.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        st.time_base = fractions.Fraction(1, fps)
        for k, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = k
            c.mux(st.encode(f))
        c.mux(st.encode())


def test_reads_video_features_at_each_frames_timestamp(tmp_path):
    """LeRobot's default: every episode of a camera in one mp4, found by the episode's from_timestamp."""
    fps, lengths, key = 20, [3, 4], "observation.images.image"
    n = sum(lengths)
    frames = [np.full((64, 64, 3), (20 * k, 255 - 20 * k, 100), np.uint8) for k in range(n)]  # flat colours survive AV1
    _encode_mp4(tmp_path / f"videos/{key}/chunk-000/file-000.mp4", frames, fps)
    (tmp_path / "meta/episodes/chunk-000").mkdir(parents=True)
    (tmp_path / "data/chunk-000").mkdir(parents=True)
    info = {"codebase_version": "v3.0", "fps": fps, "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": {key: {"dtype": "video", "shape": [64, 64, 3]}, "observation.state": {"dtype": "float32", "shape": [2]},
                         "action": {"dtype": "float32", "shape": [2]}}}
    (tmp_path / "meta/info.json").write_text(json.dumps(info))
    pd.DataFrame({"task_index": [0]}, index=pd.Index(["stack"], name="task")).to_parquet(tmp_path / "meta/tasks.parquet")
    pd.DataFrame({"episode_index": [0, 1], "length": lengths, f"videos/{key}/chunk_index": [0, 0], f"videos/{key}/file_index": [0, 0],
                  f"videos/{key}/from_timestamp": [0.0, lengths[0] / fps]}).to_parquet(tmp_path / "meta/episodes/chunk-000/file-000.parquet")
    frame_index = [i for m in lengths for i in range(m)]
    pq.write_table(pa.table({"observation.state": [[0.0, 1.0]] * n, "action": [[0.1, 0.2]] * n,
                             "episode_index": [e for e, m in enumerate(lengths) for _ in range(m)], "frame_index": frame_index,
                             "index": list(range(n)), "task_index": [0] * n, "timestamp": [i / fps for i in frame_index]}),
                   tmp_path / "data/chunk-000/file-000.parquet")
    ds = load_dataset(tmp_path, image_keys={"main": key})
    assert ds.images.shape == (n, 64, 64, 3)
    np.testing.assert_allclose(ds.images.reshape(n, -1, 3).mean(1), np.stack(frames).reshape(n, -1, 3).mean(1), atol=6)


def test_demos_as_video_round_trip_close_to_the_png_frames(tmp_path, capsys):
    """`asyncvla demos --video`: the same episodes as with inline PNG (same seed), cameras as AV1 mp4
    the way LeRobot lays them out; decoded frames stay close to the lossless ones."""
    from asyncvla.cli import main

    common = ["demos", "metaworld/reach-v3", "--episodes", "2", "--cameras", "main", "wrist", "--json"]
    assert main([*common, "--out", str(tmp_path / "png")]) == 0
    assert main([*common, "--out", str(tmp_path / "mp4"), "--video"]) == 0
    capsys.readouterr()
    png, mp4 = load_dataset(tmp_path / "png"), load_dataset(tmp_path / "mp4")
    np.testing.assert_array_equal(mp4.actions, png.actions)
    for a, b in ((mp4.images, png.images), (mp4.extra_images["wrist"], png.extra_images["wrist"])):
        assert a.shape == b.shape
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 8  # AV1 at crf 30 on 64x64 renders
    info = json.loads((tmp_path / "mp4/meta/info.json").read_text())
    feat = info["features"]["observation.images.wrist"]
    assert feat["dtype"] == "video" and feat["info"]["video.codec"] == "av1" and feat["info"]["video.fps"] == info["fps"]
    assert (tmp_path / "mp4" / info["video_path"].format(video_key="observation.image", chunk_index=0, file_index=0)).exists()
    assert "observation.image" not in pq.read_schema(tmp_path / "mp4/data/chunk-000/file-000.parquet").names
    ep = pd.read_parquet(tmp_path / "mp4/meta/episodes/chunk-000/file-000.parquet")
    assert ep["videos/observation.image/from_timestamp"][1] == pytest.approx(ep["length"][0] / info["fps"])


def test_episode_success_falls_back_to_the_frames_next_success(written):
    root, _ = written
    ep_file = root / "meta/episodes/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(ep_file).drop_columns(["success"]), ep_file)
    data_file = root / "data/chunk-000/file-000.parquet"
    t = pq.read_table(data_file)
    flags = [i == 7 for i in range(t.num_rows)]  # the last frame of episode 1 (frames 3..7)
    pq.write_table(t.set_column(t.column_names.index("next.success"), "next.success", pa.array(flags)), data_file)
    np.testing.assert_array_equal(load_dataset(root).episode_success, [False, True, False])


def test_the_written_dataset_meets_lerobots_v3_layout_field_by_field(written, tmp_path):
    info = check_v3(written[0], cache_dir=tmp_path / "hf")
    assert info["total_episodes"] == 3 and set(info["features"]) >= {"observation.image", "observation.images.wrist"}


def test_the_layout_check_can_fail(written, tmp_path):
    root, _ = written
    pd.DataFrame({"task": ["reach", "push"], "task_index": [0, 1]}).to_parquet(root / "meta/tasks.parquet")  # the old layout
    with pytest.raises(AssertionError, match="tasks.parquet index"):
        check_v3(root, cache_dir=tmp_path / "hf")


@pytest.mark.slow
def test_demos_video_from_the_cli_meets_lerobots_v3_layout(tmp_path, capsys):
    """The acceptance command: `asyncvla demos metaworld/reach-v3 --episodes 3 --video --out D`, two cameras."""
    from asyncvla.cli import main

    d = tmp_path / "D"
    assert main(["demos", "metaworld/reach-v3", "--episodes", "3", "--video", "--cameras", "main", "wrist",
                 "--out", str(d), "--json"]) == 0
    capsys.readouterr()
    info = check_v3(d, cache_dir=tmp_path / "hf")
    assert info["total_episodes"] == 3 and info["video_path"] is not None
    assert [k for k, f in info["features"].items() if f["dtype"] == "video"] == ["observation.image", "observation.images.wrist"]


@pytest.mark.skipif(not os.environ.get("LEROBOT_V3_DATASET"), reason="set LEROBOT_V3_DATASET=DIR to check a dataset")
def test_a_given_dataset_meets_lerobots_v3_layout(tmp_path):
    """`LEROBOT_V3_DATASET=D python -m pytest tests/data/test_lerobot_format.py -k given`: any directory."""
    check_v3(os.environ["LEROBOT_V3_DATASET"], cache_dir=tmp_path / "hf")
