//! The Slurm commands a campaign runs: sbatch to submit, squeue to see what still runs, scancel to
//! stop. Nothing here schedules: Slurm does, through the jobs' dependencies.

use std::path::PathBuf;
use std::process::Command;

/// A job named before Slurm gave it an id: by id once submitted, else by the shell variable a
/// dry run's lines assign it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobRef {
    Id(String),
    Pending(String),
}

impl JobRef {
    fn word(&self) -> String {
        match self {
            Self::Id(id) => id.clone(),
            Self::Pending(var) => format!("${{{var}}}"),
        }
    }
}

/// A variable's value for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Env {
    Text(String),
    /// Another job's id.
    Job(JobRef),
    /// Removed, so a value in the submitting shell cannot leak in.
    Unset,
}

/// One sbatch submission.
#[derive(Debug, Clone)]
pub struct Submission {
    /// A shell variable name for the job (`serve_tp4`): a dry run assigns the id to it.
    pub label: String,
    /// Variables set for the job (sbatch passes the environment on).
    pub env: Vec<(String, Env)>,
    pub flags: Vec<String>,
    /// `after:<job>` (started) or `afterany:<job>` (ended), with the job.
    pub dependency: Option<(&'static str, JobRef)>,
    pub script: PathBuf,
}

impl Submission {
    fn args(&self) -> Vec<String> {
        let mut args = vec!["--parsable".to_string()];
        args.extend(self.flags.iter().cloned());
        if let Some((kind, job)) = &self.dependency {
            args.push(format!("--dependency={kind}:{}", job.word()));
        }
        args.push(self.script.display().to_string());
        args
    }

    /// The whole command as one shell line that assigns the job's id to its label.
    pub fn shell_line(&self) -> String {
        let mut words = vec!["env".to_string()];
        for (k, v) in &self.env {
            match v {
                Env::Unset => words.extend(["-u".to_string(), k.clone()]),
                Env::Text(v) => words.push(quote(&format!("{k}={v}"))),
                Env::Job(job) => words.push(format!("{k}={}", job.word())),
            }
        }
        words.push("sbatch".into());
        words.extend(
            self.args()
                .iter()
                .map(|a| match a.strip_prefix("--dependency=") {
                    // The id variable must expand: quoted only where it needs no quoting.
                    Some(_) => a.clone(),
                    None => quote(a),
                }),
        );
        format!("{}=$({})", self.label, words.join(" "))
    }

    /// Submits the job; its id.
    pub fn submit(&self) -> Result<String, String> {
        let mut cmd = Command::new("sbatch");
        cmd.args(self.args());
        for (k, v) in &self.env {
            match v {
                Env::Unset => cmd.env_remove(k),
                Env::Text(v) => cmd.env(k, v),
                Env::Job(job) => cmd.env(k, job.word()),
            };
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run sbatch ({e}); is Slurm installed here?"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!(
                "sbatch refused {} ({}): {}",
                self.label,
                out.status,
                stderr.trim()
            ));
        }
        // --parsable prints `id` or `id;cluster`.
        let id = stdout.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
            return Err(format!(
                "sbatch printed `{}` for {}, not a job id",
                stdout.trim(),
                self.label
            ));
        }
        Ok(id)
    }
}

/// Quoted for a POSIX shell where it needs to be: words of plain characters are left bare, so
/// the lines read as one would type them.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        return word.to_string();
    }
    // A NUL byte cannot be passed in an argument at all; shlex refuses only that.
    shlex::try_quote(word).map_or_else(|_| word.replace('\0', ""), |q| q.into_owned())
}

/// The state of each of `ids` Slurm still knows (`PENDING`, `RUNNING`, ...); ids it has forgotten
/// (ended long ago) are left out.
pub fn states(ids: &[String]) -> Result<std::collections::BTreeMap<String, String>, String> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let out = Command::new("squeue")
        .args(["--noheader", "--format=%i %T", "--me"])
        .output()
        .map_err(|e| format!("cannot run squeue ({e}); is Slurm installed here?"))?;
    if !out.status.success() {
        return Err(format!(
            "squeue failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(id, _)| ids.iter().any(|i| i == id))
        .map(|(id, state)| (id.to_string(), state.trim().to_string()))
        .collect())
}

/// Cancels `ids`.
pub fn cancel(ids: &[String]) -> Result<(), String> {
    if ids.is_empty() {
        return Ok(());
    }
    let out = Command::new("scancel")
        .args(ids)
        .output()
        .map_err(|e| format!("cannot run scancel ({e}); is Slurm installed here?"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scancel failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_line_quotes_values_and_leaves_the_dependency_to_expand() {
        let s = Submission {
            label: "sweep_tp4".into(),
            env: vec![
                ("SWEEP_ARGS".into(), Env::Text("--concurrency 1,2".into())),
                ("CONTAINER_IMAGE".into(), Env::Unset),
                (
                    "SERVE_JOB_ID".into(),
                    Env::Job(JobRef::Pending("serve_tp4".into())),
                ),
            ],
            flags: vec!["--job-name=c tp4".into()],
            dependency: Some(("after", JobRef::Pending("serve_tp4".into()))),
            script: "/x/sweep.sbatch".into(),
        };
        assert_eq!(
            s.shell_line(),
            "sweep_tp4=$(env 'SWEEP_ARGS=--concurrency 1,2' -u CONTAINER_IMAGE \
             SERVE_JOB_ID=${serve_tp4} sbatch --parsable '--job-name=c tp4' \
             --dependency=after:${serve_tp4} /x/sweep.sbatch)"
        );
        assert_eq!(quote("EXTRA=--a 'b'"), "\"EXTRA=--a 'b'\"");
        assert_eq!(quote(""), "''");
        assert_eq!(
            quote("--output=/r/logs/serve-%j.out"),
            "--output=/r/logs/serve-%j.out"
        );
    }
}
