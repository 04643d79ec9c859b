//! `plot`: turn a folder of benchmark result files into PNG or SVG charts.

use clap::Parser;
use plot::{PlotArgs, UsageError};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = PlotArgs::parse();
    match plot::run(&args) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A flag's value that cannot work is a usage error, as clap's own are.
            ExitCode::from(if e.is::<UsageError>() { 2 } else { 1 })
        }
    }
}
