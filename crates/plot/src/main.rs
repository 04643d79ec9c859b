//! `plot`: turn a folder of benchmark result files into PNG or SVG charts.

use clap::Parser;
use plot::PlotArgs;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = PlotArgs::parse();
    match plot::run(&args) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
