//! The built-in multimodal environments (see docs/ENVIRONMENTS.md). Each emits single frames; the
//! registry adds frame stacking, the time limit and episode statistics.

pub mod cartpole;
pub mod pendulum;
pub mod reacher;

pub use cartpole::{PixelCartPole, PixelCartPoleConfig};
pub use pendulum::{MultimodalPendulum, PendulumConfig};
pub use reacher::{Reacher, ReacherConfig};
