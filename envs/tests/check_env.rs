//! `check_env` passes every built-in environment and catches each kind of contract breach.

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
        check_env(env.as_mut(), 5, 300).unwrap_or_else(|e| panic!("{e}"));
    }
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
    ];
    for (flaw, expected) in cases {
        let mut env = Flawed { inner: Counter::new(None), flaw };
        let failure = check_env(&mut env, 0, 50).expect_err(&format!("{flaw:?} passed"));
        let text = failure.to_string();
        assert!(text.contains("`flawed`") && text.contains(expected), "{flaw:?}: {text}");
    }
}
