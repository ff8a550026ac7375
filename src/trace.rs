//! The trace (`daemon.trace_file`): one JSON line per group tick holding the observation
//! the engine got, so `kube-failover simulate --trace` can replay it through the engine
//! with another policy. Written off the tick's path: a tick hands its line to a bounded
//! channel and never waits; a full channel drops the line and the next line written says
//! how many were dropped before it. The file is bounded: a line that would pass
//! `daemon.trace_max_bytes` rotates it to `<trace_file>.1` first. Observations carry
//! reason codes, short details, names and the record, never a credential.

use crate::model::Observation;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tracing::warn;

/// Lines waiting to be written; beyond this a tick drops its line instead of waiting.
const QUEUE_LINES: usize = 256;

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceLine {
    /// The group.
    pub group: String,
    /// Monotonic seconds from the daemon's start to the tick's start.
    pub offset_seconds: f64,
    /// The tick's wall time, RFC 3339 (UTC).
    pub wall: String,
    /// Lines dropped (full queue or write error) since the previous line written.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_before: u64,
    /// Why the tick came before its turn (`watch_broken`, `pod_readiness`,
    /// `deployment_readiness`, `peer_verdict`); absent for a tick on schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// What the engine got in this tick.
    pub observation: Observation,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A trace that could not be opened or read, naming the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or created.
    #[error("daemon.trace_file: cannot open {path}")]
    Open {
        /// The file as given.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be read.
    #[error("cannot read trace {path}")]
    Read {
        /// The file as given.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a trace line.
    #[error("trace {path}, line {line}: not a trace line: {message}")]
    Line {
        /// The file as given.
        path: String,
        /// 1-based line number.
        line: usize,
        /// The decoder's message.
        message: String,
    },
}

/// The daemon's handle on the trace: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct TraceSink {
    tx: SyncSender<TraceLine>,
    started: Instant,
    dropped: Arc<AtomicU64>,
}

impl TraceSink {
    /// Opens (appends to) `path` and starts the writer thread; `started` is the daemon's
    /// start, offset 0 of every line. The thread ends when every sink is dropped.
    pub fn open(path: &Path, max_bytes: u64, started: Instant) -> Result<Self, TraceError> {
        let file = RotatingFile::open(path, max_bytes)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        std::thread::Builder::new()
            .name("trace-writer".into())
            .spawn(move || write_lines(rx, file, counter))
            .map_err(|source| TraceError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(TraceSink {
            tx,
            started,
            dropped,
        })
    }

    /// Queues one tick's line (`trigger`: the event that made it, if any); drops it
    /// (counted) when the writer is behind.
    pub fn record(
        &self,
        group: &str,
        tick_started: Instant,
        trigger: Option<&str>,
        observation: &Observation,
    ) {
        let line = TraceLine {
            group: group.to_string(),
            offset_seconds: tick_started
                .saturating_duration_since(self.started)
                .as_secs_f64(),
            wall: rfc3339(observation.wall_unix),
            dropped_before: 0,
            trigger: trigger.map(str::to_string),
            observation: observation.clone(),
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn rfc3339(wall_unix: f64) -> String {
    let at = UNIX_EPOCH + Duration::try_from_secs_f64(wall_unix.max(0.0)).unwrap_or_default();
    humantime::format_rfc3339_millis(at).to_string()
}

/// The writer thread: a line at a time, flushed whenever the queue is empty.
fn write_lines(rx: Receiver<TraceLine>, mut file: RotatingFile, dropped: Arc<AtomicU64>) {
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(mut line) = next {
            line.dropped_before = dropped.swap(0, Ordering::Relaxed);
            if line.dropped_before > 0 {
                warn!(
                    lines = line.dropped_before,
                    "trace lines dropped: the trace writer fell behind"
                );
            }
            match serde_json::to_vec(&line).map_err(std::io::Error::from) {
                Ok(mut bytes) => {
                    bytes.push(b'\n');
                    match file.write_line(&bytes) {
                        Ok(()) => failing = false,
                        Err(e) => {
                            dropped.fetch_add(1 + line.dropped_before, Ordering::Relaxed);
                            if !failing {
                                warn!(path = %file.path.display(), error = %e, "cannot write the trace; lines are dropped");
                            }
                            failing = true;
                        }
                    }
                }
                Err(e) => warn!(error = %e, "cannot encode a trace line"),
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = file.flush() {
            warn!(path = %file.path.display(), error = %e, "cannot flush the trace");
        }
    }
    let _ = file.flush();
}

/// The trace file and its one rotated predecessor `<path>.1`.
struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    out: Option<BufWriter<File>>,
    size: u64,
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64) -> Result<Self, TraceError> {
        let mut file = RotatingFile {
            path: path.to_path_buf(),
            max_bytes,
            out: None,
            size: 0,
        };
        file.reopen().map_err(|source| TraceError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(file)
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = f.metadata()?.len();
        self.out = Some(BufWriter::new(f));
        Ok(())
    }

    fn rotated_path(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".1");
        PathBuf::from(name)
    }

    fn write_line(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.out.is_none() {
            self.reopen()?;
        }
        let len = bytes.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.max_bytes {
            self.flush()?;
            self.out = None;
            std::fs::rename(&self.path, self.rotated_path())?;
            self.reopen()?;
        }
        let out = self.out.as_mut().expect("opened above");
        if let Err(e) = out.write_all(bytes) {
            self.out = None; // reopened for the next line
            return Err(e);
        }
        self.size = self.size.saturating_add(len);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

/// Reads a trace file: every line, in order (empty lines skipped).
pub fn read(path: &Path) -> Result<Vec<TraceLine>, TraceError> {
    let shown = || path.display().to_string();
    let file = File::open(path).map_err(|source| TraceError::Read {
        path: shown(),
        source,
    })?;
    let mut lines = Vec::new();
    for (i, text) in BufReader::new(file).lines().enumerate() {
        let text = text.map_err(|source| TraceError::Read {
            path: shown(),
            source,
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let line = serde_json::from_str(&text).map_err(|e| TraceError::Line {
            path: shown(),
            line: i + 1,
            message: e.to_string(),
        })?;
        lines.push(line);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn observation(wall_unix: f64, detail: &str) -> Observation {
        let outcome = |reason| ProbeOutcome::fail(reason, Duration::from_micros(1_234), detail);
        Observation {
            wall_unix,
            primary: PrimaryObservation {
                api: outcome(ProbeReason::Refused),
                workloads: vec![(SignalId::Workload("app".into()), outcome(ProbeReason::Ok))],
                http: vec![],
                deployments: None,
                absent: vec![],
                watches_starting: false,
            },
            standby: StandbyObservation {
                api: ProbeOutcome::ok(Duration::from_millis(3)),
                workloads: ProbeOutcome::ok(Duration::from_millis(4)),
                deployments: Some(vec![DeploymentView {
                    name: "app".into(),
                    uid: Some("u1".into()),
                    desired: 0,
                    available: 0,
                    ready_pods: 0,
                    epoch: None,
                }]),
                record: Ok(FailoverRecord {
                    phase: Some(RecordPhase::Promoting),
                    epoch: 2,
                    resource_version: Some("17".into()),
                    ..FailoverRecord::default()
                }),
                state_checks: Vec::new(),
                guards: None,
            },
            observers: vec![],
        }
    }

    fn wait_for_lines(path: &Path, n: usize) -> Vec<TraceLine> {
        for _ in 0..500 {
            if let Ok(lines) = read(path)
                && lines.len() >= n
            {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("fewer than {n} lines in {}", path.display());
    }

    #[test]
    fn lines_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        let start = Instant::now();
        let sink = TraceSink::open(&path, 1 << 20, start).unwrap();
        let obs = observation(1_800_000_000.25, "connection refused");
        sink.record("env0", start + Duration::from_millis(1500), None, &obs);
        sink.record(
            "env0",
            start + Duration::from_millis(1600),
            Some("watch_broken"),
            &obs,
        );
        let lines = wait_for_lines(&path, 2);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].group, "env0");
        assert_eq!(lines[0].offset_seconds, 1.5);
        assert_eq!(lines[0].wall, "2027-01-15T08:00:00.250Z");
        assert_eq!(lines[0].dropped_before, 0);
        assert_eq!(lines[0].trigger, None);
        assert_eq!(lines[0].observation, obs);
        assert_eq!(lines[1].trigger.as_deref(), Some("watch_broken"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.matches("\"trigger\"").count(),
            1,
            "a tick on schedule has no trigger key: {text}"
        );
    }

    #[test]
    fn the_file_rotates_at_its_bound_keeping_one_older_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        let line = |i: u64| {
            let mut bytes = serde_json::to_vec(&TraceLine {
                group: "env0".into(),
                offset_seconds: i as f64,
                wall: rfc3339(1.0),
                dropped_before: 0,
                trigger: None,
                observation: observation(1.0, "x"),
            })
            .unwrap();
            bytes.push(b'\n');
            bytes
        };
        let bound = line(0).len() as u64 * 3 + 10;
        let mut file = RotatingFile::open(&path, bound).unwrap();
        for i in 0..8 {
            file.write_line(&line(i)).unwrap();
        }
        file.flush().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= bound);
        let offsets =
            |p: &Path| -> Vec<f64> { read(p).unwrap().iter().map(|l| l.offset_seconds).collect() };
        assert_eq!(offsets(&path), [6.0, 7.0]);
        assert_eq!(offsets(&dir.path().join("trace.jsonl.1")), [3.0, 4.0, 5.0]);
        // A restarted daemon appends, and rotates by the size already there.
        let mut file = RotatingFile::open(&path, bound).unwrap();
        file.write_line(&line(8)).unwrap();
        file.write_line(&line(9)).unwrap();
        file.flush().unwrap();
        assert_eq!(offsets(&path), [9.0]);
        assert_eq!(offsets(&dir.path().join("trace.jsonl.1")), [6.0, 7.0, 8.0]);
    }

    #[test]
    fn a_full_queue_drops_lines_without_blocking_and_says_so() {
        // No writer thread: the queue fills and further lines are dropped at once.
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let sink = TraceSink {
            tx,
            started: Instant::now(),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let obs = observation(1.0, "");
        for _ in 0..5 {
            sink.record("env0", Instant::now(), None, &obs);
        }
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 3);
        // The writer reports the count on the next line it writes.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let file = RotatingFile::open(&path, 1 << 20).unwrap();
        let counter = sink.dropped.clone();
        drop(sink);
        write_lines(rx, file, counter);
        let lines = read(&path).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].dropped_before, 3);
        assert_eq!(lines[1].dropped_before, 0);
    }

    #[test]
    fn an_unwritable_path_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/t.jsonl");
        let err = TraceSink::open(&path, 1 << 20, Instant::now()).unwrap_err();
        let own = format!("daemon.trace_file: cannot open {}", path.display());
        assert_eq!(err.to_string(), own, "its own context only");
        let shown = crate::error_chain::chain(&err).to_string();
        let cause = std::error::Error::source(&err)
            .expect("the cause")
            .to_string();
        assert_eq!(
            shown,
            format!("{own}: {cause}"),
            "the cause once, from the chain"
        );
    }

    #[test]
    fn a_bad_line_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, "\n{\"group\":1}\n").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("t.jsonl, line 2: not a trace line"), "{err}");
    }
}
