"""The Rust environments as Gymnasium environments: conformance, vector environment, errors."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import m3ixup

NAMES = m3ixup.registered_names()


def test_every_builtin_is_registered_in_the_m3ixup_namespace():
    assert {"multimodal-pendulum", "pixel-cartpole", "reacher"} <= set(NAMES)
    for name in NAMES:
        assert f"m3ixup/{name}" in gym.registry


@pytest.mark.parametrize("name", NAMES)
def test_gymnasium_check_env_passes(name):
    env = gym.make(f"m3ixup/{name}", render_mode="rgb_array")
    check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("name", NAMES)
def test_check_env_passes_under_sensor_dropout(name):
    env = gym.make(f"m3ixup/{name}", params={"sensor_dropout": {"mode": "per-step", "p": 0.5}})
    check_env(env.unwrapped, skip_render_check=True)


def test_spaces_and_observations_are_named_modalities():
    env = gym.make("m3ixup/multimodal-pendulum", params={"proprio": True, "frame_stack": 3})
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict)
    assert list(space.spaces) == ["pixels", "proprio", "sound"]
    assert space["pixels"].shape == (3, 60, 60) and space["pixels"].dtype == np.uint8
    assert space["sound"].shape == (18,) and space["sound"].dtype == np.float32
    assert env.action_space == gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    obs, info = env.reset(seed=7)
    assert space.contains(obs)
    np.testing.assert_array_equal(info["present"], [True, True, True])
    assert gym.make("m3ixup/pixel-cartpole").action_space == gym.spaces.Discrete(2)


def test_seeded_reset_repeats_the_episode():
    env = gym.make("m3ixup/reacher")
    first = [env.reset(seed=11)[0]] + [env.step(np.array([0.3, -0.2]))[0] for _ in range(5)]
    second = [env.reset(seed=11)[0]] + [env.step(np.array([0.3, -0.2]))[0] for _ in range(5)]
    for a, b in zip(first, second):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other = env.reset(seed=12)[0]
    assert not np.array_equal(other["proprio"], first[0]["proprio"])


def test_render_returns_the_newest_pixels_as_rgb():
    env = gym.make("m3ixup/multimodal-pendulum", render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (60, 60, 3) and frame.dtype == np.uint8
    # Binary pixels scaled to 0/255, the three channels equal, and the rod visible.
    assert set(np.unique(frame)) == {0, 255}
    np.testing.assert_array_equal(frame[..., 0], obs["pixels"][-1] * 255)
    assert gym.make("m3ixup/reacher").unwrapped.render() is None
    with pytest.raises(ValueError, match="no uint8 image modality"):
        gym.make("m3ixup/reacher", render_mode="rgb_array", params={"pixels": False})


def test_sensor_dropout_shows_in_info_present():
    env = gym.make("m3ixup/reacher", params={"sensor_dropout": {"mode": "fixed", "modalities": ["pixels"]}})
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(info["present"], [False, True])
    assert not obs["pixels"].any()


def test_episode_statistics_come_through_info():
    env = gym.make("m3ixup/reacher", params={"max_episode_steps": 5})
    env.reset(seed=0)
    total = 0.0
    for t in range(5):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        total += reward
    assert truncated and not terminated
    assert info["episode/length"] == 5
    assert info["episode/return"] == pytest.approx(total)


# --- The Rust vector environment -------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_vector_env_batches_match_single_environments(workers):
    n = 4
    venv = m3ixup.VectorEnv("reacher", num_envs=n, workers=workers)
    assert venv.observation_space["pixels"].shape == (n, 2, 64, 64)
    assert venv.single_action_space.shape == (2,)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    obs, info = venv.reset(seed=100)
    assert venv.observation_space.contains(obs)
    assert obs["pixels"].flags["C_CONTIGUOUS"] and obs["pixels"].dtype == np.uint8
    assert info["present"].shape == (n, 2)
    singles = [gym.make("m3ixup/reacher") for _ in range(n)]
    single_obs = [env.reset(seed=100 + i)[0] for i, env in enumerate(singles)]
    rng = np.random.default_rng(0)
    for _ in range(20):
        actions = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
        obs, rewards, terminated, truncated, infos = venv.step(actions)
        assert rewards.shape == (n,) and terminated.dtype == bool
        single_obs = []
        for i, env in enumerate(singles):
            o, r, *_ = env.step(actions[i])
            single_obs.append(o)
            assert rewards[i] == r
    for i in range(n):
        for key in obs:
            np.testing.assert_array_equal(obs[key][i], single_obs[i][key])
    venv.close()


def test_vector_env_same_step_autoreset_keeps_the_final_observation():
    venv = m3ixup.VectorEnv("reacher", num_envs=3, params={"max_episode_steps": 4})
    obs, _ = venv.reset(seed=0)
    for t in range(4):
        last = obs
        obs, rewards, terminated, truncated, infos = venv.step(np.zeros((3, 2), np.float32))
    assert truncated.all()
    assert infos["_final_obs"].all()
    np.testing.assert_array_equal(infos["episode/length"], [4, 4, 4])
    assert infos["_episode/length"].all()
    final = infos["final_obs"][1]
    assert set(final) == {"pixels", "proprio"}
    # The final observation continues the episode; obs is the next episode's first.
    assert not np.array_equal(final["proprio"], obs["proprio"][1])


def test_vector_env_discrete_actions_and_gymnasium_sync_vector_agree():
    n = 3
    ours = m3ixup.VectorEnv("pixel-cartpole", num_envs=n)
    theirs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("m3ixup/pixel-cartpole") for _ in range(n)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    a, _ = ours.reset(seed=5)
    b, _ = theirs.reset(seed=5)
    for step in range(60):
        actions = np.array([(step + i) % 2 for i in range(n)])
        a, ra, ta, tra, _ = ours.step(actions)
        b, rb, tb, trb, _ = theirs.step(actions)
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(ta, tb)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_vector_env_gives_final_info_and_episode_statistics_in_gymnasiums_layout():
    n = 3
    ours = m3ixup.VectorEnv("reacher", num_envs=n, params={"max_episode_steps": 5})
    theirs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("m3ixup/reacher", params={"max_episode_steps": 5}) for _ in range(n)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    ours.reset(seed=3)
    theirs.reset(seed=3)
    returns = np.zeros(n)
    rng = np.random.default_rng(0)
    for t in range(5):
        actions = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
        _, rewards, _, truncated, infos = ours.step(actions)
        _, _, _, _, expected = theirs.step(actions)
        returns += rewards
        if t < 4:
            assert "final_info" not in infos and not infos.get("_episode", np.zeros(n, bool)).any()
    assert truncated.all() and infos["_final_info"].all() and infos["_final_obs"].all()
    # final_info: the finishing step's info, batched as SyncVectorEnv batches it.
    for key in ("episode/return", "episode/length"):
        np.testing.assert_allclose(infos["final_info"][key], expected["final_info"][key])
        np.testing.assert_array_equal(infos["final_info"][f"_{key}"], expected["final_info"][f"_{key}"])
    # episode: RecordEpisodeStatistics' {"r", "l", "t"} with its mask.
    assert infos["_episode"].all()
    np.testing.assert_allclose(infos["episode"]["r"], returns)
    np.testing.assert_array_equal(infos["episode"]["l"], [5, 5, 5])
    assert infos["episode"]["l"].dtype == np.int64 and (infos["episode"]["t"] > 0).all()


def test_vector_env_reset_takes_one_seed_per_sub_environment():
    venv = m3ixup.VectorEnv("reacher", num_envs=3)
    obs, _ = venv.reset(seed=[9, None, 4])
    for i, seed in [(0, 9), (2, 4)]:
        single, _ = gym.make("m3ixup/reacher").reset(seed=seed)
        np.testing.assert_array_equal(obs["proprio"][i], single["proprio"])
    consecutive, _ = venv.reset(seed=[20, 21, 22])
    base, _ = venv.reset(seed=20)
    np.testing.assert_array_equal(consecutive["proprio"], base["proprio"])
    with pytest.raises(ValueError, match="2 seeds for 3 environments"):
        venv.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        venv.reset(seed=[1, -2, 3])


def test_make_vec_uses_the_rust_vector_env_and_specs_say_the_rust_time_limit():
    venv = gym.make_vec("m3ixup/reacher", num_envs=2, vectorization_mode="vector_entry_point")
    assert isinstance(venv, m3ixup.VectorEnv) and venv.num_envs == 2
    venv.reset(seed=0)
    assert venv.step(np.zeros((2, 2), np.float32))[0]["proprio"].shape[0] == 2
    short = gym.make_vec("m3ixup/reacher", num_envs=2, vectorization_mode="vector_entry_point", max_episode_steps=6)
    assert short.spec.max_episode_steps == 6
    assert all(gym.make(f"m3ixup/{name}").spec.max_episode_steps for name in NAMES)
    for name in ["multimodal-pendulum", "reacher"]:  # they never terminate: the limit ends them
        env = gym.make(f"m3ixup/{name}")
        env.reset(seed=0)
        steps, truncated = 0, False
        while not truncated:
            _, _, _, truncated, _ = env.step(env.action_space.sample())
            steps += 1
        assert steps == env.spec.max_episode_steps, name
    assert gym.make("m3ixup/reacher", params={"max_episode_steps": 7}).spec.max_episode_steps == 7


# --- Errors are Python exceptions with the Rust message ---------------------------------------


def test_unknown_environment_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown environment `no-such-env`.*multimodal-pendulum"):
        m3ixup.M3ixupEnv("no-such-env")
    with pytest.raises(gym.error.NameNotFound):
        gym.make("m3ixup/no-such-env")


def test_bad_parameters_name_the_parameter():
    with pytest.raises(ValueError, match="reacher.*image_sise"):
        gym.make("m3ixup/reacher", params={"image_sise": 32})
    with pytest.raises(ValueError, match="frame_stack"):
        gym.make("m3ixup/reacher", params={"frame_stack": -1})
    with pytest.raises(ValueError, match="parameter `ctrl_cost`"):
        gym.make("m3ixup/reacher", params={"ctrl_cost": object()})
    with pytest.raises(ValueError, match="num_envs"):
        m3ixup.VectorEnv("reacher", num_envs=0)


def test_bad_actions_and_misuse_raise_not_crash():
    env = m3ixup.M3ixupEnv("reacher")
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(np.zeros(2, np.float32))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="rejected the action: expected 2 continuous values, got 3"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="not finite"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(gym.error.Error, match="Seed must be greater or equal to zero"):
        env.reset(seed=-1)
    cartpole = m3ixup.M3ixupEnv("pixel-cartpole")
    cartpole.reset(seed=0)
    with pytest.raises(ValueError, match="outside 0..2"):
        cartpole.step(5)
    venv = m3ixup.VectorEnv("pixel-cartpole", num_envs=2)
    with pytest.raises(RuntimeError, match="before reset"):
        venv.step(np.zeros(2, np.int64))
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="outside 0..2"):
        venv.step(np.array([0, 7]))
    # A rejected batch changes nothing: the vector environment still steps.
    venv.step(np.array([0, 1]))


# --- Optional: Stable-Baselines3 --------------------------------------------------------------


def test_stable_baselines3_ppo_runs_on_the_multimodal_pendulum():
    try:
        from stable_baselines3 import PPO
    except ImportError:
        pytest.skip("stable_baselines3 is not installed (pip install stable-baselines3 to run this test)")
    env = gym.make("m3ixup/multimodal-pendulum", params={"proprio": True})
    model = PPO("MultiInputPolicy", env, n_steps=512, batch_size=128, n_epochs=2, seed=0, verbose=0)
    model.learn(total_timesteps=2048)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)


def test_stable_baselines3_takes_pixels_on_0_255_for_an_image_and_gives_them_its_cnn():
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.torch_layers import NatureCNN
    except ImportError:
        pytest.skip("stable_baselines3 is not installed (pip install stable-baselines3 to run this test)")
    binary = PPO("MultiInputPolicy", gym.make("m3ixup/multimodal-pendulum"), n_steps=64, batch_size=32, seed=0)
    assert not isinstance(binary.policy.features_extractor.extractors["pixels"], NatureCNN), "0..1 is not an image"
    env = gym.make("m3ixup/multimodal-pendulum", params={"pixel_value": 255})
    model = PPO("MultiInputPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, verbose=0)
    assert isinstance(model.policy.features_extractor.extractors["pixels"], NatureCNN)
    model.learn(total_timesteps=128)


def test_stable_baselines3_ppo_with_its_cnn_trains_through_the_rust_vector_env():
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.torch_layers import NatureCNN
        from stable_baselines3.common.vec_env import DummyVecEnv
    except ImportError:
        pytest.skip("stable_baselines3 is not installed (pip install stable-baselines3 to run this test)")
    from m3ixup.sb3 import RustVecEnv

    params = {"pixel_value": 255, "max_episode_steps": 16}
    # Step for step the same as SB3's DummyVecEnv of the Gymnasium environments.
    ours = RustVecEnv("multimodal-pendulum", num_envs=3, params=params)
    theirs = DummyVecEnv([lambda: gym.make("m3ixup/multimodal-pendulum", params=params) for _ in range(3)])
    ours.seed(5)
    theirs.seed(5)
    a, b = ours.reset(), theirs.reset()
    for t in range(16):
        actions = np.full((3, 1), 0.5 * np.sin(t), np.float32)
        a, ra, da, ia = ours.step(actions)
        b, rb, db, ib = theirs.step(actions)
        np.testing.assert_allclose(ra, rb, rtol=1e-6)
        np.testing.assert_array_equal(da, db)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert da.all()
    for i in range(3):
        assert ia[i]["TimeLimit.truncated"] and ib[i]["TimeLimit.truncated"]
        for key in ia[i]["terminal_observation"]:
            np.testing.assert_array_equal(ia[i]["terminal_observation"][key], ib[i]["terminal_observation"][key])
        assert ia[i]["episode"]["l"] == 16 and ia[i]["episode"]["r"] == pytest.approx(ia[i]["episode/return"])

    model = PPO("MultiInputPolicy", ours, n_steps=32, batch_size=48, n_epochs=1, seed=0, verbose=0)
    assert isinstance(model.policy.features_extractor.extractors["pixels"], NatureCNN)
    model.learn(total_timesteps=192)
    assert model.num_timesteps == 192
    assert len(model.ep_info_buffer) >= 3 and all(e["l"] == 16 for e in model.ep_info_buffer)
