//! Progress of long work, readable on a terminal and in a log file alike.
//!
//! On a terminal (stderr) an indicatif bar; otherwise one plain line on stderr every `every` items
//! and at the end, so a run redirected to a file is never silent (`unreid train ... > log`).

use std::io::IsTerminal;
use std::time::Instant;

/// A progress report over `total` items of one stage.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    label: String,
    unit: &'static str,
    total: u64,
    done: u64,
    every: u64,
    next_line: u64,
    message: String,
    start: Instant,
}

impl Progress {
    /// `label` names the stage ("extract target train"), `unit` the items ("images", "iters").
    /// Plain-line mode prints about ten lines per stage (at least every item when `total` < 10).
    pub fn new(label: impl Into<String>, total: u64, unit: &'static str) -> Progress {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            let template = format!(
                "{{prefix}} {{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}"
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.clone());
            bar
        });
        let every = (total / 10).max(1);
        Progress {
            bar,
            label,
            unit,
            total,
            done: 0,
            every,
            next_line: every,
            message: String::new(),
            start: Instant::now(),
        }
    }

    /// Plain-line mode prints a line every `every` items instead of every tenth of the total.
    pub fn with_line_every(mut self, every: u64) -> Progress {
        self.every = every.max(1);
        self.next_line = self.every;
        self
    }

    /// A short status shown after the counts (loss terms, learning rate ...).
    pub fn set_message(&mut self, message: impl Into<String>) {
        self.message = message.into();
        if let Some(bar) = &self.bar {
            bar.set_message(self.message.clone());
        }
    }

    /// Items per second since the stage started.
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None => {
                if self.done >= self.next_line || self.done == self.total {
                    while self.next_line <= self.done {
                        self.next_line += self.every;
                    }
                    self.line();
                }
            }
        }
    }

    fn line(&self) {
        eprintln!(
            "{} {}/{} {} ({:.1} {}/s, {:.1}s){}{}",
            self.label,
            self.done,
            self.total,
            self.unit,
            self.rate(),
            self.unit,
            self.start.elapsed().as_secs_f64(),
            if self.message.is_empty() { "" } else { " " },
            self.message
        );
    }

    /// Ends the stage (clears the bar; plain mode has already printed the last line).
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
