pub mod bench;
pub mod bench_model;
pub mod demo;
pub mod detect;
pub mod eval_detection;
pub mod probe;
pub mod synth;
pub mod train;
