"""Config tree: bad values fail early with one line naming the field; presets load strictly."""

import pytest

from asyncvla.config import AlgoConfig, ConfigError, EnvConfig, PolicyConfig, WrapperConfig, from_dict, load_preset
from asyncvla.envs import validate_env_id


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: EnvConfig(num_envs=0), "env.num_envs"),
        (lambda: EnvConfig(id="reach-v3"), "env.id"),
        (lambda: EnvConfig(image_size=2), "env.image_size"),
        (lambda: WrapperConfig(fault_prob=1.5), "env.wrappers.fault_prob"),
        (lambda: PolicyConfig(hidden_dim=30, num_heads=4), "policy.hidden_dim"),
        (lambda: AlgoConfig(dual_clip=0.5), "algo.dual_clip"),
        (lambda: AlgoConfig(name="sac"), "algo.name"),
    ],
)
def test_bad_value_names_the_field(make, field):
    with pytest.raises(ConfigError) as e:
        make()
    msg = str(e.value)
    assert msg.startswith(field + "=") and "\n" not in msg


def test_unknown_backend_and_task_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"backend 'nope' is invalid: allowed: metaworld, libero, maniskill, emulated"):
        validate_env_id(EnvConfig(id="nope/x"))
    with pytest.raises(ConfigError, match=r"env.id='emulated/what' is invalid: unknown emulated task; allowed: custom"):
        validate_env_id(EnvConfig(id="emulated/what"))


def test_from_dict_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(ConfigError, match="unknown field.*num_env\\b"):
        from_dict(EnvConfig, {"num_env": 3})
    with pytest.raises(ConfigError, match="num_envs"):
        from_dict(EnvConfig, {"num_envs": "three"})
    cfg = from_dict(EnvConfig, {"num_envs": 3, "emulated": {"step_mean_s": 0.5}})
    assert cfg.num_envs == 3 and cfg.emulated.step_mean_s == 0.5 and cfg.emulated.reset_s == 0.1


def test_unknown_preset_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match="preset='no-such-preset' is invalid: allowed:"):
        load_preset(EnvConfig, "no-such-preset")
