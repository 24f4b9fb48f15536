"""RSS over a soak: the table that says whether every process stayed flat (pure), and one real sample."""

from asyncvla.bench.memory import FLAT, rss_table, sample_rss


def test_growth_after_warm_up_is_flagged_and_warm_up_is_ignored():
    samples = [(0.0, {"driver": 100.0, "ray::Hub": 50.0}),  # start-up: not counted
               (10.0, {"driver": 400.0, "ray::Hub": 80.0}),
               (20.0, {"driver": 404.0, "ray::Hub": 90.0, "ray::RolloutServerActor": 300.0}),
               (30.0, {"driver": 401.0, "ray::Hub": 100.0, "ray::RolloutServerActor": 300.0})]
    rows = {r["group"]: r for r in rss_table(samples, warmup_s=10.0)}
    assert rows["driver"]["flat"] and rows["driver"]["change"] == round(401 / 400 - 1, 4) and rows["driver"]["peak_mib"] == 404.0
    assert not rows["ray::Hub"]["flat"] and rows["ray::Hub"]["change"] == 0.25 > FLAT
    assert rows["ray::RolloutServerActor"]["flat"]  # present from its own first sample on
    assert rss_table(samples[:1], warmup_s=0.0) == []


def test_this_process_is_sampled():
    assert sample_rss()["driver"] > 10.0
