//! The run directory shared by every training binary (docs/DESIGN.md, "Runs").
//!
//! ```text
//! runs/<name>/            name given, or <kind>-<UTC timestamp>
//!   config.toml           the resolved config, as printed at start
//!   metrics.csv           one row per log call; columns fixed by the first row
//!   metrics.jsonl         one JSON object per log call, every key
//!   events.out.tfevents.* the same rows as TensorBoard scalars ([`TensorBoard`]; one file per
//!                         process that logged, when the run's config asks for them)
//!   ...                   checkpoints, written with [`write_atomic`]
//!   .lock                 held (`flock`) by the one process that writes the run
//! ```
//!
//! A [`RunDir`] holds the run's lock for as long as it lives: a second process (or a second
//! `RunDir` in one process) on the same run is refused, so two writers never interleave metrics
//! or overwrite each other's checkpoints. The lock dies with its process, `kill -9` included.
//!
//! Metric keys are namespaced (`losses/train_total`, `retrieval/pixels`, `time/epoch_seconds`),
//! as in CleanRL, so the two files read the same in a spreadsheet and in a plotting script.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tfrecord::protobuf::{event, session_log, summary, SessionLog};
use tfrecord::{EventIter, EventMeta, EventWriter, EventWriterConfig, RecordReaderConfig, Summary};

/// The lock file of a run directory.
pub const LOCK_FILE: &str = ".lock";

/// A run's directory, created empty by [`RunDir::create`], and its lock (held until the last
/// clone is dropped).
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
    _lock: Arc<File>,
}

/// Takes the run's exclusive lock, recording this process's id in the lock file for the message
/// a second process gets.
fn lock_run(path: &Path) -> io::Result<File> {
    let lock_path = path.join(LOCK_FILE);
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock_path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") };
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!(
                    "run directory {} is in use by {who} (lock {}): one run has one writer; \
                     wait for it to finish or stop it first",
                    path.display(),
                    lock_path.display()
                ),
            ));
        }
        // A file system without locks (some FUSE and SMB mounts): the run goes on, unguarded,
        // rather than not at all, and says so.
        Err(fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
            eprintln!(
                "warning: {} cannot be locked on this file system ({e}): nothing stops a second process \
                 from writing this run at the same time",
                lock_path.display()
            );
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(io::Error::new(e.kind(), format!("cannot lock {}: {e}", lock_path.display())))
        }
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

