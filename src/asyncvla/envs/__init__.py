"""Simulator backends behind one send/recv protocol. No Ray imports here."""

import os

# Headless by default (servers, CI, Ray workers): MuJoCo renders through EGL unless the user
# chose another backend (MUJOCO_GL=glfw on a desktop). Must precede any mujoco import.
os.environ.setdefault("MUJOCO_GL", "egl")

from asyncvla.envs.base import Env, EnvCrashed, EnvError, EnvHung, Obs, StepOut
from asyncvla.envs.registry import backend_names, describe_backends, get_backend, make_env, make_vector_env, validate_env_id
from asyncvla.envs.vector import EnvResult, VectorEnv

__all__ = [
    "Env", "EnvCrashed", "EnvError", "EnvHung", "EnvResult", "Obs", "StepOut", "VectorEnv",
    "backend_names", "describe_backends", "get_backend", "make_env", "make_vector_env", "validate_env_id",
]
