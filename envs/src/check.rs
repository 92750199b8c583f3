//! `check_env`: the conformance check any environment, built-in or plugged in, can be run
//! through (in the spirit of Gymnasium's `env_checker`).

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::error::panic_message;
use crate::{Action, ActionSpace, Env, EnvError, Obs, Step, INFO_EPISODE_LENGTH, INFO_EPISODE_RETURN};

/// What a passing check saw.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckReport {
    pub steps: usize,
    /// Episodes that ended within the checked steps, and how.
    pub terminated_episodes: usize,
    pub truncated_episodes: usize,
    /// Bad actions that were offered and correctly rejected.
    pub rejected_actions: usize,
    /// Whether the environment saves its state (and so was checked to continue exactly from a
    /// restored one).
    pub saves_state: bool,
}

/// The first way an environment breaks the contract.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckFailure {
    pub env: String,
    pub problem: String,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "check_env: environment `{}` {}", self.env, self.problem)
    }
}

impl std::error::Error for CheckFailure {}

/// Checks the [`Env`] contract over `steps` random-action steps from `seed`:
///
/// 1. the spaces are well formed;
/// 2. `reset` then `step` work, and every observation matches the declared space (count, dtype,
///    length, bounds), with missing modalities holding zeros;
/// 3. rewards are finite; when the episode statistics report a return and a length at an
///    episode's end, they equal the rewards and steps seen since the reset, and they appear on
///    no other step;
/// 4. the same seed and actions give the same episode, bit for bit;
/// 5. bad actions (wrong shape, wrong kind, NaN, a Discrete index out of range) are rejected
///    with [`EnvError::InvalidAction`], not accepted and not a panic;
/// 6. an environment that saves its state ([`Env::save_state`]) continues from a restored state
///    exactly as it did after saving it, across episode ends, bit for bit.
///
/// A panic anywhere is reported as a failure, not propagated.
pub fn check_env(env: &mut dyn Env, seed: u64, steps: usize) -> Result<CheckReport, CheckFailure> {
    let name = env.name().to_string();
    let fail = |problem: String| CheckFailure { env: name.clone(), problem };
    match catch_unwind(AssertUnwindSafe(|| run_checks(env, seed, steps))) {
        Ok(result) => result.map_err(fail),
        Err(panic) => Err(fail(format!("panicked: {}", panic_message(&*panic)))),
    }
}

struct Trajectory {
    observations: Vec<Obs>,
    /// Reward bits and flags per step: compared exactly.
    outcomes: Vec<(u64, bool, bool)>,
}

fn run_checks(env: &mut dyn Env, seed: u64, steps: usize) -> Result<CheckReport, String> {
    for (name, spec) in env.observation_space().iter() {
        spec.validate(name).map_err(|e| format!("declares a bad observation space: {e}"))?;
    }
    env.action_space().validate().map_err(|e| format!("declares a bad action space: {e}"))?;

    let rejected_actions = check_bad_actions(env, seed)?;
    let (first, report) = rollout(env, seed, steps)?;
    let (second, _) = rollout(env, seed, steps)?;
    if let Some(t) = (0..first.observations.len()).find(|&t| first.observations[t] != second.observations[t]) {
        let (a, b) = (&first.observations[t], &second.observations[t]);
        let names: Vec<&str> = (0..a.data.len())
            .filter(|&i| a.data[i] != b.data[i] || a.present[i] != b.present[i])
            .map(|i| env.observation_space().name(i))
            .collect();
        return Err(format!(
            "is not deterministic: with seed {seed} and the same actions, observation {t} differs between two runs (in {})",
            names.join(", ")
        ));
    }
    if let Some(t) = (0..first.outcomes.len()).find(|&t| first.outcomes[t] != second.outcomes[t]) {
        return Err(format!(
            "is not deterministic: with seed {seed} and the same actions, step {} gives a different reward or flags",
            t + 1
        ));
    }
    let saves_state = check_saved_state(env, seed, steps)?;
    Ok(CheckReport { rejected_actions, saves_state, ..report })
}

/// Check 6: steps half of `steps`, saves, steps the rest, restores and steps the rest again
/// with the same actions. Returns whether the environment saves its state at all.
fn check_saved_state(env: &mut dyn Env, seed: u64, steps: usize) -> Result<bool, String> {
    let action_space = env.action_space().clone();
    // What an episode shows, compared exactly (observations, reward bits, flags).
    type Outcome = (Obs, u64, bool, bool);
    let run = |env: &mut dyn Env, actions: &mut StdRng, n: usize| -> Result<Vec<Outcome>, String> {
        let mut seen = Vec::with_capacity(n);
        for t in 1..=n {
            let action = action_space.sample(actions);
            let step = env.step(&action).map_err(|e| format!("failed at step {t} after a saved state: {e}"))?;
            let done = step.done();
            seen.push((step.obs, step.reward.to_bits(), step.terminated, step.truncated));
            if done {
                let (obs, _) = env.reset(None).map_err(|e| format!("failed to reset after a saved state: {e}"))?;
                seen.push((obs, 0, false, false));
            }
        }
        Ok(seen)
    };
    let mut actions = StdRng::seed_from_u64(seed.wrapping_add(1));
    env.reset(Some(seed)).map_err(|e| format!("failed to reset: {e}"))?;
    run(env, &mut actions, steps / 2)?;
    let Some(state) = env.save_state() else {
        return Ok(false);
    };
    let mut same_actions = actions.clone();
    let after_save = run(env, &mut actions, steps - steps / 2)?;
    env.restore_state(&state).map_err(|e| format!("cannot restore the state it saved: {e}"))?;
    let after_restore = run(env, &mut same_actions, steps - steps / 2)?;
    if let Some(t) = (0..after_save.len()).find(|&t| after_save.get(t) != after_restore.get(t)) {
        return Err(format!(
            "does not continue exactly from a restored state: {} steps after the save, the observation, reward \
             or flags differ from what followed the save itself",
            t + 1
        ));
    }
    Ok(true)
}

