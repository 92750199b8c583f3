//! On-policy rollout storage and generalised advantage estimation (GAE, Schulman et al. 2016)
//! with `terminated` and `truncated` kept apart.
//!
//! **Bootstrapping.** A terminated step ends the MDP: its target is the reward alone. A
//! truncated step was cut by a limit: its target is `r + gamma * V(final observation)` (the
//! vector environment keeps that observation, see `VecEnv`), and the advantage recursion stops
//! there because the next stored step belongs to a new episode. CleanRL treats truncation as
//! termination (cleanrl issues 198 and 457); this module does not.

use crate::representation::storage::ObsBuffer;
use m3ixup_envs::ObsSpace;

/// One rollout of `steps x num_envs` transitions, step-major: transition `(t, i)` is row
/// `t * num_envs + i` of every field.
#[derive(Clone, Debug)]
pub struct Rollout {
    pub num_envs: usize,
    /// Observations acted on (pixels as `u8`).
    pub obs: ObsBuffer,
    /// Raw actions, `action_width` values per transition.
    pub actions: Vec<f32>,
    pub action_width: usize,
    pub log_probs: Vec<f32>,
    pub values: Vec<f32>,
    pub rewards: Vec<f32>,
    pub terminated: Vec<bool>,
    pub truncated: Vec<bool>,
    /// V(final observation) for truncated transitions, 0 elsewhere.
    pub truncation_values: Vec<f32>,
}

impl Rollout {
    pub fn new(space: &ObsSpace, steps: usize, num_envs: usize, action_width: usize) -> Self {
        let n = steps * num_envs;
        Self {
            num_envs,
            obs: ObsBuffer::with_capacity(space, n),
            actions: Vec::with_capacity(n * action_width),
            action_width,
            log_probs: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
            rewards: Vec::with_capacity(n),
            terminated: Vec::with_capacity(n),
            truncated: Vec::with_capacity(n),
            truncation_values: Vec::with_capacity(n),
        }
    }

    /// Transitions stored.
    pub fn len(&self) -> usize {
        self.rewards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }

    pub fn clear(&mut self) {
        self.obs.clear();
        for v in
            [&mut self.actions, &mut self.log_probs, &mut self.values, &mut self.rewards, &mut self.truncation_values]
        {
            v.clear();
        }
        self.terminated.clear();
        self.truncated.clear();
    }
}

/// Advantages and value targets of a rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct Advantages {
    pub advantages: Vec<f32>,
    /// `advantages + values`: the value function's regression targets.
    pub returns: Vec<f32>,
}

/// GAE(gamma, lambda) over step-major `[steps * num_envs]` arrays. `last_values` are V of the
/// observations after the last stored step (`[num_envs]`); `truncation_values` hold
/// V(final observation) at truncated transitions.
#[allow(clippy::too_many_arguments)]
pub fn gae(
    rewards: &[f32],
    values: &[f32],
    terminated: &[bool],
    truncated: &[bool],
    truncation_values: &[f32],
    last_values: &[f32],
    gamma: f32,
    lambda: f32,
) -> Advantages {
    let n = last_values.len();
    let len = rewards.len();
    assert!(n > 0 && len.is_multiple_of(n), "{len} transitions do not split into steps of {n} environments");
    for (name, l) in [
        ("values", values.len()),
        ("terminated", terminated.len()),
        ("truncated", truncated.len()),
        ("truncation_values", truncation_values.len()),
    ] {
        assert_eq!(l, len, "`{name}` has {l} entries, `rewards` {len}");
    }
    let steps = len / n;
    let mut advantages = vec![0.0f32; len];
    #[allow(clippy::needless_range_loop)] // `i` indexes a strided layout, not one slice
    for i in 0..n {
        let mut running = 0.0f32;
        for t in (0..steps).rev() {
            let k = t * n + i;
            let (delta, carry) = if terminated[k] {
                (rewards[k] - values[k], false)
            } else if truncated[k] {
                (rewards[k] + gamma * truncation_values[k] - values[k], false)
            } else {
                let next = if t + 1 < steps { values[k + n] } else { last_values[i] };
                (rewards[k] + gamma * next - values[k], true)
            };
            running = if carry { delta + gamma * lambda * running } else { delta };
            advantages[k] = running;
        }
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    Advantages { advantages, returns }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn gae_matches_hand_computed_values_without_episode_ends() {
        // One environment, three steps, gamma 0.9, lambda 0.5.
        let (r, v) = ([1.0, 2.0, 3.0], [0.5, 1.0, 1.5]);
        let out = gae(&r, &v, &[false; 3], &[false; 3], &[0.0; 3], &[2.0], 0.9, 0.5);
        // deltas: 1 + 0.9*1 - 0.5 = 1.4; 2 + 0.9*1.5 - 1 = 2.35; 3 + 0.9*2 - 1.5 = 3.3
        let a2 = 3.3;
        let a1 = 2.35 + 0.45 * a2;
        let a0 = 1.4 + 0.45 * a1;
        close(&out.advantages, &[a0, a1, a2]);
        close(&out.returns, &[a0 + 0.5, a1 + 1.0, a2 + 1.5]);
    }

    #[test]
    fn a_truncated_step_bootstraps_from_its_final_observation_and_a_terminated_one_does_not() {
        // Two environments, two steps (step-major). Env 0 is truncated at t = 0 with
        // V(final) = 10; env 1 terminates at t = 0. Both start new episodes at t = 1.
        let rewards = [1.0, 1.0, 2.0, 2.0];
        let values = [0.5, 0.5, 3.0, 3.0];
        let terminated = [false, true, false, false];
        let truncated = [true, false, false, false];
        let trunc_values = [10.0, 0.0, 0.0, 0.0];
        let out = gae(&rewards, &values, &terminated, &truncated, &trunc_values, &[4.0, 4.0], 0.9, 0.95);
        let a1 = 2.0 + 0.9 * 4.0 - 3.0; // t = 1, both envs: 2.6
        let a0_trunc = 1.0 + 0.9 * 10.0 - 0.5; // bootstraps from V(final) = 10, not from V(s_1) = 3
        let a0_term = 1.0 - 0.5; // no bootstrap at all
        close(&out.advantages, &[a0_trunc, a0_term, a1, a1]);
        close(&out.returns, &[a0_trunc + 0.5, a0_term + 0.5, a1 + 3.0, a1 + 3.0]);
    }

    #[test]
    fn a_truncation_on_the_last_step_ignores_the_next_episode_s_value() {
        let out = gae(&[1.0], &[0.0], &[false], &[true], &[5.0], &[100.0], 0.5, 1.0);
        close(&out.advantages, &[1.0 + 0.5 * 5.0]);
    }
}
