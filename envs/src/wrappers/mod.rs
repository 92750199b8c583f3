//! Wrappers that change what an environment shows or when its episodes end, keeping the
//! [`Env`](crate::Env) contract.

mod corruption;
mod episode_stats;
mod frame_stack;
mod sensor_dropout;
mod time_limit;

pub use corruption::{SensorNoise, StaleSensor};
pub use episode_stats::EpisodeStatistics;
pub use frame_stack::FrameStack;
pub use sensor_dropout::{DropProbability, DropoutMode, SensorDropout};
pub use time_limit::TimeLimit;
