//! `ksight-workload`: the ground-truth workload as a binary of its own, so tests can run
//! it under any tracer. The workload itself lives with `ksight verify`, which runs it too.

#[path = "../../cli/src/workload.rs"]
mod workload;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    workload::run(&args);
}
