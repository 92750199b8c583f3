//! The run directory shared by every training binary (docs/DESIGN.md, "Runs").
//!
//! ```text
//! runs/<name>/            name given, or <kind>-<UTC timestamp>
//!   config.toml           the resolved config, as printed at start
//!   metrics.csv           one row per log call; columns fixed by the first row
//!   metrics.jsonl         one JSON object per log call, every key
//!   ...                   checkpoints, written with [`write_atomic`]
//! ```
//!
//! Metric keys are namespaced (`losses/train_total`, `retrieval/pixels`, `time/epoch_seconds`),
//! as in CleanRL, so the two files read the same in a spreadsheet and in a plotting script.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A run's directory, created empty by [`RunDir::create`].
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
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
                Ok(()) => Ok(Self { path }),
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
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the attempts never run out")
    }

    /// Uses an existing directory as the run directory (created if missing), for callers that
    /// manage names themselves (tests, sweeps).
    pub fn at(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        fs::create_dir_all(&path)?;
        Ok(Self { path })
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

/// Writes each logged row to `metrics.csv` and `metrics.jsonl`, flushing both per row.
///
/// The CSV's columns are the first row's keys, in its order. A later row fills those columns
/// (empty cells for keys it lacks); keys it has that the header lacks go to the JSON lines only,
/// which always hold every key. Integral values are written without a decimal point; NaN and
/// infinities are written as `NaN`/`inf` in the CSV and `null` in the JSON.
pub struct MetricsSink {
    csv: BufWriter<File>,
    jsonl: BufWriter<File>,
    header: Option<Vec<String>>,
}

impl MetricsSink {
    /// Creates (truncates) both files.
    pub fn create(csv: &Path, jsonl: &Path) -> io::Result<Self> {
        let open = |p: &Path| OpenOptions::new().create(true).write(true).truncate(true).open(p).map(BufWriter::new);
        Ok(Self { csv: open(csv)?, jsonl: open(jsonl)?, header: None })
    }

    /// Reopens the files of an interrupted run for appending, first dropping the rows logged
    /// after its last checkpoint: only rows whose `key` is at most `up_to` are kept (rows
    /// without the key are kept). Both files are rewritten atomically; the CSV keeps its header.
    pub fn resume(csv: &Path, jsonl: &Path, key: &str, up_to: f64) -> io::Result<Self> {
        let read = |p: &Path| match fs::read_to_string(p) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e),
        };
        let keep_value = |v: Option<f64>| v.is_none_or(|v| v <= up_to);

        let json_text = read(jsonl)?;
        let mut kept_json = String::new();
        for line in json_text.lines().filter(|l| !l.trim().is_empty()) {
            let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{}: unreadable line ({e})", jsonl.display()))
            })?;
            if keep_value(value.get(key).and_then(|v| v.as_f64())) {
                kept_json.push_str(line);
                kept_json.push('\n');
            }
        }
        let csv_text = read(csv)?;
        let mut lines = csv_text.lines();
        let header: Option<Vec<String>> = lines.next().map(|h| h.split(',').map(String::from).collect());
        let mut kept_csv = String::new();
        if let Some(header) = &header {
            kept_csv.push_str(&header.join(","));
            kept_csv.push('\n');
            let column = header.iter().position(|h| h == key);
            for line in lines {
                let cell = column.and_then(|c| line.split(',').nth(c)).and_then(|c| c.parse::<f64>().ok());
                if keep_value(cell) {
                    kept_csv.push_str(line);
                    kept_csv.push('\n');
                }
            }
        }
        write_atomic(csv, kept_csv.as_bytes())?;
        write_atomic(jsonl, kept_json.as_bytes())?;
        let open = |p: &Path| OpenOptions::new().append(true).open(p).map(BufWriter::new);
        Ok(Self { csv: open(csv)?, jsonl: open(jsonl)?, header })
    }

    /// The CSV columns, once a row has been logged.
    pub fn header(&self) -> Option<&[String]> {
        self.header.as_deref()
    }

    /// Logs one row of `(key, value)` pairs.
    pub fn log(&mut self, row: &[(String, f64)]) -> io::Result<()> {
        if self.header.is_none() {
            let keys: Vec<String> = row.iter().map(|(k, _)| k.clone()).collect();
            let line: Vec<String> = keys.iter().map(|k| csv_field(k)).collect();
            writeln!(self.csv, "{}", line.join(","))?;
            self.header = Some(keys);
        }
        let header = self.header.as_deref().unwrap_or_default();
        let cells: Vec<String> = header
            .iter()
            .map(|k| row.iter().find(|(key, _)| key == k).map(|(_, v)| format_number(*v)).unwrap_or_default())
            .collect();
        writeln!(self.csv, "{}", cells.join(","))?;
        self.csv.flush()?;

        let mut object = serde_json::Map::with_capacity(row.len());
        for (k, v) in row {
            object.insert(k.clone(), json_number(*v));
        }
        serde_json::to_writer(&mut self.jsonl, &serde_json::Value::Object(object)).map_err(io::Error::other)?;
        writeln!(self.jsonl)?;
        self.jsonl.flush()
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

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
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
