//! The progress display of every long job (training, pretraining, evaluation): an indicatif bar
//! on a terminal; a plain line every few seconds on stderr when it is not one (a script, a log
//! file, a job scheduler), where indicatif would otherwise draw nothing at all.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// Seconds between two progress lines when stderr is not a terminal.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A progress display over `total` units (`unit`: "steps", "episodes", ...). `what` says what
/// runs (the bar's first column, e.g. "collect", or "" for none). Hidden unless `verbose`.
pub fn progress_bar(verbose: bool, total: u64, what: &str, unit: &str) -> ProgressBar {
    if !verbose {
        return ProgressBar::hidden();
    }
    if std::io::stderr().is_terminal() {
        progress_bar_on_terminal(total, what, unit)
    } else {
        progress_bar_as_lines(total, what, unit, Box::new(std::io::stderr()), LOG_INTERVAL)
    }
}

fn progress_bar_on_terminal(total: u64, what: &str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = format!(
        "{}{{elapsed_precise}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} eta {{eta_precise}} {{msg}}",
        lead(what)
    );
    bar.set_style(ProgressStyle::with_template(&template).expect("a valid template").progress_chars("=> "));
    bar
}

/// What runs, and the bar's prefix after it (pretraining's "epoch 3/10"), before the figures.
fn lead(what: &str) -> String {
    if what.is_empty() {
        String::new()
    } else {
        format!("{what}{{prefix}} ")
    }
}

/// The display for logs: one line per `interval` at most, with what is done, the rate and the
/// time left, written to `out`.
pub fn progress_bar_as_lines(
    total: u64,
    what: &str,
    unit: &str,
    out: Box<dyn Write + Send>,
    interval: Duration,
) -> ProgressBar {
    let template = format!(
        "{}{{elapsed}}: {{human_pos}}/{{human_len}} {unit} ({{percent}}%), {{per_sec:1}}, {{eta}} left {{msg}}",
        lead(what)
    );
    let lines = LineLog { out: Mutex::new((out, None)), interval };
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::term_like(Box::new(lines)));
    bar.set_style(ProgressStyle::with_template(&template).expect("a valid template"));
    bar
}

/// A "terminal" for indicatif that is a log: each drawn line is written as a line of its own
/// (no cursor moves, no clearing), and at most one per `interval`.
struct LineLog {
    /// The sink and when it last got a line.
    out: Mutex<(Box<dyn Write + Send>, Option<Instant>)>,
    interval: Duration,
}

impl std::fmt::Debug for LineLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineLog").field("interval", &self.interval).finish()
    }
}

impl TermLike for LineLog {
    fn width(&self) -> u16 {
        200
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, line: &str) -> std::io::Result<()> {
        let mut guard = self.out.lock().expect("the progress log's lock");
        let (out, last) = &mut *guard;
        let line = line.trim_end();
        if line.is_empty() || last.is_some_and(|t| t.elapsed() < self.interval) {
            return Ok(());
        }
        *last = Some(Instant::now());
        writeln!(out, "{line}")
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write_line(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        self.out.lock().expect("the progress log's lock").0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(sink: &Shared) -> Vec<String> {
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap().lines().map(String::from).collect()
    }

    #[test]
    fn off_a_terminal_progress_is_plain_lines_with_count_rate_and_time_left() {
        let sink = Shared::default();
        let bar = progress_bar_as_lines(200, "", "steps", Box::new(sink.clone()), Duration::ZERO);
        bar.set_position(50);
        std::thread::sleep(Duration::from_millis(60)); // past indicatif's own redraw limit
        bar.set_position(100);
        let out = lines(&sink);
        assert!(!out.is_empty(), "lines were written");
        let last = out.last().unwrap();
        assert!(
            last.contains("/200 steps (") && last.contains("%)") && last.contains("/s") && last.contains("left"),
            "{last}"
        );
        assert!(out.iter().all(|l| !l.contains('\u{1b}') && !l.contains('\r')), "no terminal control codes: {out:?}");
    }

    #[test]
    fn off_a_terminal_progress_lines_are_spaced_by_the_interval() {
        let sink = Shared::default();
        let bar = progress_bar_as_lines(1000, "", "episodes", Box::new(sink.clone()), Duration::from_secs(3600));
        for k in 0..20 {
            bar.set_position(k * 10);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(lines(&sink).len(), 1, "one line in the first hour: {:?}", lines(&sink));
    }
}
