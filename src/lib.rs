pub use m3ixup_agents as agents;
pub use m3ixup_envs as envs;
