"""The Rust vector environment as a Stable-Baselines3 ``VecEnv`` (SB3 is an optional dependency).

::

    from stable_baselines3 import PPO
    from m3ixup.sb3 import RustVecEnv

    venv = RustVecEnv("multimodal-pendulum", num_envs=8, workers=2, params={"pixel_value": 255})
    PPO("MultiInputPolicy", venv).learn(100_000)

SB3 steps every sub-environment in one call, in Rust, instead of one Python ``step`` per
environment (``DummyVecEnv``). SB3's conventions apply: ``dones`` is terminated or truncated,
a finished sub-environment's ``infos[i]`` carries ``terminal_observation`` and
``TimeLimit.truncated``, and ``episode = {"r", "l", "t"}`` as SB3's ``Monitor`` writes it (so
``ep_info_buffer`` and the logged ``rollout/ep_rew_mean`` work without a ``VecMonitor``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

try:
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError("m3ixup.sb3 needs stable-baselines3: pip install stable-baselines3") from e

from . import VectorEnv

__all__ = ["RustVecEnv"]


class RustVecEnv(VecEnv):
    """``num_envs`` copies of Rust environment ``name`` as an SB3 ``VecEnv``; the other arguments
    are :class:`m3ixup.VectorEnv`'s (``workers`` threads, ``seed``, Rust ``params``)."""

    def __init__(
        self, name: str, num_envs: int = 1, workers: int = 0, seed: int = 0, params: dict | None = None, **kwargs: Any
    ):
        self.venv = VectorEnv(name, num_envs=num_envs, workers=workers, seed=seed, params=params, **kwargs)
        self.render_mode = None
        super().__init__(num_envs, self.venv.single_observation_space, self.venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self):
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        obs, info = self.venv.reset(seed=seeds)
        self.reset_infos = [{"present": info["present"][i]} for i in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async()")
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        out: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key, value in infos.items():
            if key.startswith("_") or key in ("final_obs", "final_info", "episode"):
                continue
            mask = infos.get(f"_{key}", np.ones(self.num_envs, dtype=bool))
            for i in np.flatnonzero(mask):
                out[i][key] = value[i]
        if "episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                out[i]["episode"] = {k: v[i].item() for k, v in infos["episode"].items()}
        for i in np.flatnonzero(dones):
            out[i]["terminal_observation"] = infos["final_obs"][i]
            out[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, rewards.astype(np.float32), dones, out

    def close(self) -> None:
        self.venv.close()

    # Every sub-environment is the same Rust environment: attributes are the vector's.
    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name) if attr_name == "render_mode" else getattr(self.venv, attr_name)] * len(
            self._indices(indices)
        )

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise AttributeError(f"the Rust sub-environments have no settable attribute `{attr_name}`")

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        raise AttributeError(f"the Rust sub-environments cannot be called one by one (`{method_name}`)")

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)
