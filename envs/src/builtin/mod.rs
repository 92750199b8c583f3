//! The built-in multimodal environments (see docs/ENVIRONMENTS.md). Each emits single frames; the
//! registry adds frame stacking, the time limit and episode statistics.

pub mod cartpole;
pub mod pendulum;
pub mod reacher;

pub use cartpole::{PixelCartPole, PixelCartPoleConfig};
pub use pendulum::{MultimodalPendulum, PendulumConfig};
pub use reacher::{Reacher, ReacherConfig};

use crate::registry::{EnvDefaults, Registry};

/// Registers the built-in environments: `multimodal-pendulum` (2 frames, 200 steps as
/// Gymnasium's Pendulum-v1; the paper evaluates 300), `pixel-cartpole` (2 frames, 500 steps)
/// and `reacher` (2 frames, 50 steps).
pub fn register(registry: &mut Registry) {
    let two_frames = |steps| EnvDefaults { frame_stack: 2, max_episode_steps: Some(steps) };
    registry.register_typed(pendulum::NAME, two_frames(200), |c: PendulumConfig| MultimodalPendulum::new(c));
    registry.register_typed(cartpole::NAME, two_frames(500), |c: PixelCartPoleConfig| PixelCartPole::new(c));
    registry.register_typed(reacher::NAME, two_frames(50), |c: ReacherConfig| Reacher::new(c));
}
