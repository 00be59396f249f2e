//! Long work (pulls now; training and evaluation later) runs as a job with an id, progress and
//! a final state, on a bounded pool. Jobs live in memory: a job that a crash interrupts leaves
//! nothing registered (see the pull's staging rules), and the client sees the job vanish.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use maas_core::Error;
use maas_ingest::Progress;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{watch, Semaphore};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{status_of, ErrorDetail};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// Working.
    Running,
    /// Done; `result` holds the outcome.
    Succeeded,
    /// Failed; `error` says why.
    Failed,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    /// Job id.
    pub id: String,
    /// What kind of work (`pull`).
    pub kind: String,
    /// What it works on (the source of a pull).
    pub target: String,
    /// State.
    pub state: JobState,
    /// What it is doing now.
    pub phase: String,
    /// Bytes done in this phase.
    pub bytes_done: u64,
    /// Bytes expected in this phase (0 when unknown).
    pub bytes_total: u64,
    /// Key that started it.
    pub created_by: String,
    /// When it was submitted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// The outcome (for a pull: the registered version).
    #[schema(value_type = Object)]
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<JobError>,
}

/// A job's failure: the HTTP status the same error would have had, code and message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobError {
    /// HTTP status equivalent.
    pub status: u16,
    /// Stable code.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

impl From<&JobError> for ErrorDetail {
    fn from(e: &JobError) -> Self {
        ErrorDetail {
            code: e.code.clone(),
            message: e.message.clone(),
        }
    }
}

/// Finished jobs kept for clients to read; older ones are forgotten.
const KEEP_FINISHED: usize = 1000;

fn prune_finished(map: &mut HashMap<String, Entry>) {
    let mut finished: Vec<(OffsetDateTime, String)> = map
        .values()
        .filter_map(|e| e.view.finished_at.map(|t| (t, e.view.id.clone())))
        .collect();
    if finished.len() < KEEP_FINISHED {
        return;
    }
    finished.sort();
    for (_, id) in finished.iter().take(finished.len() + 1 - KEEP_FINISHED) {
        map.remove(id);
    }
}

struct Entry {
    view: JobView,
    progress: Arc<Progress>,
    done: watch::Receiver<bool>,
}

/// The job table and its worker pool.
#[derive(Clone)]
pub struct Jobs {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    slots: Arc<Semaphore>,
}

