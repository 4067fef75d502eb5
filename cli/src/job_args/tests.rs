//! Parsing [`JobArgs`] with clap and validating the [`JobConfig`].

use std::time::Duration;

use clap::Parser;
use state_core::ExternalizedCheckpointCleanup;

use executor::{CheckpointConfig, JobConfig, RestartStrategyConfig, Result};

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    job: JobArgs,
}

fn parse(args: &[&str]) -> std::result::Result<JobArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("job").chain(args.iter().copied())).map(|c| c.job)
}

fn config(args: &[&str]) -> Result<JobConfig> {
    parse(args)
        .unwrap()
        .job_config_with_default_id(DEFAULT_JOB_ID)
}

fn err(args: &[&str]) -> String {
    config(args).unwrap_err().to_string()
}

#[test]
fn defaults_are_flinks() {
    let args = parse(&[]).unwrap();
    assert_eq!(args, JobArgs::default());
    let c = args.job_config_with_default_id(DEFAULT_JOB_ID).unwrap();
    assert_eq!(c.job_id.as_str(), DEFAULT_JOB_ID);
    assert_eq!(c.parallelism, 1);
    assert!(c.checkpointing.is_none() && c.restart.is_none());
    assert_eq!(c.effective_restart_strategy(), RestartStrategyConfig::None);
    let c = config(&["--checkpoint-interval", "30s"]).unwrap();
    let cp = c.checkpointing.clone().unwrap();
    assert_eq!(cp, CheckpointConfig::every(Duration::from_secs(30)));
    assert!(matches!(
        c.effective_restart_strategy(),
        RestartStrategyConfig::FixedDelay {
            attempts: u32::MAX,
            ..
        }
    ));
    assert_eq!(
        args.job_config_with_default_id("wordcount")
            .unwrap()
            .job_id
            .as_str(),
        "wordcount"
    );
}

#[test]
fn every_option_parses() {
    let a = parse(&[
        "--from",
        "/ckp/job/chk-3/_metadata",
        "--checkpoint-dir",
        "/ckp",
        "--backend",
        "rocks",
        "--job-id",
        "wc",
        "--parallelism",
        "4",
        "--max-parallelism",
        "256",
        "--checkpoint-interval",
        "500ms",
        "--checkpoint-mode",
        "at-least-once",
        "--checkpoint-timeout",
        "1m",
        "--min-pause",
        "2 s",
        "--max-concurrent-checkpoints",
        "2",
        "--tolerable-failed-checkpoints",
        "3",
        "--retained",
        "5",
        "--retain-on-cancel",
    ])
    .unwrap();
    assert_eq!(a.backend, BackendKind::Rocks);
    assert_eq!(
        a.from.as_deref(),
        Some(std::path::Path::new("/ckp/job/chk-3/_metadata"))
    );
    let c = a.job_config_with_default_id(DEFAULT_JOB_ID).unwrap();
    assert_eq!(
        (c.job_id.as_str(), c.parallelism, c.max_parallelism),
        ("wc", 4, Some(256))
    );
    let cp = c.checkpointing.unwrap();
    assert_eq!(cp.interval, Duration::from_millis(500));
    assert_eq!(cp.mode, CheckpointingMode::AtLeastOnce);
    assert_eq!(cp.timeout, Duration::from_secs(60));
    assert_eq!(cp.min_pause, Duration::from_secs(2));
    assert_eq!(
        (cp.max_concurrent, cp.tolerable_failures, cp.retained),
        (2, 3, 5)
    );
    assert_eq!(
        cp.cleanup,
        ExternalizedCheckpointCleanup::RetainOnCancellation
    );
}

#[test]
fn restart_strategies_with_flink_defaults() {
    let c = config(&[
        "--restart-strategy",
        "fixed-delay",
        "--restart-attempts",
        "3",
        "--restart-delay",
        "10s",
    ]);
    assert_eq!(
        c.unwrap().restart,
        Some(RestartStrategyConfig::FixedDelay {
            attempts: 3,
            delay: Duration::from_secs(10)
        })
    );
    assert_eq!(
        config(&["--restart-strategy", "fixeddelay"])
            .unwrap()
            .restart,
        Some(RestartStrategyConfig::FixedDelay {
            attempts: 1,
            delay: Duration::from_secs(1)
        })
    );
    assert_eq!(
        config(&[
            "--restart-strategy",
            "failure-rate",
            "--failure-rate-max-failures",
            "3",
            "--failure-rate-interval",
            "5min",
            "--restart-delay",
            "10s"
        ])
        .unwrap()
        .restart,
        Some(RestartStrategyConfig::FailureRate {
            max_failures: 3,
            interval: Duration::from_secs(300),
            delay: Duration::from_secs(10),
        })
    );
    assert_eq!(
        config(&["--restart-strategy", "exponential-delay"])
            .unwrap()
            .restart,
        Some(RestartStrategyConfig::ExponentialDelay {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: 0.1,
            reset_threshold: Duration::from_secs(3600),
        })
    );
    assert_eq!(
        config(&["--restart-strategy", "off"]).unwrap().restart,
        Some(RestartStrategyConfig::None)
    );
}