fn rollout(env: &mut dyn Env, seed: u64, steps: usize) -> Result<(Trajectory, CheckReport), String> {
    let space = env.observation_space().clone();
    let action_space = env.action_space().clone();
    let mut actions = StdRng::seed_from_u64(seed);
    let check_obs = |obs: &Obs, when: &str| -> Result<(), String> {
        obs.check(&space).map_err(|e| format!("returned an observation that does not match its space {when}: {e}"))?;
        for (i, present) in obs.present.iter().enumerate() {
            if !present && (0..obs.data[i].len()).any(|j| obs.data[i].get_f32(j) != 0.0) {
                return Err(format!("marks modality `{}` missing {when} but its data is not cleared", space.name(i)));
            }
        }
        Ok(())
    };

    let (obs, _) = env.reset(Some(seed)).map_err(|e| format!("failed to reset: {e}"))?;
    check_obs(&obs, "at reset")?;
    let mut trajectory = Trajectory { observations: vec![obs], outcomes: Vec::with_capacity(steps) };
    let mut report =
        CheckReport { steps, terminated_episodes: 0, truncated_episodes: 0, rejected_actions: 0, saves_state: false };
    let (mut episode_return, mut episode_length) = (0.0f64, 0usize);
    for t in 1..=steps {
        let action = action_space.sample(&mut actions);
        let Step { obs, reward, terminated, truncated, info } =
            env.step(&action).map_err(|e| format!("failed at step {t} with the valid action {action:?}: {e}"))?;
        check_obs(&obs, &format!("at step {t}"))?;
        if !reward.is_finite() {
            return Err(format!("returned the reward {reward} at step {t}"));
        }
        episode_return += reward;
        episode_length += 1;
        let done = terminated || truncated;
        for (key, expected) in [(INFO_EPISODE_RETURN, episode_return), (INFO_EPISODE_LENGTH, episode_length as f64)] {
            match info.get(key) {
                Some(_) if !done => {
                    return Err(format!("reports `{key}` at step {t}, which neither terminated nor truncated"))
                }
                Some(v) if (v - expected).abs() > 1e-6 * expected.abs().max(1.0) => {
                    return Err(format!(
                        "reports `{key}` = {v} at the end of an episode whose steps add up to {expected}"
                    ))
                }
                _ => {}
            }
        }
        trajectory.observations.push(obs);
        trajectory.outcomes.push((reward.to_bits(), terminated, truncated));
        if done {
            report.terminated_episodes += terminated as usize;
            report.truncated_episodes += (truncated && !terminated) as usize;
            let (obs, _) =
                env.reset(None).map_err(|e| format!("failed to reset after the episode ended at step {t}: {e}"))?;
            check_obs(&obs, &format!("at the reset after step {t}"))?;
            trajectory.observations.push(obs);
            (episode_return, episode_length) = (0.0, 0);
        }
    }
    Ok((trajectory, report))
}

/// Offers every kind of bad action after a reset; each must come back as `InvalidAction`.
fn check_bad_actions(env: &mut dyn Env, seed: u64) -> Result<usize, String> {
    let bad: Vec<(Action, &str)> = match env.action_space() {
        ActionSpace::Box { low, .. } => {
            let n = low.len();
            let mut nan = low.clone();
            nan[0] = f32::NAN;
            vec![
                (Action::Continuous(vec![0.0; n + 1]), "one value too many"),
                (Action::Continuous(vec![]), "no values"),
                (Action::Continuous(nan), "a NaN value"),
                (Action::Discrete(0), "a discrete action for a Box space"),
            ]
        }
        ActionSpace::Discrete(n) => vec![
            (Action::Discrete(-1), "the index -1"),
            (Action::Discrete(*n as i64), "the index n (one past the last)"),
            (Action::Continuous(vec![0.0]), "a continuous action for a Discrete space"),
        ],
    };
    env.reset(Some(seed)).map_err(|e| format!("failed to reset: {e}"))?;
    for (action, what) in &bad {
        match catch_unwind(AssertUnwindSafe(|| env.step(action))) {
            Ok(Err(EnvError::InvalidAction { .. })) => {}
            Ok(Err(other)) => {
                return Err(format!("rejected {what} ({action:?}) with a different error than InvalidAction: {other}"))
            }
            Ok(Ok(_)) => return Err(format!("accepted {what} ({action:?}) instead of rejecting it")),
            Err(panic) => {
                return Err(format!(
                    "panicked on {what} ({action:?}) instead of rejecting it: {}",
                    panic_message(&*panic)
                ))
            }
        }
    }
    Ok(bad.len())
}
