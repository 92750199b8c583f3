"""The m3ixup environments (Rust) as Gymnasium environments.

Importing this package registers every Rust environment with Gymnasium as ``m3ixup/<name>``::

    import gymnasium as gym
    import m3ixup

    env = gym.make("m3ixup/multimodal-pendulum", render_mode="rgb_array", params={"proprio": True})
    obs, info = env.reset(seed=0)      # obs: {"pixels": uint8 [2, 60, 60], "proprio": ..., "sound": ...}
    frame = env.render()               # uint8 [60, 60, 3]

    envs = m3ixup.VectorEnv("reacher", num_envs=8, workers=2)   # the Rust vector environment
    envs = gym.make_vec("m3ixup/reacher", num_envs=8, vectorization_mode="vector_entry_point")  # the same

Observations are a ``Dict`` of the named modalities (numpy arrays, shapes and bounds from the
Rust spaces; stacked frames are the leading axis). ``info["present"]`` holds one presence flag per
modality (False where sensor dropout removed it). Parameters are the Rust ones (README,
"Parameters"): pass them as keyword arguments or as ``params={...}``; ``max_episode_steps`` given
to ``gym.make`` is Gymnasium's own time limit, on top of the Rust one (set that as
``params={"max_episode_steps": N}``); ``env.spec.max_episode_steps`` is the Rust limit.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from . import _native
from .training import evaluate, report, train

__all__ = ["M3ixupEnv", "VectorEnv", "registered_names", "register_all", "train", "evaluate", "report"]

NAMESPACE = "m3ixup"


def registered_names() -> list[str]:
    """Names of the environments the Rust registry knows."""
    return list(_native.registered_names())


def _with_rust_limit(spec, limit: int | None):
    """``spec`` saying the Rust time limit, which truncates episodes whatever Gymnasium's is."""
    if spec is None or limit is None or spec.max_episode_steps is not None:
        return spec
    return dataclasses.replace(spec, max_episode_steps=limit)


def _observation_space(spec) -> spaces.Dict:
    modalities = {}
    for name, shape, dtype, low, high in spec:
        dtype = np.dtype(dtype)
        modalities[name] = spaces.Box(
            low=low.reshape(shape).astype(dtype), high=high.reshape(shape).astype(dtype), shape=shape, dtype=dtype
        )
    return spaces.Dict(modalities)


def _action_space(spec) -> spaces.Space:
    if spec[0] == "discrete":
        return spaces.Discrete(int(spec[1]))
    return spaces.Box(low=spec[1], high=spec[2], dtype=np.float32)


def _params(params: dict | None, kwargs: dict) -> dict:
    merged = dict(params or {})
    merged.update(kwargs)
    return merged