impl RunDir {
    /// Creates `runs_dir/<name>` (`name`, or `<kind>-<UTC timestamp>` when `None`) and its parents.
    /// A given name that exists already is an error (a run never overwrites another); a
    /// timestamped name that exists gets a `-2`, `-3`, ... suffix.
    pub fn create(runs_dir: &Path, name: Option<&str>, kind: &str) -> io::Result<Self> {
        fs::create_dir_all(runs_dir)?;
        if let Some(name) = name {
            if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("run name `{name}` must be a non-empty file name (no `/`)"),
                ));
            }
            let path = runs_dir.join(name);
            return match fs::create_dir(&path) {
                Ok(()) => Self::locked(path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(io::Error::new(
                    e.kind(),
                    format!("run directory {} exists already: choose another run name", path.display()),
                )),
                Err(e) => Err(e),
            };
        }
        let base = format!("{kind}-{}", utc_timestamp(SystemTime::now()));
        for attempt in 1.. {
            let path = runs_dir.join(if attempt == 1 { base.clone() } else { format!("{base}-{attempt}") });
            match fs::create_dir(&path) {
                Ok(()) => return Self::locked(path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the attempts never run out")
    }

    /// Uses an existing directory as the run directory (created if missing): resuming, and
    /// callers that manage names themselves (tests, sweeps). Takes the run's lock, then removes
    /// the temporary files that an interrupted [`write_atomic`] left behind.
    pub fn at(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        fs::create_dir_all(&path)?;
        let run = Self::locked(path)?;
        remove_temporaries(&run.path)?;
        Ok(run)
    }

    fn locked(path: PathBuf) -> io::Result<Self> {
        let lock = lock_run(&path)?;
        Ok(Self { path, _lock: Arc::new(lock) })
    }

    /// Removes the run directory if it holds nothing worth keeping (no checkpoint pointer and no
    /// metrics row): a run that failed before it trained leaves its name free. Returns whether it
    /// was removed.
    pub fn remove_if_unused(self, checkpoint_pointer: &str) -> io::Result<bool> {
        let has_rows = |file: &str| fs::metadata(self.file(file)).is_ok_and(|m| m.len() > 0);
        if self.file(checkpoint_pointer).exists() || has_rows("metrics.jsonl") || has_rows("metrics.csv") {
            return Ok(false);
        }
        let kept = ["config.toml", "metrics.csv", "metrics.jsonl", LOCK_FILE];
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let empty_dir = entry.file_type()?.is_dir() && fs::read_dir(entry.path())?.next().is_none();
            if !(kept.contains(&name.as_ref()) || is_temporary(&name) || empty_dir) {
                return Ok(false);
            }
        }
        // Still holding the lock: nobody else can be writing here.
        fs::remove_dir_all(&self.path)?;
        Ok(true)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path()/file`.
    pub fn file(&self, file: &str) -> PathBuf {
        self.path.join(file)
    }

    /// Writes the resolved config as `config.toml`.
    pub fn write_config(&self, toml_text: &str) -> io::Result<()> {
        write_atomic(&self.file("config.toml"), toml_text.as_bytes())
    }

    /// Opens the metrics sink (`metrics.csv` and `metrics.jsonl`, created empty).
    pub fn metrics(&self) -> io::Result<MetricsSink> {
        MetricsSink::create(&self.file("metrics.csv"), &self.file("metrics.jsonl"))
    }

    /// Reopens the metrics of an interrupted run, keeping the rows whose `key` is at most
    /// `up_to` (see [`MetricsSink::resume`]).
    pub fn resume_metrics(&self, key: &str, up_to: f64) -> io::Result<MetricsSink> {
        MetricsSink::resume(&self.file("metrics.csv"), &self.file("metrics.jsonl"), key, up_to)
    }

    /// TensorBoard event files for this run's metrics rows, in the run directory itself (so
    /// `tensorboard --logdir runs` names the run as its directory), stepped by `step_key`; as
    /// [`Self::metrics`] empties the CSV, the event files already there are removed.
    pub fn tensorboard(&self, step_key: &str) -> io::Result<TensorBoard> {
        TensorBoard::create(&self.path, step_key)
    }

    /// The event files of an interrupted run, trimmed to the rows whose `step_key` is at most
    /// `up_to`, as [`Self::resume_metrics`] trims the CSV (see [`TensorBoard::resume`]).
    pub fn resume_tensorboard(&self, step_key: &str, up_to: f64) -> io::Result<TensorBoard> {
        TensorBoard::resume(&self.path, step_key, up_to)
    }
}

/// `YYYYMMDD-HHMMSS` in UTC (no time-zone database needed, and it sorts).
fn utc_timestamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Days since 1970-01-01 -> (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Whether `name` is a temporary file of [`write_atomic`] (`.<file>.tmp-<pid>`).
fn is_temporary(name: &str) -> bool {
    name.starts_with('.')
        && name.rsplit_once(".tmp-").is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the temporary files of interrupted [`write_atomic`] calls in `dir` and, one level
/// down, in its subdirectories' subdirectories (`checkpoints/<name>/`). Only under the run's lock.
fn remove_temporaries(dir: &Path) -> io::Result<()> {
    fn sweep(dir: &Path, depth: usize) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if depth > 0 {
                    sweep(&entry.path(), depth - 1)?;
                }
            } else if is_temporary(&entry.file_name().to_string_lossy()) {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }
    sweep(dir, 2)
}

/// Writes `bytes` to `path` so that a reader (or a crash) sees the old file or the new one, never
/// a part: write a temporary file in the same directory, fsync it, rename it over `path`, then
/// fsync the directory so the rename itself is durable.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        // Directories cannot be opened for syncing everywhere; the rename is done either way.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes each logged row to `metrics.csv` and `metrics.jsonl`, flushing both per row, and to
/// TensorBoard event files when given a [`TensorBoard`] ([`Self::with_tensorboard`]).
///
/// The CSV's columns are the first row's keys, in its order. A later row fills those columns
/// (empty cells for keys it lacks); keys it has that the header lacks go to the JSON lines only,
/// which always hold every key. Integral values are written without a decimal point; NaN and
/// infinities are written as `NaN`/`inf` in the CSV and `null` in the JSON.
pub struct MetricsSink {
    csv: csv::Writer<File>,
    jsonl: BufWriter<File>,
    header: Option<Vec<String>>,
    tensorboard: Option<TensorBoard>,
}

impl MetricsSink {
    /// Creates (truncates) both files.
    pub fn create(csv: &Path, jsonl: &Path) -> io::Result<Self> {
        let open = |p: &Path| OpenOptions::new().create(true).write(true).truncate(true).open(p);
        Ok(Self {
            csv: csv::Writer::from_writer(open(csv)?),
            jsonl: BufWriter::new(open(jsonl)?),
            header: None,
            tensorboard: None,
        })
    }

    /// Reopens the files of an interrupted run for appending, first dropping the rows logged
    /// after its last checkpoint: only rows whose `key` is at most `up_to` are kept (rows
    /// without the key are kept).
    ///
    /// `metrics.jsonl` is the source of truth: it holds every key, so the CSV is rebuilt from the
    /// kept JSON rows (under its own header), and the two files agree again whatever the crash
    /// left. A row reaches the CSV first: one the JSON lacks is taken from the CSV. A last line cut off by a crash (no
    /// final newline: each row is written and flushed whole) is dropped; any other unreadable
    /// line is an error naming the file and the line. Both files are rewritten atomically.
    pub fn resume(csv: &Path, jsonl: &Path, key: &str, up_to: f64) -> io::Result<Self> {
        let read = |p: &Path| match fs::read_to_string(p) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e),
        };
        let json_text = read(jsonl)?;
        let mut rows: Vec<serde_json::Map<String, serde_json::Value>> = Vec::new();
        for (number, line) in complete_lines(&json_text) {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |why: String| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} line {number}: unreadable ({why})", jsonl.display()),
                )
            };
            match serde_json::from_str(line).map_err(|e| bad(e.to_string()))? {
                serde_json::Value::Object(row) => rows.push(row),
                other => return Err(bad(format!("expected a JSON object, found {other}"))),
            }
        }
        // The CSV's whole lines: its header, then rows. A row the JSON lacks (written to the CSV
        // just before a crash) is recovered from the CSV, its header's keys only.
        let csv_text = read(csv)?;
        let mut whole_csv = String::new();
        for (_, line) in complete_lines(&csv_text) {
            whole_csv.push_str(line);
            whole_csv.push('\n');
        }
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(whole_csv.as_bytes());
        let mut records = reader.records();
        let csv_header: Option<Vec<String>> = match records.next() {
            Some(record) => {
                let record = record
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", csv.display())))?;
                Some(record.iter().map(String::from).collect())
                    .filter(|h: &Vec<String>| h.iter().any(|k| !k.is_empty()))
            }
            None => None,
        };
        if let Some(header) = &csv_header {
            for (index, record) in records.enumerate() {
                let record = record
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", csv.display())))?;
                if index < rows.len() || record.len() != header.len() {
                    continue;
                }
                let mut row = serde_json::Map::new();
                for (k, cell) in header.iter().zip(record.iter()).filter(|(_, c)| !c.is_empty()) {
                    let value = cell.parse::<f64>().map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: `{cell}` in column `{k}` is not a number", csv.display()),
                        )
                    })?;
                    row.insert(k.clone(), json_number(value));
                }
                rows.push(row);
            }
        }
        rows.retain(|row| row.get(key).and_then(|v| v.as_f64()).is_none_or(|v| v <= up_to));
        // The header is the CSV's when it is whole; else the first row's keys.
        let header = csv_header.or_else(|| rows.first().map(|row| row.keys().cloned().collect()));
        let mut kept_csv = csv::Writer::from_writer(Vec::new());
        let mut kept_json = String::new();
        if let Some(header) = &header {
            kept_csv.write_record(header).map_err(io::Error::other)?;
            for row in &rows {
                let cells: Vec<String> = header
                    .iter()
                    .map(|k| match row.get(k) {
                        None => String::new(),
                        Some(serde_json::Value::Null) => "NaN".into(), // how non-finite values reach JSON
                        Some(v) => v.as_f64().map(format_number).unwrap_or_default(),
                    })
                    .collect();
                kept_csv.write_record(&cells).map_err(io::Error::other)?;
            }
        }
        let kept_csv = kept_csv.into_inner().map_err(|e| io::Error::other(e.to_string()))?;
        for row in rows {
            kept_json.push_str(&serde_json::Value::Object(row).to_string());
            kept_json.push('\n');
        }
        write_atomic(csv, &kept_csv)?;
        write_atomic(jsonl, kept_json.as_bytes())?;
        let open = |p: &Path| OpenOptions::new().append(true).open(p);
        Ok(Self {
            csv: csv::Writer::from_writer(open(csv)?),
            jsonl: BufWriter::new(open(jsonl)?),
            header,
            tensorboard: None,
        })
    }

    /// Also writes every row to `tensorboard`'s event files (after the CSV and JSON lines).
    pub fn with_tensorboard(self, tensorboard: TensorBoard) -> Self {
        Self { tensorboard: Some(tensorboard), ..self }
    }

    /// The CSV columns, once a row has been logged.
    pub fn header(&self) -> Option<&[String]> {
        self.header.as_deref()
    }

    /// Logs one row of `(key, value)` pairs.
    pub fn log(&mut self, row: &[(String, f64)]) -> io::Result<()> {
        if self.header.is_none() {
            let keys: Vec<String> = row.iter().map(|(k, _)| k.clone()).collect();
            self.csv.write_record(&keys).map_err(io::Error::other)?;
            self.header = Some(keys);
        }
        let header = self.header.as_deref().unwrap_or_default();
        let cells: Vec<String> = header
            .iter()
            .map(|k| row.iter().find(|(key, _)| key == k).map(|(_, v)| format_number(*v)).unwrap_or_default())
            .collect();
        self.csv.write_record(&cells).map_err(io::Error::other)?;
        self.csv.flush()?;

        let mut object = serde_json::Map::with_capacity(row.len());
        for (k, v) in row {
            object.insert(k.clone(), json_number(*v));
        }
        serde_json::to_writer(&mut self.jsonl, &serde_json::Value::Object(object)).map_err(io::Error::other)?;
        writeln!(self.jsonl)?;
        self.jsonl.flush()?;
        match &mut self.tensorboard {
            Some(tensorboard) => tensorboard.log(row),
            None => Ok(()),
        }
    }
}

/// How TensorBoard event files are named: TensorBoard reads every file whose name contains
/// `tfevents`, in the order of their names, which begin like TensorFlow's and carry the creation
/// time in microseconds (16 digits), so a resumed run's file comes after the earlier ones.
pub const TENSORBOARD_PREFIX: &str = "events.out.tfevents.";

/// Writes metrics rows as TensorBoard scalars, so that `tensorboard --logdir runs` shows every
/// run: each row becomes one event at the row's `step_key` value (`global_step`), holding one
/// scalar per other key of the row, tagged with the key (`losses/policy`: the CSV's column
/// names, plus any key only the JSON lines have). TensorBoard keeps scalars as 32-bit floats;
/// NaN and infinities are written as they are (TensorBoard's own writers do the same), and a
/// key a row lacks gives no point.
///
/// The events are encoded by the `tfrecord` crate (TensorFlow's `Event`/`Summary` messages,
/// compiled with prost, and the TFRecord framing with its masked CRC-32C), not here. It needs
/// only the Rust toolchain to build; `tboard` would need `protoc` installed, and `tensorboard-rs`
/// is inactive and on protobuf 2 (docs/DESIGN.md, "Runs").
pub struct TensorBoard {
    dir: PathBuf,
    step_key: String,
    /// This process's event file, opened at its first row (a run that logs nothing has none).
    writer: Option<EventWriter<BufWriter<File>>>,
    /// A resumed run's first step after its checkpoint: the new file says so (see [`Self::resume`]).
    restart_at: Option<i64>,
}

impl TensorBoard {
    /// Event files in `dir`, stepped by `step_key`, from nothing: the event files already in
    /// `dir` are removed (a run that starts over). Nothing is written before the first row.
    pub fn create(dir: &Path, step_key: &str) -> io::Result<Self> {
        for path in tensorboard_files(dir)? {
            fs::remove_file(path)?;
        }
        Ok(Self::new(dir, step_key))
    }

    fn new(dir: &Path, step_key: &str) -> Self {
        Self { dir: dir.to_path_buf(), step_key: step_key.to_string(), writer: None, restart_at: None }
    }

    /// Continues the event files in `dir` after an interruption, as [`MetricsSink::resume`]
    /// continues the CSV: each existing file is rewritten (atomically) without the scalars of
    /// steps after `up_to` and without a last record cut off by a crash, so the rows logged
    /// again after the checkpoint appear once. This process then writes a new file, which opens
    /// with a restart (`SessionLog` START) at the first step after `up_to`: a TensorBoard that
    /// was already showing the dropped points discards them when it reads it (the Python loader
    /// on that event, the Rust loader when a tag's step goes back), as for a TensorFlow job
    /// restarted from a checkpoint.
    pub fn resume(dir: &Path, step_key: &str, up_to: f64) -> io::Result<Self> {
        for path in tensorboard_files(dir)? {
            trim_event_file(&path, up_to)?;
        }
        Ok(Self { restart_at: Some(up_to.floor() as i64 + 1), ..Self::new(dir, step_key) })
    }

    /// Writes `row` as one event and flushes it.
    fn log(&mut self, row: &[(String, f64)]) -> io::Result<()> {
        let step = row.iter().find(|(k, _)| *k == self.step_key).map(|&(_, v)| v).filter(|v| v.is_finite());
        let step = step.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a metrics row without a finite `{}` (the TensorBoard step)", self.step_key),
            )
        })?;
        let value = row
            .iter()
            .filter(|(k, _)| *k != self.step_key)
            .map(|(k, v)| summary::Value {
                tag: k.clone(),
                value: Some(summary::value::Value::SimpleValue(*v as f32)),
                ..Default::default()
            })
            .collect();
        let event = EventMeta::with_step(step as i64).build_with_summary(Summary { value });
        let writer = match &mut self.writer {
            Some(writer) => writer,
            none => none.insert(open_event_file(&self.dir, self.restart_at)?),
        };
        let path = &self.dir;
        writer.write_event(event).map_err(tfrecord_error(path))?;
        writer.flush().map_err(tfrecord_error(path))
    }
}

/// A new event file in `dir` with TensorBoard's opening event (the format version), and a
/// restart at `restart_at` when given.
fn open_event_file(dir: &Path, restart_at: Option<i64>) -> io::Result<EventWriter<BufWriter<File>>> {
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    let path = dir.join(format!("{TENSORBOARD_PREFIX}{micros:016}.{}", std::process::id()));
    let mut writer =
        EventWriter::create(&path, EventWriterConfig { auto_flush: false }).map_err(tfrecord_error(&path))?;
    let mut opening = vec![EventMeta::with_step(0).build_empty()];
    opening[0].what = Some(event::What::FileVersion("brain.Event:2".into()));
    if let Some(step) = restart_at {
        let mut restart = EventMeta::with_step(step).build_empty();
        let status = session_log::SessionStatus::Start as i32;
        restart.what = Some(event::What::SessionLog(SessionLog { status, ..Default::default() }));
        opening.push(restart);
    }
    for event in opening {
        writer.write_event(event).map_err(tfrecord_error(&path))?;
    }
    writer.flush().map_err(tfrecord_error(&path))?;
    Ok(writer)
}

/// The event files in `dir` ([`TENSORBOARD_PREFIX`]), in TensorBoard's reading order.
pub fn tensorboard_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name().to_string_lossy().starts_with(TENSORBOARD_PREFIX) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// The scalar points of the event files in `dir` as `(step, tag, value)`, in the order written,
/// file after file: what TensorBoard reads, without its handling of restarts (a torn last
/// record ends a file, as for its readers).
pub fn tensorboard_scalars(dir: &Path) -> io::Result<Vec<(i64, String, f32)>> {
    Ok(scalars(&read_tensorboard(dir)?))
}

/// Every event of the event files in `dir`, file after file.
fn read_tensorboard(dir: &Path) -> io::Result<Vec<tfrecord::Event>> {
    let mut events = Vec::new();
    for path in tensorboard_files(dir)? {
        events.extend(readable_events(&path)?.0);
    }
    Ok(events)
}

/// The scalar points of `events`: `(step, tag, value)`.
fn scalars(events: &[tfrecord::Event]) -> Vec<(i64, String, f32)> {
    let mut points = Vec::new();
    for event in events {
        if let Some(event::What::Summary(summary)) = &event.what {
            for v in &summary.value {
                if let Some(summary::value::Value::SimpleValue(x)) = v.value {
                    points.push((event.step, v.tag.clone(), x));
                }
            }
        }
    }
    points
}

/// The events of one file up to the first record that cannot be read, and whether there was one.
fn readable_events(path: &Path) -> io::Result<(Vec<tfrecord::Event>, bool)> {
    let mut events = Vec::new();
    for event in EventIter::open(path, RecordReaderConfig { check_integrity: true }).map_err(tfrecord_error(path))? {
        match event {
            Ok(event) => events.push(event),
            // A crash mid-write leaves a torn record, and nothing is readable after damage:
            // TensorBoard stops reading the file there too.
            Err(_) => return Ok((events, true)),
        }
    }
    Ok((events, false))
}

/// Rewrites one event file without the scalars of steps after `up_to` and without unreadable
/// trailing bytes (left as it is when it has neither).
fn trim_event_file(path: &Path, up_to: f64) -> io::Result<()> {
    let (events, torn) = readable_events(path)?;
    let total = events.len();
    let kept: Vec<_> = events
        .into_iter()
        .filter(|e| !(matches!(e.what, Some(event::What::Summary(_))) && e.step as f64 > up_to))
        .collect();
    if !torn && kept.len() == total {
        return Ok(());
    }
    let mut bytes = Vec::new();
    let mut writer =
        EventWriter::from_writer(&mut bytes, EventWriterConfig { auto_flush: false }).map_err(tfrecord_error(path))?;
    for event in kept {
        writer.write_event(event).map_err(tfrecord_error(path))?;
    }
    write_atomic(path, &bytes)
}

/// `tfrecord`'s errors as I/O errors naming the file.
fn tfrecord_error(path: &Path) -> impl Fn(tfrecord::Error) -> io::Error + '_ {
    move |e| match e {
        tfrecord::Error::IoError(e) => io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        e => io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())),
    }
}

fn is_integral(v: f64) -> bool {
    v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15
}

fn format_number(v: f64) -> String {
    if is_integral(v) {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn json_number(v: f64) -> serde_json::Value {
    if is_integral(v) {
        serde_json::Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
    }
}

/// The lines of `text` that end in a newline, numbered from 1: a last line without one was cut
/// off mid-write.
fn complete_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole.split('\n').enumerate().map(|(i, line)| (i + 1, line.strip_suffix('\r').unwrap_or(line)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!("m3ixup-run-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(utc_timestamp(UNIX_EPOCH + std::time::Duration::from_secs(86_400 + 3_723)), "19700102-010203");
    }

    #[test]
    fn run_names_are_given_or_timestamped_and_never_reused() {
        let root = temp_dir("names");
        let a = RunDir::create(&root, Some("mine"), "pretrain").unwrap();
        assert_eq!(a.path(), root.join("mine"));
        let err = RunDir::create(&root, Some("mine"), "pretrain").unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        assert!(RunDir::create(&root, Some("a/b"), "pretrain").is_err());
        let t1 = RunDir::create(&root, None, "pretrain").unwrap();
        let t2 = RunDir::create(&root, None, "pretrain").unwrap();
        assert_ne!(t1.path(), t2.path());
        assert!(t1.path().file_name().unwrap().to_string_lossy().starts_with("pretrain-"));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn metrics_go_to_csv_and_jsonl_with_the_first_rows_columns() {
        let root = temp_dir("metrics");
        let run = RunDir::at(&root).unwrap();
        let mut sink = run.metrics().unwrap();
        sink.log(&[("pretrain/epoch".into(), 1.0), ("losses/train_total".into(), 0.5)]).unwrap();
        sink.log(&[("losses/train_total".into(), 0.25), ("pretrain/epoch".into(), 2.0), ("extra".into(), f64::NAN)])
            .unwrap();
        sink.log(&[("pretrain/epoch".into(), 3.0)]).unwrap();
        let csv = fs::read_to_string(run.file("metrics.csv")).unwrap();
        assert_eq!(csv, "pretrain/epoch,losses/train_total\n1,0.5\n2,0.25\n3,\n");
        let lines: Vec<serde_json::Value> = fs::read_to_string(run.file("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["pretrain/epoch"], 1);
        assert_eq!(lines[1]["losses/train_total"], 0.25);
        assert!(lines[1]["extra"].is_null());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn resumed_metrics_drop_rows_after_the_checkpoint_and_append() {
        let root = temp_dir("resume");
        let run = RunDir::at(&root).unwrap();
        let mut sink = run.metrics().unwrap();
        for step in [10.0, 20.0, 30.0] {
            sink.log(&[("global_step".into(), step), ("loss".into(), step / 10.0)]).unwrap();
        }
        drop(sink);
        let mut sink = run.resume_metrics("global_step", 20.0).unwrap();
        sink.log(&[("global_step".into(), 30.0), ("loss".into(), 9.0)]).unwrap();
        let csv = fs::read_to_string(run.file("metrics.csv")).unwrap();
        assert_eq!(csv, "global_step,loss\n10,1\n20,2\n30,9\n");
        let jsonl = fs::read_to_string(run.file("metrics.jsonl")).unwrap();
        assert_eq!(jsonl.lines().count(), 3);
        assert!(jsonl.lines().last().unwrap().contains("\"loss\":9"));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn tensorboard_events_hold_each_row_at_its_step() {
        let root = temp_dir("tensorboard");
        let run = RunDir::at(&root).unwrap();
        fs::write(root.join(format!("{TENSORBOARD_PREFIX}1.stale")), b"x").unwrap();
        let mut sink = run.metrics().unwrap().with_tensorboard(run.tensorboard("global_step").unwrap());
        assert!(tensorboard_files(&root).unwrap().is_empty(), "a new sink removes old files and waits for a row");
        sink.log(&[("global_step".into(), 64.0), ("losses/policy".into(), 0.5), ("charts/return".into(), f64::NAN)])
            .unwrap();
        sink.log(&[("global_step".into(), 128.0), ("losses/policy".into(), 0.1), ("late".into(), 3.0)]).unwrap();
        let err = sink.log(&[("losses/policy".into(), 1.0)]).unwrap_err();
        assert!(err.to_string().contains("without a finite `global_step`"), "{err}");

        assert_eq!(tensorboard_files(&root).unwrap().len(), 1);
        let events = read_tensorboard(&root).unwrap();
        assert_eq!(events[0].what, Some(event::What::FileVersion("brain.Event:2".into())));
        assert_eq!(events.len(), 3, "the version, then one event per row");
        let got = scalars(&events);
        let expected = [(64, "losses/policy", 0.5), (128, "losses/policy", 0.1f32), (128, "late", 3.0)];
        let finite: Vec<_> = got.iter().filter(|p| !p.2.is_nan()).map(|(s, t, v)| (*s, t.as_str(), *v)).collect();
        assert_eq!(finite, expected);
        let nan: Vec<_> = got.iter().filter(|p| p.2.is_nan()).map(|(s, t, _)| (*s, t.as_str())).collect();
        assert_eq!(nan, [(64, "charts/return")], "NaN is written as it is");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn resumed_tensorboard_files_drop_points_after_the_checkpoint_and_a_torn_record() {
        let root = temp_dir("tensorboard-resume");
        let run = RunDir::at(&root).unwrap();
        let mut sink = run.metrics().unwrap().with_tensorboard(run.tensorboard("global_step").unwrap());
        for step in [10.0, 20.0, 30.0] {
            sink.log(&[("global_step".into(), step), ("loss".into(), step / 10.0)]).unwrap();
        }
        drop(sink);
        // A crash in the middle of the next record's write.
        let first = tensorboard_files(&root).unwrap().remove(0);
        let mut file = OpenOptions::new().append(true).open(&first).unwrap();
        file.write_all(&[7, 0, 0, 0, 0, 0]).unwrap();
        drop(file);

        let sink = run.resume_metrics("global_step", 20.0).unwrap();
        let mut sink = sink.with_tensorboard(run.resume_tensorboard("global_step", 20.0).unwrap());
        let kept = scalars(&readable_events(&first).unwrap().0);
        assert_eq!(kept, [(10, "loss".into(), 1.0), (20, "loss".into(), 2.0)]);
        assert!(!readable_events(&first).unwrap().1, "the torn record is gone");
        sink.log(&[("global_step".into(), 30.0), ("loss".into(), 9.0)]).unwrap();

        let files = tensorboard_files(&root).unwrap();
        assert_eq!(files.len(), 2, "the resumed process writes a file of its own");
        assert_eq!(files[0], first, "after the earlier one in TensorBoard's order");
        let (events, _) = readable_events(&files[1]).unwrap();
        let restart = Some(event::What::SessionLog(SessionLog {
            status: session_log::SessionStatus::Start as i32,
            ..Default::default()
        }));
        assert_eq!((events[1].step, &events[1].what), (21, &restart), "a restart at the first step after 20");
        let all = tensorboard_scalars(&root).unwrap();
        assert_eq!(all, [(10, "loss".into(), 1.0), (20, "loss".into(), 2.0), (30, "loss".into(), 9.0)]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_run_directory_has_one_holder_at_a_time() {
        let root = temp_dir("lock");
        let first = RunDir::create(&root, Some("run"), "ppo").unwrap();
        let err = RunDir::at(first.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
        assert!(err.to_string().contains(&format!("in use by process {}", std::process::id())), "{err}");
        let clone = first.clone();
        drop(first);
        assert!(RunDir::at(clone.path()).is_err(), "a clone keeps the lock");
        drop(clone);
        RunDir::at(root.join("run")).expect("free once every holder is gone");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn reopening_a_run_removes_temporaries_of_interrupted_writes_only() {
        let root = temp_dir("temporaries");
        let nested = root.join("checkpoints").join("update-000001");
        fs::create_dir_all(&nested).unwrap();
        let stale = [root.join(".config.toml.tmp-12"), nested.join(".agent.mpk.tmp-345")];
        let kept = [root.join("metrics.csv"), root.join(".notes"), root.join("x.tmp-12"), nested.join("agent.mpk")];
        for path in stale.iter().chain(&kept) {
            fs::write(path, b"x").unwrap();
        }
        let run = RunDir::at(&root).unwrap();
        assert!(stale.iter().all(|p| !p.exists()));
        assert!(kept.iter().all(|p| p.exists()));
        drop(run);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn an_unused_run_directory_is_removed_and_a_used_one_kept() {
        let root = temp_dir("unused");
        let run = RunDir::create(&root, Some("failed"), "ppo").unwrap();
        run.write_config("seed = 1\n").unwrap();
        drop(run.metrics().unwrap());
        assert!(run.remove_if_unused("checkpoint.toml").unwrap());
        assert!(!root.join("failed").exists());
        let run = RunDir::create(&root, Some("logged"), "ppo").unwrap();
        run.metrics().unwrap().log(&[("global_step".into(), 64.0)]).unwrap();
        assert!(!run.remove_if_unused("checkpoint.toml").unwrap());
        assert!(root.join("logged").join("metrics.csv").exists());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn resumed_metrics_drop_a_cut_off_last_line_and_recover_a_row_only_the_csv_has() {
        let root = temp_dir("cut");
        let run = RunDir::at(&root).unwrap();
        let mut sink = run.metrics().unwrap();
        for step in [10.0, 20.0, 30.0] {
            sink.log(&[("global_step".into(), step), ("loss".into(), step / 4.0)]).unwrap();
        }
        drop(sink);
        // The JSON's last row cut off mid-write: the CSV has it whole.
        let jsonl = fs::read_to_string(run.file("metrics.jsonl")).unwrap();
        fs::write(run.file("metrics.jsonl"), &jsonl[..jsonl.len() - 5]).unwrap();
        drop(run.resume_metrics("global_step", 30.0).unwrap());
        assert_eq!(fs::read_to_string(run.file("metrics.csv")).unwrap(), "global_step,loss\n10,2.5\n20,5\n30,7.5\n");
        assert_eq!(fs::read_to_string(run.file("metrics.jsonl")).unwrap().lines().count(), 3);
        // The CSV's last row cut off: it is rebuilt from the JSON.
        let csv = fs::read_to_string(run.file("metrics.csv")).unwrap();
        fs::write(run.file("metrics.csv"), &csv[..csv.len() - 3]).unwrap();
        drop(run.resume_metrics("global_step", 30.0).unwrap());
        assert_eq!(fs::read_to_string(run.file("metrics.csv")).unwrap(), "global_step,loss\n10,2.5\n20,5\n30,7.5\n");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn atomic_writes_replace_the_whole_file_and_leave_no_temporary() {
        let root = temp_dir("atomic");
        let path = root.join("ckpt.bin");
        write_atomic(&path, b"first version, long").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ckpt.bin")]);
        fs::remove_dir_all(root).unwrap();
    }
}
