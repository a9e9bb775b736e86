//! `doppel job ...`, and following a job until it ends.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Subcommand;
use doppel_model::{Job, JobState};

use super::{table, CliError, Ctx, Output};

#[derive(Subcommand)]
pub enum JobCommand {
    /// List recent jobs, newest first.
    #[command(after_help = "Example:\n  doppel job list --state running")]
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one job.
    Show { job: String },
    /// Wait for a job to end, showing its progress; exits non-zero if it failed.
    Wait { job: String },
    /// Show a job's events.
    Logs { job: String },
    /// Ask a job to stop at its next step.
    Cancel { job: String },
}

fn rows(jobs: &[Job]) {
    let rows = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.kind.clone(),
                j.target.clone().unwrap_or_default(),
                j.state.as_str().to_owned(),
                format!("{}%", j.progress),
                j.step.clone(),
                j.created_at.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "KIND", "TARGET", "STATE", "PROGRESS", "STEP", "CREATED",
        ],
        rows,
    );
}

pub fn run(ctx: &Ctx, cmd: JobCommand) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        JobCommand::List { state, limit } => {
            let jobs = c.list_jobs(state.as_deref(), Some(limit))?;
            ctx.print(&jobs, |j| rows(j));
        }
        JobCommand::Show { job } => {
            let j = c.get_job(&job)?;
            ctx.print(&j, |j| rows(std::slice::from_ref(j)));
        }
        JobCommand::Wait { job } => {
            let j = follow(ctx, &job)?;
            ctx.print(&j, |j| println!("{} {}", j.id, j.state.as_str()));
            finished_ok(&j)?;
        }
        JobCommand::Logs { job } => {
            let events = c.job_events(&job, 0)?;
            ctx.print(&events, |ev| {
                for e in ev {
                    println!("{} {:?} {}", e.at, e.level, e.message);
                }
            });
        }
        JobCommand::Cancel { job } => {
            let j = c.cancel_job(&job)?;
            ctx.print(&j, |j| {
                println!("cancel requested for {} ({})", j.id, j.state.as_str())
            });
        }
    }
    Ok(())
}

/// Turns a failed or canceled job into the CLI's error.
pub fn finished_ok(job: &Job) -> Result<(), CliError> {
    match (job.state, &job.error) {
        (JobState::Succeeded, _) => Ok(()),
        (_, Some(e)) => Err(CliError::Client(doppel_client::ClientError::Api(e.clone()))),
        (state, None) => Err(CliError::Usage(format!("{} {}", job.id, state.as_str()))),
    }
}

/// The job being followed and its progress bar, for the Ctrl-C handler
/// (which can be set only once per process).
static FOLLOWING: std::sync::Mutex<Option<(String, Option<indicatif::ProgressBar>)>> =
    std::sync::Mutex::new(None);

fn detach_on_ctrl_c() {
    // A second handler cannot be set; the first one stays in force.
    let _ = ctrlc::set_handler(|| {
        if let Some((id, bar)) = FOLLOWING.lock().unwrap_or_else(|p| p.into_inner()).take() {
            if let Some(b) = bar {
                b.abandon();
            }
            eprintln!(
                "detached from {id}; it keeps running. Follow it again with: doppel job wait {id}"
            );
        }
        std::process::exit(130);
    });
}

/// Follows a job until it ends: a progress bar on a terminal, event lines
/// otherwise (never in `-o json`, whose stdout is for the answer). Ctrl-C
/// detaches; the job goes on in the engine. Updates come as the engine
/// records them (the job's event stream); should the stream break, the
/// job is polled instead.
pub fn follow(ctx: &Ctx, id: &str) -> Result<Job, CliError> {
    let c = &ctx.client;
    let tty = std::io::stderr().is_terminal() && ctx.output == Output::Table;
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::new(100);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:30}] {pos:>3}% {wide_msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_prefix(id.to_owned());
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    *FOLLOWING.lock().unwrap_or_else(|p| p.into_inner()) = Some((id.to_owned(), bar.clone()));
    detach_on_ctrl_c();
    let seen = std::cell::Cell::new(0);
    let show_job = |job: &Job| {
        if let Some(b) = &bar {
            b.set_position(job.progress as u64);
            b.set_message(job.step.clone());
        }
    };
    let show_event = |e: &doppel_model::JobEvent| {
        seen.set(seen.get().max(e.seq));
        if bar.is_none() && ctx.output == Output::Table {
            eprintln!("{id}: {}", e.message);
        }
    };
    let streamed = c.follow_job(id, |u| match u {
        doppel_client::JobUpdate::Job(j) => show_job(&j),
        doppel_client::JobUpdate::Event(e) => show_event(&e),
    });
    let job = match streamed {
        Ok(job) => job,
        Err(e @ doppel_client::ClientError::Api(_)) => return Err(e.into()),
        Err(_) => loop {
            let job = c.get_job(id)?;
            for e in c.job_events(id, seen.get())? {
                show_event(&e);
            }
            show_job(&job);
            if job.state.is_finished() {
                break job;
            }
            std::thread::sleep(Duration::from_millis(150));
        },
    };
    FOLLOWING.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    Ok(job)
}

/// What every job-starting command does: wait for the job (unless told
/// not to) and print what it produced with `show`, or its error.
pub fn run_job(
    ctx: &Ctx,
    job: Job,
    no_wait: bool,
    show: impl FnOnce(&serde_json::Value),
) -> Result<(), CliError> {
    if no_wait {
        ctx.print(&job, |j| {
            println!(
                "{} {} (follow with: doppel job wait {})",
                j.id,
                j.state.as_str(),
                j.id
            )
        });
        return Ok(());
    }
    let done = follow(ctx, &job.id)?;
    finished_ok(&done)?;
    let result = done.result.clone().unwrap_or_default();
    ctx.print(&result, show);
    Ok(())
}
