//! `check_env` passes every built-in environment and catches each kind of contract breach.

use m3ixup_envs::wrappers::{SensorNoise, StaleSensor};
use m3ixup_envs::{check_env, make, registered_names};

mod common;
use common::{Counter, Flaw, Flawed};

#[test]
fn every_builtin_environment_passes_check_env() {
    let names = registered_names();
    assert!(names.len() >= 3, "{names:?}");
    for name in names {
        for seed in [0, 123] {
            let mut env = make(&name, &toml::Table::new()).unwrap();
            let report = check_env(env.as_mut(), seed, 600).unwrap_or_else(|e| panic!("{e}"));
            assert!(report.rejected_actions >= 3);
            assert!(report.saves_state, "{name} does not save its state");
            assert!(
                report.terminated_episodes + report.truncated_episodes >= 1,
                "{name}: no episode ended in 600 steps"
            );
        }
    }
}

#[test]
fn builtins_pass_check_env_under_per_step_sensor_dropout() {
    for name in registered_names() {
        let params: toml::Table = toml::from_str("sensor_dropout = { mode = \"per-step\", p = 0.5 }").unwrap();
        let mut env = make(&name, &params).unwrap();
        let report = check_env(env.as_mut(), 5, 300).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.saves_state, "{name} under dropout does not save its state");
    }
}

#[test]
fn builtins_with_every_wrapper_continue_exactly_from_a_restored_state() {
    // Frame stack, per-episode dropout, a short time limit (episodes end within the check),
    // then sensor noise and a frozen sensor around them: each wrapper's own state must
    // round-trip too.
    let params: toml::Table =
        toml::from_str("frame_stack = 3\nmax_episode_steps = 25\nsensor_dropout = { mode = \"per-episode\", p = 0.5 }")
            .unwrap();
    for name in registered_names() {
        let env = make(&name, &params).unwrap();
        let noisy = env.observation_space().name(0).to_string();
        let frozen = env.observation_space().name(env.observation_space().len() - 1).to_string();
        let mut env = StaleSensor::new(SensorNoise::new(env, &noisy, 0.1).unwrap(), &frozen).unwrap();
        let report = check_env(&mut env, 9, 200).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(report.saves_state && report.truncated_episodes >= 2, "{name}: {report:?}");
    }
}

#[test]
fn a_state_saved_by_one_environment_is_refused_by_another() {
    let mut pendulum = make("multimodal-pendulum", &toml::Table::new()).unwrap();
    pendulum.reset(Some(1)).unwrap();
    let state = pendulum.save_state().unwrap();
    let mut cartpole = make("pixel-cartpole", &toml::Table::new()).unwrap();
    let error = cartpole.restore_state(&state).unwrap_err().to_string();
    assert!(error.contains("pixel-cartpole") && error.contains("multimodal-pendulum"), "{error}");
    // Another wrapper stack (no frame stack), or another stack depth.
    let mut unstacked = make("multimodal-pendulum", &toml::from_str("frame_stack = 1").unwrap()).unwrap();
    let error = unstacked.restore_state(&state).unwrap_err().to_string();
    assert!(error.contains("FrameStack"), "{error}");
    let mut deeper = make("multimodal-pendulum", &toml::from_str("frame_stack = 3").unwrap()).unwrap();
    let error = deeper.restore_state(&state).unwrap_err().to_string();
    assert!(error.contains("3 frames"), "{error}");
}

#[test]
fn a_well_behaved_custom_environment_passes() {
    let report = check_env(&mut Counter::new(Some(40)), 0, 100).unwrap();
    assert_eq!(report.terminated_episodes, 2);
}

#[test]
fn check_env_names_each_kind_of_contract_breach() {
    let cases = [
        (Flaw::Nondeterministic, "is not deterministic"),
        (Flaw::AcceptsAnything, "accepted"),
        (Flaw::PanicsOnBadAction, "panicked on one value too many"),
        (Flaw::LeavesBounds, "outside its bounds"),
        (Flaw::MissingButNotCleared, "its data is not cleared"),
        (Flaw::RestoresPartOfItsState, "does not continue exactly from a restored state"),
    ];
    for (flaw, expected) in cases {
        let mut env = Flawed { inner: Counter::new(None), flaw };
        let failure = check_env(&mut env, 0, 50).expect_err(&format!("{flaw:?} passed"));
        let text = failure.to_string();
        assert!(text.contains("`flawed`") && text.contains(expected), "{flaw:?}: {text}");
    }
}
