"""Config tree: bad values fail early with one line naming the field; presets load strictly."""

import pytest

from asyncvla.config import AlgoConfig, ConfigError, EnvConfig, PolicyConfig, TrainConfig, WrapperConfig, env_config, from_dict, load_preset, policy_config
from asyncvla.envs import validate_env_id


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: env_config(num_envs=0), "env.num_envs"),
        (lambda: env_config(id="reach-v3"), "env.id"),
        (lambda: env_config(image_size=2), "env.image_size"),
        (lambda: WrapperConfig(fault_prob=1.5), "env.wrappers.fault_prob"),
        (lambda: policy_config(hidden_dim=30, num_heads=4), "policy.hidden_dim"),
        (lambda: AlgoConfig(dual_clip=0.5), "algo.dual_clip"),
        (lambda: AlgoConfig(name="sac"), "algo.name"),
        (lambda: AlgoConfig(lr=float("inf")), "algo.lr"),
        (lambda: AlgoConfig(value_lr=-1.0), "algo.value_lr"),
        (lambda: AlgoConfig(max_grad_norm=-1.0), "algo.max_grad_norm"),
        (lambda: AlgoConfig(max_grad_norm=0.0), "algo.max_grad_norm"),
        (lambda: AlgoConfig(max_skipped_updates=0), "algo.max_skipped_updates"),
        (lambda: WrapperConfig(fault_hang_s=float("inf")), "env.wrappers.fault_hang_s"),
        (lambda: policy_config(num_heads=-4), "policy.num_heads"),
    ],
)
def test_bad_value_names_the_field(make, field):
    with pytest.raises(ConfigError) as e:
        make()
    msg = str(e.value)
    assert msg.startswith(field + "=") and "\n" not in msg


def test_unknown_backend_and_task_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"backend 'nope' is invalid: allowed: metaworld, libero, maniskill, emulated"):
        validate_env_id(env_config(id="nope/x"))
    with pytest.raises(ConfigError, match=r"env.id='emulated/what' is invalid: unknown emulated task; allowed: custom"):
        validate_env_id(env_config(id="emulated/what"))


def test_from_dict_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(ConfigError, match="unknown field.*num_env\\b"):
        from_dict(EnvConfig, {"num_env": 3})
    with pytest.raises(ConfigError, match="num_envs"):
        from_dict(EnvConfig, {"num_envs": "three"})
    cfg = from_dict(EnvConfig, {"id": "emulated/custom", "num_envs": 3, "emulated": {"step_mean_s": 0.5}})
    assert cfg.num_envs == 3 and cfg.emulated.step_mean_s == 0.5 and cfg.emulated.reset_s == 0.1


def test_each_backend_and_policy_type_owns_its_fields():
    """A field of another backend or policy type is an unknown field, in presets and in code."""
    assert type(from_dict(EnvConfig, {"id": "emulated/fast"})).__name__ == "EmulatedEnvConfig"
    assert not hasattr(env_config("emulated/fast"), "fast_render") and env_config().fast_render
    with pytest.raises(ConfigError, match=r"^train\.env \(RenderedEnvConfig\): unknown field\(s\) emulated; allowed: .*fast_render"):
        from_dict(TrainConfig, {"env": {"id": "metaworld/reach-v3", "emulated": {"episode_len": 3}}}, where="train")
    with pytest.raises(ConfigError, match=r"^policy \(TinyGaussianConfig\): unknown field\(s\) action_bins"):
        policy_config("tiny-gaussian", action_bins=8)
    assert policy_config("tiny", action_bins=8).action_bins == 8
    with pytest.raises(ConfigError, match=r"^env \(EmulatedEnvConfig\): unknown field\(s\) fast_render"):
        env_config("emulated/fast", fast_render=False)
    # The base classes cannot stand in for a type's own class: their fields would be missing.
    with pytest.raises(ConfigError, match=r"^policy.type='tiny' is invalid: its config is TinyConfig"):
        PolicyConfig()
    with pytest.raises(ConfigError, match=r"^env.id='emulated/fast' is invalid: its backend's config is EmulatedEnvConfig"):
        EnvConfig(id="emulated/fast")
    with pytest.raises(ConfigError, match=r"^policy.type='nope' is invalid: allowed: flow, oft, tiny, tiny-gaussian"):
        from_dict(PolicyConfig, {"type": "nope"})


def test_presets_parse_into_their_types_and_choices_switch_the_class():
    cfg = load_preset(TrainConfig, "emulated-e2e")
    assert type(cfg.env).__name__ == "EmulatedEnvConfig" and cfg.env.emulated.episode_len == 24
    assert type(cfg.policy).__name__ == "TinyConfig"
    switched = load_preset(TrainConfig, "emulated-e2e", {"policy": {"type": "tiny-gaussian"}, "env": {"id": "emulated/fast"}})
    assert type(switched.policy).__name__ == "TinyGaussianConfig" and switched.policy.hidden_dim == cfg.policy.hidden_dim
    assert switched.env.id == "emulated/fast" and switched.env.emulated.episode_len == 24
    with pytest.raises(ConfigError, match=r"preset emulated-e2e.yaml.env \(RenderedEnvConfig\): unknown field\(s\) emulated"):
        load_preset(TrainConfig, "emulated-e2e", {"env": {"id": "metaworld/reach-v3"}})


def test_unknown_preset_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match="preset='no-such-preset' is invalid: allowed:"):
        load_preset(EnvConfig, "no-such-preset")


def _undocumented_fields(path) -> list[str]:
    """Fields of the dataclasses in `path` with no docstring right below them (what --help prints)."""
    import ast

    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ClassDef):
            continue
        for st, nxt in zip(node.body, node.body[1:] + [None]):
            if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name) and not st.target.id.startswith("_"):
                documented = isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)
                if not documented:
                    out.append(f"{node.name}.{st.target.id}")
    return out


def test_every_config_field_is_documented():
    from pathlib import Path

    import asyncvla

    root = Path(asyncvla.__file__).parent
    files = [root / "config.py", root / "policies" / "tiny" / "config.py", root / "envs" / "emulated.py"]
    assert {f.name: _undocumented_fields(f) for f in files} == {f.name: [] for f in files}


@pytest.mark.parametrize("name", ["default", "emulated-e2e", "libero-spatial", "metaworld-learn", "metaworld-scratch"])
def test_every_shipped_preset_loads_and_plans(name):
    from asyncvla.config import list_presets
    from asyncvla.runtime.plan import make_plan

    assert name in list_presets()
    make_plan(load_preset(TrainConfig, name))  # bad combinations would fail here, before anything starts


def test_parsing_every_policy_config_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, asyncvla.config as c\n"
            "for t in ('tiny', 'tiny-gaussian', 'oft', 'flow'): c.policy_config(t)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr[-500:]