def _frame(pixels: np.ndarray, high: float) -> np.ndarray:
    """The newest frame of a ``[C, H, W]`` uint8 modality as RGB ``[H, W, 3]``.

    Built-in images are one grey channel per stacked frame, oldest first: the last channel is the
    newest frame. Binary images (bounds [0, 1]) are scaled to [0, 255].
    """
    frame = pixels[-1]
    if high < 255:
        frame = (frame.astype(np.uint16) * (255 // max(int(high), 1))).astype(np.uint8)
    return np.repeat(frame[:, :, None], 3, axis=2)


class M3ixupEnv(gym.Env):
    """One Rust environment as a ``gymnasium.Env``: ``M3ixupEnv("reacher", image_size=48)``."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, name: str, render_mode: str | None = None, params: dict | None = None, **kwargs: Any):
        params = _params(params, kwargs)
        self._env = _native.Env(name, params)
        self._max_episode_steps = _native.max_episode_steps(name, params)
        self._spec = None
        self.env_name = name
        self.observation_space = _observation_space(self._env.observation_spec())
        self.action_space = _action_space(self._env.action_spec())
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not supported (use 'rgb_array' or None)")
        self.render_mode = render_mode
        self._image = self._image_modality()
        if render_mode == "rgb_array" and self._image is None:
            raise ValueError(f"`{name}` has no uint8 image modality to render")

    # ``gym.make`` sets the spec with max_episode_steps=None (its own TimeLimit holds the limit);
    # the Rust environment truncates at its own, which is what the spec should say.
    @property
    def spec(self):
        return self._spec

    @spec.setter
    def spec(self, value):
        self._spec = _with_rust_limit(value, self._max_episode_steps)

    def _image_modality(self):
        names = list(self.observation_space.spaces)
        for preferred in ["pixels"] + names:
            box = self.observation_space.spaces.get(preferred)
            if box is not None and box.dtype == np.uint8 and len(box.shape) == 3:
                return preferred, float(box.high.max())
        return None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        return self._env.reset(seed)

    def step(self, action):
        if isinstance(self.action_space, spaces.Discrete):
            action = int(action)
        else:
            action = np.ascontiguousarray(action, dtype=np.float32).reshape(-1)
        return self._env.step(action)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        name, high = self._image
        pixels = self._env.last_modality(name)
        if pixels is None:
            raise gym.error.ResetNeeded("render() before reset()")
        return _frame(pixels, high)


class VectorEnv(gym.vector.VectorEnv):
    """The Rust vector environment as a ``gymnasium.vector.VectorEnv``.

    ``num_envs`` copies of environment ``name`` stepped in Rust (inline, or over ``workers``
    threads with the GIL released). Autoreset is same-step (``metadata["autoreset_mode"]``), with
    Gymnasium's ``SyncVectorEnv`` layout: a finished sub-environment is reset within the step;
    ``infos["final_obs"][i]`` holds its last observation and ``infos["final_info"]`` the
    finishing step's info (batched, with ``_final_obs``/``_final_info`` masks). Finished
    episodes' statistics come as ``infos["episode"] = {"r", "l", "t"}`` with ``infos["_episode"]``
    (``RecordEpisodeStatistics``' layout, which CleanRL reads), and as the flat
    ``episode/return`` and ``episode/length``. ``reset(seed=s)`` seeds sub-environment ``i`` with
    ``s + i``; ``reset(seed=[s0, s1, ...])`` each with its own (``None``: it continues its
    stream). Observations are ``{modality: array [num_envs, ...]}``, each copied once from the
    Rust batch buffer.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self, name: str, num_envs: int = 1, workers: int = 0, seed: int = 0, params: dict | None = None, **kwargs: Any
    ):
        params = _params(params, kwargs)
        self._venv = _native.VecEnv(name, params, num_envs, workers, seed)
        self._max_episode_steps = _native.max_episode_steps(name, params)
        self._spec = None
        self._episode_start = np.full(num_envs, time.perf_counter())
        self.env_name = name
        self.num_envs = num_envs
        self.single_observation_space = _observation_space(self._venv.observation_spec())
        self.single_action_space = _action_space(self._venv.action_spec())
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._discrete = isinstance(self.single_action_space, spaces.Discrete)

    @property
    def spec(self):
        return self._spec

    @spec.setter
    def spec(self, value):
        self._spec = _with_rust_limit(value, self._max_episode_steps)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        if isinstance(seed, (list, tuple, np.ndarray)):
            seeds = [None if s is None else int(s) for s in seed]
            if len(seeds) != self.num_envs:
                raise ValueError(f"{len(seeds)} seeds for {self.num_envs} environments: give one per environment")
            if any(s is not None and s < 0 for s in seeds):
                raise ValueError(f"seeds must be non-negative, got {seeds}")
            first = next((s for s in seeds if s is not None), None)
            super().reset(seed=first)
            obs, present = self._venv.reset_each(seeds)
        else:
            super().reset(seed=seed)
            if seed is not None and seed < 0:
                raise ValueError(f"seed must be non-negative, got {seed}")
            obs, present = self._venv.reset(seed)
        self._episode_start[:] = time.perf_counter()
        return obs, {"present": present, "_present": np.ones(self.num_envs, dtype=bool)}

    def step(self, actions):
        if self._discrete:
            actions = np.ascontiguousarray(actions, dtype=np.int64).reshape(self.num_envs)
        else:
            actions = np.ascontiguousarray(actions, dtype=np.float32).reshape(self.num_envs, -1)
        obs, rewards, terminated, truncated, infos = self._venv.step(actions)
        done = terminated | truncated
        now = time.perf_counter()
        if "episode/return" in infos:
            ended = infos["_episode/return"]
            infos["episode"] = {
                "r": infos["episode/return"],
                "l": infos["episode/length"].astype(np.int64),
                "t": np.where(ended, np.round(now - self._episode_start, 6), 0.0),
            }
            infos["_episode"] = ended
        if done.any():
            infos["final_info"] = self._final_info(infos, done)
            infos["_final_info"] = done
            self._episode_start[done] = now
        return obs, rewards, terminated, truncated, infos

    @staticmethod
    def _final_info(infos: dict, done: np.ndarray) -> dict:
        """The finishing step's info of each finished sub-environment, batched with ``_key`` masks.

        The step's own info keys are the finishing step's already (the Rust vector environment
        drops the reset's info); ``present`` and ``final_obs`` belong to the new episode's first
        observation and to ``final_obs``, so they stay out.
        """
        final = {}
        for key, value in infos.items():
            if key.startswith("_") or key in ("present", "final_obs", "final_info"):
                continue
            mask = infos.get(f"_{key}", np.ones_like(done))
            if isinstance(value, dict):
                final[key] = dict(value)
            else:
                final[key] = value
            final[f"_{key}"] = mask & done
        return final

    def __repr__(self) -> str:
        return f"m3ixup.VectorEnv({self.env_name}, num_envs={self.num_envs})"


def register_all() -> list[str]:
    """Registers every Rust environment with Gymnasium as ``m3ixup/<name>`` (idempotent)."""
    ids = []
    for name in registered_names():
        env_id = f"{NAMESPACE}/{name}"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=M3ixupEnv, vector_entry_point=VectorEnv, kwargs={"name": name})
        ids.append(env_id)
    return ids


register_all()
