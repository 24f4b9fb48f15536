"""Simulator backends behind one send/recv protocol. No Ray imports here."""

from asyncvla.envs.base import Env, EnvCrashed, EnvError, EnvHung, Obs, StepOut
from asyncvla.envs.registry import backend_names, describe_backends, get_backend, make_env, make_vector_env, validate_env_id
from asyncvla.envs.vector import EnvResult, VectorEnv

__all__ = [
    "Env", "EnvCrashed", "EnvError", "EnvHung", "EnvResult", "Obs", "StepOut", "VectorEnv",
    "backend_names", "describe_backends", "get_backend", "make_env", "make_vector_env", "validate_env_id",
]
