//! `bench-sim`: serve the engine simulator on a port, for manual use and Slurm jobs.

fn main() -> std::process::ExitCode {
    bench_sim::command::main()
}