#[test]
fn bad_values_name_the_option() {
    let e = parse(&["--checkpoint-interval", "2x"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--checkpoint-interval") && e.contains("\"2x\""),
        "{e}"
    );
    let e = parse(&["--backend", "memory"]).unwrap_err().to_string();
    assert!(e.contains("--backend"), "{e}");
    assert!(parse(&["--restart-strategy", "sometimes"]).is_err());
    for (args, expected) in [
        (&["--parallelism", "0"][..], "--parallelism 0"),
        (&["--job-id", "a/b"], "--job-id \"a/b\""),
        (
            &["--parallelism", "4", "--max-parallelism", "2"],
            "--max-parallelism 2 is less than --parallelism 4",
        ),
        (&["--max-parallelism", "0"], "--max-parallelism 0"),
        (
            &["--checkpoint-interval", "5ms"],
            "--checkpoint-interval 5ms: must be at least 10ms",
        ),
        (
            &["--retained", "2"],
            "--retained needs --checkpoint-interval",
        ),
        (
            &["--retain-on-cancel"],
            "--retain-on-cancel needs --checkpoint-interval",
        ),
        (
            &["--checkpoint-interval", "1s", "--retained", "0"],
            "--retained 0",
        ),
        (
            &[
                "--checkpoint-interval",
                "1s",
                "--max-concurrent-checkpoints",
                "0",
            ],
            "--max-concurrent-checkpoints 0",
        ),
        (
            &["--checkpoint-interval", "1s", "--checkpoint-timeout", "0ms"],
            "--checkpoint-timeout 0ms",
        ),
        (
            &["--restart-attempts", "3"],
            "--restart-attempts applies to --restart-strategy fixed-delay, not with no --restart-strategy",
        ),
        (
            &[
                "--restart-strategy",
                "failure-rate",
                "--restart-attempts",
                "3",
            ],
            "not with --restart-strategy failure-rate",
        ),
        (
            &["--restart-strategy", "fixed-delay", "--backoff-max", "1s"],
            "--backoff-max applies to --restart-strategy exponential-delay",
        ),
        (
            &[
                "--restart-strategy",
                "failure-rate",
                "--failure-rate-max-failures",
                "0",
            ],
            "--failure-rate-max-failures 0",
        ),
        (
            &[
                "--restart-strategy",
                "exponential-delay",
                "--backoff-multiplier",
                "1",
            ],
            "--backoff-multiplier 1: must be greater than 1",
        ),
        (
            &[
                "--restart-strategy",
                "exponential-delay",
                "--backoff-jitter",
                "1.5",
            ],
            "--backoff-jitter 1.5",
        ),
        (
            &[
                "--restart-strategy",
                "exponential-delay",
                "--backoff-initial",
                "10s",
                "--backoff-max",
                "1s",
            ],
            "--backoff-max 1s is less than --backoff-initial 10s",
        ),
    ] {
        let e = err(args);
        assert!(e.contains(expected), "{args:?}: {e}");
    }
}

#[test]
fn durations() {
    let ms = |s| parse_duration(s).map(|d| d.as_millis());
    assert_eq!(ms("500ms"), Ok(500));
    assert_eq!(ms("500"), Ok(500));
    assert_eq!(ms("2s"), Ok(2_000));
    assert_eq!(ms("10 s"), Ok(10_000));
    assert_eq!(ms("1m"), Ok(60_000));
    assert_eq!(ms("5min"), Ok(300_000));
    assert_eq!(ms("1h"), Ok(3_600_000));
    assert_eq!(ms("1d"), Ok(86_400_000));
    for bad in [
        "",
        "s",
        "-1s",
        "1.5s",
        "2x",
        "1 s s",
        "99999999999999999999s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn allow_non_restored_state_goes_with_from() {
    assert!(!config(&[]).unwrap().allow_non_restored_state);
    let c = config(&["--from", "ckpt/job/chk-3", "--allow-non-restored-state"]).unwrap();
    assert!(c.allow_non_restored_state);
    let e = err(&["--allow-non-restored-state"]);
    assert!(e.contains("--allow-non-restored-state needs --from"), "{e}");
}
