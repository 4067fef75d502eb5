//! The keyed word count on timely with cairn state and checkpoints.
//!
//! One process with two workers:
//!
//! ```text
//! cargo run -p cairn-timely --example wordcount -- --dir /tmp/wc -w 2
//! ```
//!
//! Two processes with two workers each on loopback, restarted together
//! after a failure by the supervisor:
//!
//! ```text
//! cargo build -p cairn-timely --example wordcount --bin cairn-timely
//! target/debug/cairn-timely run -n 2 -w 2 -- target/debug/examples/wordcount --dir /tmp/wc
//! ```
//!
//! Options: `--dir DIR` (checkpoints in `DIR/checkpoints`, committed output
//! in `DIR/out`), `--words N` per partition (default 100000),
//! `--partitions N` (default 4), `--backend heap|rocks`; then timely's
//! `-w -n -p -h`. A second run over a finished job with more `--words`
//! resumes from its last checkpoint and reads on. `cairn checkpoints verify
//! DIR/checkpoints/wordcount` reads the checkpoints.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::ExitCode;

use support::{Backend, WordCount, Words};

fn main() -> ExitCode {
    let mut dir: Option<PathBuf> = None;
    let mut words = Words {
        partitions: 4,
        per_partition: 100_000,
        vocabulary: 10_000,
        seed: 1,
    };
    let mut backend = "heap".to_owned();
    let mut timely_args = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match arg.as_str() {
            "--dir" => dir = Some(value("--dir").into()),
            "--words" => words.per_partition = value("--words").parse().expect("--words: a number"),
            "--partitions" => {
                words.partitions = value("--partitions")
                    .parse()
                    .expect("--partitions: a number")
            }
            "--backend" => backend = value("--backend"),
            _ => timely_args.push(arg),
        }
    }
    let Some(dir) = dir else {
        eprintln!(
            "usage: wordcount --dir DIR [--words N] [--partitions N] [--backend heap|rocks] [-w W -n N -p P -h HOSTS]"
        );
        return ExitCode::from(2);
    };
    let config = match timely::Config::from_args(timely_args.into_iter()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("timely options: {e}");
            return ExitCode::from(2);
        }
    };
    let mut job = WordCount::new(&dir, words);
    job.records_per_epoch = 10_000;
    if backend == "rocks" {
        job.backend = Backend::Rocks(dir.join("rocks-local"));
    }
    let reports = support::run_process(&job, config, support::system_clock());
    for r in &reports {
        println!(
            "worker {}: restored from {:?}, {} checkpoints completed, last {:?}",
            r.worker,
            r.restored_from,
            r.completed.len(),
            r.completed.last()
        );
    }
    ExitCode::SUCCESS
}