impl Jobs {
    /// A pool running at most `concurrency` jobs at once.
    pub fn new(concurrency: usize) -> Self {
        Self {
            entries: Arc::default(),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// Starts `work` as a job; returns its id at once.
    pub fn spawn<F, Fut>(&self, kind: &str, target: String, created_by: String, work: F) -> String
    where
        F: FnOnce(Arc<Progress>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<serde_json::Value, Error>> + Send + 'static,
    {
        let id = Uuid::new_v4().simple().to_string();
        let progress = Arc::new(Progress::default());
        let (tx, rx) = watch::channel(false);
        let view = JobView {
            id: id.clone(),
            kind: kind.to_owned(),
            target,
            state: JobState::Queued,
            phase: "queued".to_owned(),
            bytes_done: 0,
            bytes_total: 0,
            created_by,
            created_at: OffsetDateTime::now_utc(),
            finished_at: None,
            result: None,
            error: None,
        };
        if let Ok(mut map) = self.entries.lock() {
            prune_finished(&mut map);
            map.insert(
                id.clone(),
                Entry {
                    view,
                    progress: progress.clone(),
                    done: rx,
                },
            );
        }
        let jobs = self.clone();
        let job_id = id.clone();
        tokio::spawn(async move {
            let _slot = jobs.slots.clone().acquire_owned().await;
            jobs.update(&job_id, |v| v.state = JobState::Running);
            // A panic inside the work must still end the job, so run it as its own task.
            let outcome = tokio::spawn(work(progress))
                .await
                .unwrap_or_else(|e| Err(Error::internal(format!("job crashed: {e}"))));
            jobs.update(&job_id, |v| {
                v.finished_at = Some(OffsetDateTime::now_utc());
                match outcome {
                    Ok(result) => {
                        v.state = JobState::Succeeded;
                        v.result = Some(result);
                    }
                    Err(e) => {
                        tracing::warn!(job = %v.id, error = %e, "job failed");
                        v.state = JobState::Failed;
                        v.error = Some(JobError {
                            status: status_of(e.kind).as_u16(),
                            code: e.kind.code().to_owned(),
                            message: e.message,
                        });
                    }
                }
            });
            let _ = tx.send(true);
        });
        id
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut JobView)) {
        if let Ok(mut map) = self.entries.lock() {
            if let Some(entry) = map.get_mut(id) {
                f(&mut entry.view);
            }
        }
    }

    /// The job's current view.
    pub fn get(&self, id: &str) -> Option<JobView> {
        let map = self.entries.lock().ok()?;
        let entry = map.get(id)?;
        let mut view = entry.view.clone();
        if view.state == JobState::Running {
            let (phase, done, total) = entry.progress.snapshot();
            view.phase = phase;
            view.bytes_done = done;
            view.bytes_total = total;
        } else {
            view.phase = format!("{:?}", view.state).to_lowercase();
        }
        Some(view)
    }

    /// All jobs, newest first.
    pub fn list(&self) -> Vec<JobView> {
        let ids: Vec<String> = self
            .entries
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let mut views: Vec<JobView> = ids.iter().filter_map(|id| self.get(id)).collect();
        views.sort_by_key(|v| std::cmp::Reverse(v.created_at));
        views
    }

    /// Waits until the job has ended and returns its final view.
    pub async fn wait(&self, id: &str) -> Option<JobView> {
        let mut rx = self.entries.lock().ok()?.get(id)?.done.clone();
        let _ = rx.wait_for(|done| *done).await;
        self.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_end_in_success_or_a_failure_with_its_status() {
        let jobs = Jobs::new(1);
        let ok = jobs.spawn("pull", "a".into(), "k".into(), |p| async move {
            p.start_phase("working", 10);
            p.advance(10);
            Ok(serde_json::json!({"version": 1}))
        });
        let bad = jobs.spawn("pull", "b".into(), "k".into(), |_| async {
            Err(Error::invalid("no such package"))
        });
        let done = jobs.wait(&ok).await.unwrap();
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(done.result, Some(serde_json::json!({"version": 1})));
        let failed = jobs.wait(&bad).await.unwrap();
        assert_eq!(failed.state, JobState::Failed);
        let err = failed.error.unwrap();
        assert_eq!(
            (err.status, err.code.as_str(), err.message.as_str()),
            (400, "invalid_input", "no such package")
        );
        assert_eq!(jobs.list().len(), 2);
        assert!(jobs.get("nope").is_none());
    }

    #[tokio::test]
    async fn only_the_newest_finished_jobs_are_kept() {
        let jobs = Jobs::new(4);
        let mut ids = vec![];
        for i in 0..KEEP_FINISHED + 5 {
            let id = jobs.spawn("pull", i.to_string(), "k".into(), |_| async {
                Ok(serde_json::Value::Null)
            });
            jobs.wait(&id).await.unwrap();
            ids.push(id);
        }
        assert_eq!(jobs.list().len(), KEEP_FINISHED);
        assert!(jobs.get(&ids[0]).is_none());
        assert!(jobs.get(ids.last().unwrap()).is_some());
    }

    #[tokio::test]
    async fn a_panicking_job_fails_instead_of_hanging() {
        let jobs = Jobs::new(1);
        #[allow(clippy::panic)]
        let id = jobs.spawn("pull", "x".into(), "k".into(), |_| async { panic!("boom") });
        let view = jobs.wait(&id).await.unwrap();
        assert_eq!(view.state, JobState::Failed);
        assert!(view.error.unwrap().message.contains("job crashed"));
    }
}
