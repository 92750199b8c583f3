pub use m3ixup_envs as envs;
